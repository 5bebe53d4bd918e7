//! The plan every writing command builds before touching disk, and the guard that decides whether
//! it may run: `--dry-run` prints the plan and writes nothing; replacing or deleting a secret
//! needs the host name typed at a prompt or `--confirm HOST`; anything else needs `--yes` or a
//! "y" at a prompt. With stdin not a terminal and no flag, the command refuses.
//!
//! Applying writes each file through an O_EXCL|O_NOFOLLOW temporary created with its final mode
//! (0600/0400, never from the umask), fsync, then rename over the target, so a reader sees the
//! old or the new file, never a partial one. The plan holds contents in `SecretBytes`; its
//! rendering shows paths, modes and notes only, never a value.

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::repo::Repo;
use crate::secret::SecretBytes;

/// What happens to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Create,
    Replace,
    Delete,
    /// Only the mode changes (repairing a too-open file).
    Chmod,
}

/// One step of a plan.
#[derive(Debug)]
pub struct Action {
    pub path: PathBuf,
    pub change: Change,
    pub mode: u32,
    /// Replacing or deleting this path destroys a secret (host confirmation needed).
    pub destructive: bool,
    /// Human note: where the value comes from ("generated hex, 32 bytes"). Never a value.
    pub note: String,
    content: Option<SecretBytes>,
}

/// An ordered list of actions for one command.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Paths that already hold what the plan wants (reported, not touched).
    pub unchanged: Vec<PathBuf>,
    /// Lines printed after the plan (public keys, next steps). Never values.
    pub notes: Vec<String>,
    /// Generated login passwords (label, password) that are stored only as hashes: shown once
    /// on the terminal (stderr) after the plan is applied; never on stdout, in JSON or logs.
    pub shown_once: Vec<(String, SecretBytes)>,
}

/// The operator's answer to "may this plan run", from flags and (on a terminal) prompts.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub dry_run: bool,
    pub yes: bool,
    pub confirm: Option<String>,
    pub json: bool,
    /// stdin is a terminal: prompts are possible.
    pub interactive: bool,
}

/// What the guard decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Apply,
    DryRun,
    Nothing,
    Refused(String),
}

impl Plan {
    /// Writes `content` to `path`: create when missing, nothing when identical (and the mode
    /// is right), chmod when only the mode differs, replace otherwise.
    pub fn write(
        &mut self,
        path: PathBuf,
        content: SecretBytes,
        mode: u32,
        destructive: bool,
        note: impl Into<String>,
    ) {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                let same = std::fs::read(&path)
                    .map(|old| crate::secret::ct_eq(&old, content.expose()))
                    .unwrap_or(false);
                if same && meta.file_type().is_file() {
                    if meta.permissions().mode() & 0o7777 == mode {
                        self.unchanged.push(path);
                    } else {
                        self.actions.push(Action {
                            path,
                            change: Change::Chmod,
                            mode,
                            destructive: false,
                            note: note.into(),
                            content: None,
                        });
                    }
                } else {
                    self.actions.push(Action {
                        path,
                        change: Change::Replace,
                        mode,
                        destructive,
                        note: note.into(),
                        content: Some(content),
                    });
                }
            }
            Err(_) => self.actions.push(Action {
                path,
                change: Change::Create,
                mode,
                destructive: false,
                note: note.into(),
                content: Some(content),
            }),
        }
    }

    /// Writes a public (non-secret) file: created 0644, an existing file keeps its mode.
    pub fn write_public(&mut self, path: PathBuf, content: SecretBytes, note: impl Into<String>) {
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        self.write(path, content, mode, false, note);
    }

    /// Creates `path` only when it does not exist; an existing file is left alone (idempotent
    /// init), apart from a too-open mode, which is repaired.
    pub fn create_if_missing(
        &mut self,
        path: PathBuf,
        content: impl FnOnce() -> anyhow::Result<SecretBytes>,
        mode: u32,
        note: impl Into<String>,
    ) -> anyhow::Result<()> {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o7777 != mode && meta.file_type().is_file() {
                    self.actions.push(Action {
                        path,
                        change: Change::Chmod,
                        mode,
                        destructive: false,
                        note: "repair mode".into(),
                        content: None,
                    });
                } else {
                    self.unchanged.push(path);
                }
            }
            Err(_) => self.actions.push(Action {
                path,
                change: Change::Create,
                mode,
                destructive: false,
                note: note.into(),
                content: Some(content()?),
            }),
        }
        Ok(())
    }

    pub fn delete(&mut self, path: PathBuf, destructive: bool, note: impl Into<String>) {
        if std::fs::symlink_metadata(&path).is_ok() {
            self.actions.push(Action {
                path,
                change: Change::Delete,
                mode: 0,
                destructive,
                note: note.into(),
                content: None,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// True when some action destroys a secret (replace/delete of a secret file).
    pub fn is_destructive(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.destructive && matches!(a.change, Change::Replace | Change::Delete))
    }

    /// The plan as text, one line per action: `create  0600  secrets/hosts/h/x.yaml  (note)`.
    pub fn render(&self, repo: &Repo) -> String {
        let mut out = String::new();
        for a in &self.actions {
            let change = match a.change {
                Change::Create => "create",
                Change::Replace => "replace",
                Change::Delete => "delete",
                Change::Chmod => "chmod",
            };
            let mode = if a.change == Change::Delete {
                "    ".to_string()
            } else {
                format!("{:04o}", a.mode)
            };
            out.push_str(&format!("{change:<8} {mode}  {}", repo.rel(&a.path)));
            if !a.note.is_empty() {
                out.push_str(&format!("  ({})", a.note));
            }
            out.push('\n');
        }
        if self.actions.is_empty() {
            out.push_str("nothing to do\n");
        }
        if !self.unchanged.is_empty() {
            out.push_str(&format!("unchanged: {} file(s)\n", self.unchanged.len()));
        }
        out
    }

    pub fn to_json(&self, repo: &Repo, applied: bool) -> serde_json::Value {
        let actions: Vec<_> = self
            .actions
            .iter()
            .map(|a| {
                serde_json::json!({
                    "change": a.change,
                    "path": repo.rel(&a.path),
                    "mode": if a.change == Change::Delete { serde_json::Value::Null } else { format!("{:04o}", a.mode).into() },
                    "note": a.note,
                })
            })
            .collect();
        let unchanged: Vec<_> = self
            .unchanged
            .iter()
            .map(|p| repo.rel(p).to_string())
            .collect();
        serde_json::json!({ "applied": applied, "actions": actions, "unchanged": unchanged, "notes": self.notes })
    }

    /// Decides whether the plan may run, prompting on a terminal when flags do not decide.
    pub fn decide(&self, guard: &Guard, host: &str) -> Decision {
        if self.is_empty() {
            return Decision::Nothing;
        }
        if guard.dry_run {
            return Decision::DryRun;
        }
        if let Some(c) = &guard.confirm {
            if c != host {
                return Decision::Refused(format!(
                    "--confirm '{c}' does not match the host '{host}'"
                ));
            }
            return Decision::Apply;
        }
        let tty = guard.interactive;
        if self.is_destructive() {
            if !tty {
                return Decision::Refused(format!(
                    "this replaces or deletes existing secrets of '{host}'; confirm with --confirm {host} (stdin is not a terminal)"
                ));
            }
            match prompt_line(&format!(
                "This replaces or deletes existing secrets. Type the host name '{host}' to confirm: "
            )) {
                Some(answer) if answer == host => Decision::Apply,
                _ => Decision::Refused(format!("confirmation did not match '{host}'")),
            }
        } else if guard.yes {
            Decision::Apply
        } else if tty {
            match prompt_line("Apply this plan? [y/N] ") {
                Some(a) if a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes") => {
                    Decision::Apply
                }
                _ => Decision::Refused("not confirmed".into()),
            }
        } else {
            Decision::Refused("stdin is not a terminal: pass --yes to apply (or --dry-run to only print the plan)".into())
        }
    }

    /// Writes every action to disk, creating missing parent directories with the layout's modes.
    pub fn apply(&self, repo: &Repo) -> anyhow::Result<()> {
        for a in &self.actions {
            match a.change {
                Change::Create | Change::Replace => {
                    let parent = a.path.parent().expect("plan paths have a parent");
                    ensure_dir(repo, parent)?;
                    let content = a.content.as_ref().expect("create/replace carry content");
                    write_atomic(&a.path, content.expose(), a.mode)?;
                }
                Change::Delete => {
                    std::fs::remove_file(&a.path).map_err(|e| {
                        anyhow::anyhow!("cannot delete '{}': {e}", a.path.display())
                    })?;
                }
                Change::Chmod => {
                    std::fs::set_permissions(&a.path, std::fs::Permissions::from_mode(a.mode))
                        .map_err(|e| anyhow::anyhow!("cannot chmod '{}': {e}", a.path.display()))?;
                }
            }
            tracing::info!(event = "secrets_file_changed", change = ?a.change, path = %repo.rel(&a.path), "applied");
        }
        Ok(())
    }
}

/// Reads one line from the terminal (stdin). None on EOF or error.
fn prompt_line(prompt: &str) -> Option<String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

/// Creates `dir` and missing parents inside the repo with the layout's modes (not the umask).
pub fn ensure_dir(repo: &Repo, dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(repo, parent)?;
    }
    let mode = repo.dir_mode_for(dir);
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot create directory '{}': {e}",
                dir.display()
            ));
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow::anyhow!("cannot chmod directory '{}': {e}", dir.display()))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically with `mode`: O_EXCL|O_NOFOLLOW temporary in the same
/// directory, created with `mode` and fchmod'ed to it before any byte, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use rand::Rng as _;
    let dir = path.parent().expect("target has a parent");
    let name = path
        .file_name()
        .expect("target has a file name")
        .to_string_lossy();
    let suffix: u64 = rand::rngs::OsRng.r#gen();
    let tmp = dir.join(format!(".{name}.tmp-{suffix:016x}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create '{}': {e}", tmp.display()))?;
    let result = (|| -> std::io::Result<()> {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("cannot write '{}': {e}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_despite_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        write_atomic(&p, b"a", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"b", 0o400).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"b");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn plan_classifies_and_never_renders_values() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repo::new(d.path());
        let existing = d.path().join("a");
        std::fs::write(&existing, b"old").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut plan = Plan::default();
        plan.write(
            existing.clone(),
            SecretBytes::from("old"),
            0o600,
            true,
            "same",
        );
        assert!(plan.is_empty());
        plan.write(
            existing.clone(),
            SecretBytes::from("hunter2"),
            0o600,
            true,
            "new value",
        );
        plan.write(
            d.path().join("b"),
            SecretBytes::from("hunter3"),
            0o600,
            true,
            "",
        );
        assert!(plan.is_destructive());
        let text = plan.render(&repo);
        assert!(text.contains("replace  0600  a  (new value)"), "{text}");
        assert!(text.contains("create   0600  b"), "{text}");
        assert!(!text.contains("hunter"));
        // Not a terminal in tests: destructive plans are refused without --confirm.
        let d1 = plan.decide(
            &Guard {
                yes: true,
                ..Guard::default()
            },
            "h",
        );
        assert!(matches!(d1, Decision::Refused(_)));
        assert_eq!(
            plan.decide(
                &Guard {
                    confirm: Some("h".into()),
                    ..Guard::default()
                },
                "h"
            ),
            Decision::Apply
        );
        assert!(matches!(
            plan.decide(
                &Guard {
                    confirm: Some("x".into()),
                    ..Guard::default()
                },
                "h"
            ),
            Decision::Refused(_)
        ));
        assert_eq!(
            plan.decide(
                &Guard {
                    dry_run: true,
                    ..Guard::default()
                },
                "h"
            ),
            Decision::DryRun
        );
    }
}
