//! Editing plaintext in $VISUAL/$EDITOR without it touching persistent disk: a private 0700
//! directory on a RAM filesystem (tmpfs/ramfs under $XDG_RUNTIME_DIR or /dev/shm; a disk-backed
//! temp dir only when the caller allows it), files created 0600 and `O_NOFOLLOW`, and on drop
//! every file overwritten and the directory removed — on success, error or Ctrl-C (this process
//! ignores SIGINT/SIGQUIT while the editor runs, so the interrupt reaches only the editor). What
//! a killed process (SIGKILL) left behind is wiped by the next run.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

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
    sweep_stale(&base);
    use rand::Rng as _;
    let n: u64 = rand::rngs::OsRng.r#gen();
    let path = base.join(format!("{PREFIX}{}-{n:016x}", std::process::id()));
    std::fs::create_dir(&path).with_context(|| format!("cannot create '{}'", path.display()))?;
    let dir = PrivateDir { path };
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Scratch directories are named `clawdlets-plain-<pid>-<random>`, so a later run can tell
/// which ones outlived their process.
const PREFIX: &str = "clawdlets-plain-";

/// Wipes scratch directories in `base` that belong to this user and whose process is gone (it
/// was killed before it could wipe them, e.g. by SIGKILL). A live process's directory, another
/// user's, and anything not a plain directory are left alone. (A process in another PID
/// namespace sharing this tmpfs would look gone; its edit would then fail to read back and
/// write nothing — the safe way to fail.)
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt as _;
        // Signal 0 only asks whether the process exists (EPERM: it does, as another user).
        let alive = !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if meta.is_dir() && meta.uid() == me && !alive {
            drop(PrivateDir { path: e.path() });
        }
    }
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

/// Runs $VISUAL/$EDITOR (else vi) on `file`; this process ignores SIGINT/SIGQUIT meanwhile.
pub fn run_editor(file: &Path) -> anyhow::Result<()> {
    let ed = editor();
    let mut cmd = std::process::Command::new("/bin/sh");
    // The editor string may carry flags ("code --wait"); the path is passed as "$1".
    cmd.arg("-c")
        .arg(format!("{ed} \"$1\""))
        .arg("clawdlets-edit")
        .arg(file);
    let status = run_in_foreground(&mut cmd);
    let status = status.with_context(|| format!("cannot run editor '{ed}'"))?;
    if !status.success() {
        bail!("editor '{ed}' exited with {status}; nothing written");
    }
    Ok(())
}

/// Creates `file` (0600, never through a symlink, never over an existing file) with `bytes`.
pub fn write_private_file(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .with_context(|| format!("cannot create '{}'", file.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write '{}'", file.display()))
}

/// Runs `cmd` to completion as the one that gets Ctrl-C: the child has the default SIGINT and
/// SIGQUIT, this process ignores them meanwhile, so it lives to wipe the plaintext after.
pub fn run_in_foreground(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::ExitStatus> {
    // SAFETY: signal() is async-signal-safe; the closure only resets two dispositions that the
    // child would otherwise inherit as ignored.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    with_interrupts_ignored(|| cmd.status())
}

/// Runs `f` with SIGINT and SIGQUIT ignored in this process (restored after), so a Ctrl-C meant
/// for a child or a prompt cannot kill us before the plaintext is wiped.
pub fn with_interrupts_ignored<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: changing this process's dispositions; restored right after `f` returns.
    let (old_int, old_quit) = unsafe {
        (
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        )
    };
    let out = f();
    // SAFETY: restores the dispositions saved above.
    unsafe {
        libc::signal(libc::SIGINT, old_int);
        libc::signal(libc::SIGQUIT, old_quit);
    }
    out
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
    fn stale_dirs_of_dead_processes_are_wiped_and_others_kept() {
        let base = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let stale = base.path().join(format!("{PREFIX}{dead}-00"));
        let live = base
            .path()
            .join(format!("{PREFIX}{}-01", std::process::id()));
        let foreign = base.path().join("clawdlets-plain-notapid");
        for d in [&stale, &live, &foreign] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("s.yaml"), b"plaintext").unwrap();
        }
        sweep_stale(base.path());
        assert!(!stale.exists(), "the dead process's plaintext is left");
        assert!(live.join("s.yaml").exists() && foreign.join("s.yaml").exists());
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
