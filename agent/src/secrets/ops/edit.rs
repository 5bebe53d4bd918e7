//! `clawdlets secrets edit HOST NAME`: decrypts one secret into a private directory on a RAM
//! filesystem (tmpfs/ramfs under $XDG_RUNTIME_DIR or /dev/shm, mode 0700, file 0600), runs
//! $VISUAL/$EDITOR on it, re-encrypts a changed value, and removes the directory afterwards —
//! on success, error or Ctrl-C (the parent ignores SIGINT/SIGQUIT while the editor runs). A
//! persistent directory is refused unless `--allow-persistent-tmp`.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, HostAccess, input, repo};
use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// Edit one secret in $EDITOR (plaintext only on a private RAM filesystem).
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// The host.
    pub host: String,
    /// The secret name.
    pub name: String,
    /// Allow a temporary directory on persistent disk when no tmpfs is available (the plaintext
    /// may then survive on disk blocks).
    #[arg(long)]
    pub allow_persistent_tmp: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// A private directory removed (after overwriting its files) when dropped.
#[derive(Debug)]
pub struct PrivateDir {
    pub path: PathBuf,
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            for e in rd.flatten() {
                if let Ok(meta) = e.metadata()
                    && meta.is_file()
                    && let Ok(mut f) = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(e.path())
                {
                    use std::io::Write as _;
                    let _ = f.write_all(&vec![0u8; meta.len() as usize]);
                    let _ = f.sync_all();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn is_ram_fs(dir: &Path) -> bool {
    match nix::sys::statfs::statfs(dir) {
        Ok(s) => {
            // ramfs has no constant in nix; its magic is 0x858458f6.
            let t = s.filesystem_type();
            t == nix::sys::statfs::TMPFS_MAGIC || t.0 == 0x858458f6
        }
        Err(_) => false,
    }
}

/// Creates a 0700 directory on a RAM filesystem ($XDG_RUNTIME_DIR, /dev/shm), or on the system
/// temp dir when `allow_persistent`.
pub fn private_dir(allow_persistent: bool) -> anyhow::Result<PrivateDir> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(d));
    }
    candidates.push(PathBuf::from("/dev/shm"));
    private_dir_in(&candidates, allow_persistent)
}

fn private_dir_in(candidates: &[PathBuf], allow_persistent: bool) -> anyhow::Result<PrivateDir> {
    let base = candidates
        .iter()
        .find(|d| d.is_dir() && is_ram_fs(d))
        .cloned();
    let base = match base {
        Some(b) => b,
        None if allow_persistent => std::env::temp_dir(),
        None => bail!(
            "no RAM filesystem for the plaintext ($XDG_RUNTIME_DIR and /dev/shm are missing or not tmpfs)\n\
             hint: --allow-persistent-tmp accepts a disk-backed temp dir (plaintext may survive on disk)"
        ),
    };
    use rand::Rng as _;
    let n: u64 = rand::rngs::OsRng.r#gen();
    let path = base.join(format!("clawdlets-edit-{n:016x}"));
    std::fs::create_dir(&path).with_context(|| format!("cannot create '{}'", path.display()))?;
    let dir = PrivateDir { path };
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn editor() -> String {
    for var in ["VISUAL", "EDITOR"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v;
        }
    }
    "vi".to_string()
}

/// Runs the editor on `file` with SIGINT/SIGQUIT ignored in this process (restored after).
fn run_editor(file: &Path) -> anyhow::Result<()> {
    let ed = editor();
    let mut cmd = std::process::Command::new("/bin/sh");
    // The editor string may carry flags ("code --wait"); the path is passed as "$1".
    cmd.arg("-c")
        .arg(format!("{ed} \"$1\""))
        .arg("clawdlets-edit")
        .arg(file);
    // SAFETY: signal() is async-signal-safe; the closure only resets two dispositions.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    // SAFETY: changing this process's dispositions; restored right after the child exits.
    let (old_int, old_quit) = unsafe {
        (
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        )
    };
    let status = cmd.status();
    // SAFETY: restores the dispositions saved above.
    unsafe {
        libc::signal(libc::SIGINT, old_int);
        libc::signal(libc::SIGQUIT, old_quit);
    }
    let status = status.with_context(|| format!("cannot run editor '{ed}'"))?;
    if !status.success() {
        bail!("editor '{ed}' exited with {status}; nothing written");
    }
    Ok(())
}

pub fn run(args: EditArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    let spec = super::declared(&ctx, &args.host, &args.name)?.value.clone();
    let access = HostAccess::open(&ctx, &args.common, &args.host)?;
    let guard = args.guard.guard();
    if let Some(code) = super::refuse_early(&guard, &args.host, true) {
        return Ok(code);
    }
    let path = ctx.repo.host_secret(&args.host, &args.name);
    let label = ctx.repo.rel(&path).to_string();
    if !path.exists() {
        bail!(
            "'{label}' does not exist\nhint: `clawdlets secrets set {} {}` creates it",
            args.host,
            args.name
        );
    }
    let old = super::decrypt_secret(&path, &args.name, &access.operator.identity, &label)?;

    let new = {
        let dir = private_dir(args.allow_persistent_tmp)?;
        let file = dir.path.join(&args.name);
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&file)
                .with_context(|| format!("cannot create '{}'", file.display()))?;
            f.write_all(old.expose())?;
        }
        run_editor(&file)?;
        let edited = SecretBytes::new(
            std::fs::read(&file)
                .with_context(|| format!("cannot read back '{}'", file.display()))?,
        );
        // Editors append a final newline; keep the original's convention.
        if old.expose().ends_with(b"\n") {
            edited
        } else {
            input::strip_one_newline(edited)
        }
        // `dir` drops here: file overwritten and removed, directory removed.
    };
    if new.is_empty() {
        bail!("the edited value is empty; nothing written");
    }
    if new.ct_eq(old.expose()) {
        eprintln!("{label}: unchanged");
        return Ok(ExitCode::Success);
    }
    // password-hash: a password typed over the hash is stored as its hash.
    let field = format!("hosts.{}.secrets.{}", args.host, args.name);
    let (new, how) = super::supplied_value(&spec, &field, new)?;
    let encrypted = super::encrypt_secret(&args.name, &new, &access.recipients(), &label)?;
    let mut plan = Plan::default();
    plan.write(
        path,
        encrypted.clone(),
        repo::FILE_MODE,
        true,
        super::init::with_how("edited value".into(), how),
    );
    super::plan_extra_copy(&mut plan, &ctx.repo, &args.host, &args.name, &encrypted);
    tracing::info!(event = "secret_edited", host = %args.host, secret = %args.name, operator = %access.operator.name, "secret edit planned");
    super::execute(&ctx, &plan, &guard, &args.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_filesystem_detection() {
        assert!(!is_ram_fs(Path::new("/proc")));
        if Path::new("/dev/shm").is_dir() {
            assert!(is_ram_fs(Path::new("/dev/shm")));
        }
    }

    #[test]
    fn persistent_dir_is_refused_unless_allowed() {
        let e = private_dir_in(&[PathBuf::from("/proc")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no RAM filesystem") && e.contains("--allow-persistent-tmp"),
            "{e}"
        );
        let d = private_dir_in(&[PathBuf::from("/proc")], true).unwrap();
        assert!(d.path.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn private_dir_is_0700_and_removed_on_drop() {
        let Ok(d) = private_dir(true) else { return };
        let p = d.path.clone();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(p.join("x"), b"secret").unwrap();
        drop(d);
        assert!(!p.exists());
    }
}
