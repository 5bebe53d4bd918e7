//! Switching generations and the symlinks around them: reading which generation `symlinkPath`
//! points to, replacing that link atomically (a new symlink renamed over the old one), and the
//! per-secret links for custom `path`s. Anything found where a link goes that is not a link of
//! ours (a regular file, a directory, a symlink elsewhere) is refused, never deleted.

use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, renameat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, symlinkat, unlinkat};

use super::error::{InstallError, errno};
use super::generation::open_dir;

/// The generation `link` points to: None when the link does not exist yet (first boot).
pub fn read_current(link: &Path, mount: &Path) -> Result<Option<u64>, InstallError> {
    let meta = match std::fs::symlink_metadata(link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::io("cannot inspect", link, e)),
    };
    if !meta.file_type().is_symlink() {
        return Err(InstallError::Planted {
            path: link.to_path_buf(),
            detail: format!(
                "it is a {}, not the symlink to the active generation; remove it",
                kind(&meta)
            ),
        });
    }
    let target =
        std::fs::read_link(link).map_err(|e| InstallError::io("cannot read link", link, e))?;
    let n = (target.parent() == Some(mount))
        .then(|| {
            target
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.parse::<u64>().ok())
        })
        .flatten();
    match n {
        Some(n) => Ok(Some(n)),
        None => Err(InstallError::Planted {
            path: link.to_path_buf(),
            detail: format!(
                "it points to '{}', which is not a generation in '{}'; remove it",
                target.display(),
                mount.display()
            ),
        }),
    }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// What to do with a custom link path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Missing,
    /// Already the right target and owner.
    Correct,
    /// A stale link of ours (other target inside symlinkPath, or other owner).
    Replace,
}

/// Inspects `path` before anything is written: refuses anything that is not a link of ours.
pub fn inspect_link(
    path: &Path,
    target: &Path,
    link_root: &Path,
    ids: Option<(u32, u32)>,
    what: &str,
) -> Result<LinkState, InstallError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LinkState::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(InstallError::Planted {
                path: path.to_path_buf(),
                detail: format!("{what}: a parent of the path is not a directory"),
            });
        }
        Err(e) => return Err(InstallError::io("cannot inspect", path, e)),
    };
    if !meta.file_type().is_symlink() {
        return Err(InstallError::Planted {
            path: path.to_path_buf(),
            detail: format!("{what}: a {} exists where its symlink goes", kind(&meta)),
        });
    }
    let current =
        std::fs::read_link(path).map_err(|e| InstallError::io("cannot read link", path, e))?;
    if current == target {
        let owner_ok = ids.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g);
        return Ok(if owner_ok {
            LinkState::Correct
        } else {
            LinkState::Replace
        });
    }
    if current.starts_with(link_root) {
        return Ok(LinkState::Replace);
    }
    Err(InstallError::Planted {
        path: path.to_path_buf(),
        detail: format!(
            "{what}: a symlink to '{}' exists where its symlink goes",
            current.display()
        ),
    })
}

/// Creates missing parent directories of `path` with mode 0755 (set explicitly, not via umask).
fn create_parents(path: &Path) -> Result<(), InstallError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut p = parent.to_path_buf();
    while std::fs::symlink_metadata(&p).is_err() {
        missing.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| InstallError::io("cannot chmod", &dir, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(InstallError::io("cannot create directory", &dir, e)),
        }
    }
    Ok(())
}

/// Atomically makes `path` a symlink to `target` (owned by `ids` when given): the new link is
/// created beside it under a temporary name, chowned, then renamed over whatever link was there.
pub fn replace_link(
    path: &Path,
    target: &Path,
    ids: Option<(u32, u32)>,
) -> Result<(), InstallError> {
    create_parents(path)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let base = path
        .file_name()
        .and_then(|b| b.to_str())
        .ok_or_else(|| InstallError::invalid(path.display().to_string(), "not a file name"))?;
    let pfd = open_dir(parent)
        .map_err(|e| InstallError::io("cannot open directory", parent, errno(e)))?;
    let tmp = format!(".{base}.clawdlets-tmp");
    match unlinkat(pfd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(InstallError::io(
                "cannot remove stale",
                parent.join(&tmp),
                errno(e),
            ));
        }
    }
    symlinkat(target, pfd.as_fd(), tmp.as_str())
        .map_err(|e| InstallError::io("cannot create symlink", parent.join(&tmp), errno(e)))?;
    let cleanup = |e: Errno, op: &'static str| {
        let _ = unlinkat(pfd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        InstallError::io(op, path.to_path_buf(), errno(e))
    };
    if let Some((u, g)) = ids {
        fchownat(
            pfd.as_fd(),
            tmp.as_str(),
            Some(Uid::from_raw(u)),
            Some(Gid::from_raw(g)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| cleanup(e, "cannot chown symlink"))?;
    }
    renameat(pfd.as_fd(), tmp.as_str(), pfd.as_fd(), base)
        .map_err(|e| cleanup(e, "cannot switch symlink"))?;
    Ok(())
}

/// The path the `symlinkPath` link gets for generation `n`.
pub fn generation_target(mount_for_links: &Path, n: u64) -> PathBuf {
    mount_for_links.join(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_generation_is_read_from_the_link_and_foreign_things_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().join("run/secrets.d");
        let link = d.path().join("run/secrets");
        std::fs::create_dir_all(&mount).unwrap();
        assert_eq!(read_current(&link, &mount).unwrap(), None);
        replace_link(&link, &mount.join("7"), None).unwrap();
        assert_eq!(read_current(&link, &mount).unwrap(), Some(7));
        replace_link(&link, &mount.join("8"), None).unwrap();
        assert_eq!(read_current(&link, &mount).unwrap(), Some(8));
        replace_link(&link, Path::new("/etc"), None).unwrap();
        assert!(
            read_current(&link, &mount)
                .unwrap_err()
                .to_string()
                .contains("points to '/etc'")
        );
        std::fs::remove_file(&link).unwrap();
        std::fs::create_dir(&link).unwrap();
        assert!(
            read_current(&link, &mount)
                .unwrap_err()
                .to_string()
                .contains("directory")
        );
    }

    #[test]
    fn custom_links_refuse_planted_files_and_replace_stale_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("run/secrets");
        let p = d.path().join("etc/app/token");
        let target = root.join("token");
        assert_eq!(
            inspect_link(&p, &target, &root, None, "secret 'token'").unwrap(),
            LinkState::Missing
        );
        replace_link(&p, &target, None).unwrap();
        assert_eq!(std::fs::read_link(&p).unwrap(), target);
        assert_eq!(
            inspect_link(&p, &target, &root, None, "s").unwrap(),
            LinkState::Correct
        );
        replace_link(&p, &root.join("old"), None).unwrap();
        assert_eq!(
            inspect_link(&p, &target, &root, None, "s").unwrap(),
            LinkState::Replace
        );
        replace_link(&p, Path::new("/etc/shadow"), None).unwrap();
        let e = inspect_link(&p, &target, &root, None, "secret 'token'")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/shadow") && e.contains("secret 'token'"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "planted").unwrap();
        let e = inspect_link(&p, &target, &root, None, "secret 'token'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
        let mode = std::fs::metadata(d.path().join("etc/app"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o755);
    }
}
