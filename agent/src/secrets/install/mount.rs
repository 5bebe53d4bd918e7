//! The secrets filesystem: creates the mount point (0751) and mounts ramfs (tmpfs with `noswap`
//! when `useTmpfs`) with `nodev,nosuid,noexec,mode=0751` unless a filesystem of the wanted type
//! is already mounted there; then `root:keys`. Unprivileged runs (`--root` sandbox, user mode)
//! only create the directory. Nothing here reads or writes secrets.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::error::InstallError;
use super::generation::DIR_MODE;

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What `prepare` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A new ramfs/tmpfs was mounted.
    Mounted,
    /// A filesystem of the wanted type was already mounted there.
    AlreadyMounted,
    /// Unprivileged: a plain directory is used.
    PlainDirectory,
}

/// Whether `path` is the root of a mount of the wanted type.
pub fn is_wanted_mount(path: &Path, use_tmpfs: bool) -> Result<bool, InstallError> {
    let fail = |e: std::io::Error| InstallError::Mount {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let st = nix::sys::statfs::statfs(path).map_err(|e| fail(super::error::errno(e)))?;
    let magic = st.filesystem_type().0 as i64;
    let wanted = if use_tmpfs { TMPFS_MAGIC } else { RAMFS_MAGIC };
    if magic != wanted {
        return Ok(false);
    }
    // A mount root has another device than its parent (or is `/`).
    let me = std::fs::metadata(path).map_err(fail)?;
    let parent = std::fs::metadata(path.join("..")).map_err(fail)?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}

/// Creates the mount point and mounts the secrets filesystem on it when `privileged`.
pub fn prepare(
    path: &Path,
    use_tmpfs: bool,
    privileged: bool,
    keys_gid: u32,
) -> Result<Prepared, InstallError> {
    let fail = |detail: String| InstallError::Mount {
        path: path.to_path_buf(),
        detail,
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| fail(format!("cannot create parent directory: {e}")))?;
    // Two first runs at once (activation and a manual run) must not both see "not mounted" and
    // stack two filesystems: the later would lock and fill a different directory than the
    // earlier. The parent's lock makes look-and-mount one step; it is released on return, when
    // the mount point's own lock (`MountDir`) takes over.
    let parent_fd = super::generation::open_dir(parent)
        .map_err(|e| fail(format!("cannot open parent directory: {e}")))?;
    let _parent_lock = nix::fcntl::Flock::lock(parent_fd, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| fail(format!("cannot lock parent directory: {e}")))?;
    // Something that does not take our lock (systemd-tmpfiles, an older installer) may create
    // the mount point between our look and our mkdir: its EEXIST is fine, and the look is
    // repeated on what it made.
    let mut meta = std::fs::symlink_metadata(path);
    if matches!(&meta, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("cannot create: {e}"))),
        }
        meta = std::fs::symlink_metadata(path);
    }
    match meta {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(InstallError::Planted {
                path: path.to_path_buf(),
                detail: "the secrets mount point is a symlink".into(),
            });
        }
        Ok(m) if !m.is_dir() => {
            return Err(InstallError::Planted {
                path: path.to_path_buf(),
                detail: "the secrets mount point is not a directory".into(),
            });
        }
        Ok(_) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let mut result = Prepared::PlainDirectory;
    if privileged {
        if is_wanted_mount(path, use_tmpfs)? {
            result = Prepared::AlreadyMounted;
        } else {
            let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
            let (fstype, opts) = if use_tmpfs {
                ("tmpfs", "mode=0751,noswap")
            } else {
                ("ramfs", "mode=0751")
            };
            let r = mount(Some("none"), path, Some(fstype), flags, Some(opts));
            let r = match r {
                // Kernels before 6.4 do not know `noswap`.
                Err(nix::errno::Errno::EINVAL) if use_tmpfs => {
                    mount(Some("none"), path, Some(fstype), flags, Some("mode=0751"))
                }
                other => other,
            };
            r.map_err(|e| fail(format!("cannot mount {fstype}: {e}")))?;
            tracing::info!(event = "secrets_fs_mounted", path = %path.display(), fstype, "mounted secrets filesystem");
            result = Prepared::Mounted;
        }
        std::os::unix::fs::chown(path, Some(0), Some(keys_gid))
            .map_err(|e| fail(format!("cannot chown to 0:{keys_gid}: {e}")))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| fail(format!("cannot chmod: {e}")))?;
    Ok(result)
}
