//! Generations inside the secrets mount: `<mount>/<N>` directories, written as `<mount>/.tmp-<N>`
//! and renamed to `<N>` only when every file is complete, so a numeric directory is always whole.
//! Every file and directory is created relative to an open directory fd with
//! `O_NOFOLLOW|O_EXCL|O_CLOEXEC`; owner and mode are set with fchown+fchmod on the fd before the
//! first byte is written, so the umask never matters and no other user can ever open a secret.
//! A generation that is not committed is removed on drop (errors, panics). This module never
//! decides *what* to write and never touches anything outside the mount.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::error::{InstallError, errno};

/// Mode of the mount point and of every directory inside a generation (sops-nix: 0751).
pub const DIR_MODE: u32 = 0o751;

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Who owns what we create. `chown` is false when unprivileged (`--root` sandbox, user mode).
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    pub chown: bool,
    pub keys_gid: u32,
}

/// Opens a directory without following a final symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Opens an absolute directory path; the final component must not be a symlink.
pub fn open_dir(path: &Path) -> nix::Result<OwnedFd> {
    openat(nix::fcntl::AT_FDCWD, path, DIR_FLAGS, Mode::empty())
}

fn set_owner_mode(fd: BorrowedFd<'_>, ids: Option<(u32, u32)>, mode: u32) -> nix::Result<()> {
    if let Some((uid, gid)) = ids {
        fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    // After fchown: chown clears set-id bits, so the mode goes last.
    fchmod(fd, Mode::from_bits_truncate(mode))
}

/// Removes `name` (a file, symlink or directory tree) below `dir` without following symlinks.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let fd = open_dir_at(dir, name)?;
    let mut d = Dir::from_fd(fd)?;
    let mut children = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            children.push((n, entry.file_type()));
        }
    }
    let dfd = d.as_fd();
    for (n, t) in children {
        match t {
            Some(Type::Directory) => remove_tree_at(dfd, &n)?,
            _ => match unlinkat(dfd, n.as_str(), UnlinkatFlags::NoRemoveDir) {
                Err(Errno::EISDIR) => remove_tree_at(dfd, &n)?,
                other => other?,
            },
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Names in a directory (without `.`/`..`), with their types.
pub fn list_dir(fd: BorrowedFd<'_>) -> nix::Result<Vec<(String, Option<Type>)>> {
    let dup = open_dir_at(fd, ".")?;
    let mut d = Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            out.push((n, entry.file_type()));
        }
    }
    Ok(out)
}

/// The locked secrets mount directory.
pub struct MountDir {
    pub path: PathBuf,
    lock: Flock<OwnedFd>,
}

impl MountDir {
    /// Opens the mount point and takes an exclusive lock on it, so two installers (activation and
    /// a manual run) never interleave.
    pub fn open(path: &Path) -> Result<MountDir, InstallError> {
        let fd = open_dir(path)
            .map_err(|e| InstallError::io("cannot open secrets mount", path, errno(e)))?;
        let lock = Flock::lock(fd, FlockArg::LockExclusive)
            .map_err(|(_, e)| InstallError::io("cannot lock secrets mount", path, errno(e)))?;
        Ok(MountDir {
            path: path.to_path_buf(),
            lock,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.lock.as_fd()
    }

    /// Removes what interrupted or older runs left behind: `.tmp-*` generations, numeric
    /// generations newer than the active one (written but never switched to), and sops-nix's
    /// `age-keys.txt` (a plaintext copy of the host keys that sops-nix keeps in the mount).
    pub fn remove_leftovers(&self, current: Option<u64>) -> Result<Vec<String>, InstallError> {
        let mut removed = Vec::new();
        let entries = list_dir(self.fd())
            .map_err(|e| InstallError::io("cannot list", &self.path, errno(e)))?;
        for (name, _) in entries {
            let stale = name.starts_with(".tmp-")
                || name == "age-keys.txt"
                || name
                    .parse::<u64>()
                    .is_ok_and(|n| current.is_none_or(|c| n > c));
            if stale {
                remove_tree_at(self.fd(), &name).map_err(|e| {
                    InstallError::io("cannot remove leftover", self.path.join(&name), errno(e))
                })?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Opens generation `n` for reading, if it exists and is a real directory.
    pub fn open_generation(&self, n: u64) -> Option<OldGeneration> {
        open_dir_at(self.fd(), &n.to_string())
            .ok()
            .map(|fd| OldGeneration { fd })
    }

    /// Starts writing generation `n` in `.tmp-<n>`.
    pub fn create_generation(
        &self,
        n: u64,
        owners: Owners,
    ) -> Result<NewGeneration<'_>, InstallError> {
        let tmp = format!(".tmp-{n}");
        let path = self.path.join(&tmp);
        // A leftover with this name was removed by `remove_leftovers`; EEXIST here means a race.
        mkdirat(self.fd(), tmp.as_str(), Mode::from_bits_truncate(0o700))
            .map_err(|e| InstallError::io("cannot create generation", &path, errno(e)))?;
        let mut g = NewGeneration {
            mount: self,
            tmp_name: tmp,
            final_name: n.to_string(),
            fd: None,
            renamed: false,
            committed: false,
            owners,
        };
        let fd = open_dir_at(self.fd(), &g.tmp_name)
            .map_err(|e| InstallError::io("cannot open generation", &path, errno(e)))?;
        set_owner_mode(
            fd.as_fd(),
            owners.chown.then_some((0, owners.keys_gid)),
            DIR_MODE,
        )
        .map_err(|e| InstallError::io("cannot set owner of generation", &path, errno(e)))?;
        g.fd = Some(fd);
        Ok(g)
    }

    /// Deletes numeric generations `k <= current - keep` (keep 0: prune nothing).
    pub fn prune(&self, current: u64, keep: u64) -> Result<Vec<u64>, InstallError> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let mut pruned = Vec::new();
        let entries = list_dir(self.fd())
            .map_err(|e| InstallError::io("cannot list", &self.path, errno(e)))?;
        for (name, _) in entries {
            let Ok(k) = name.parse::<u64>() else { continue };
            if k != current && k.saturating_add(keep) <= current {
                remove_tree_at(self.fd(), &name).map_err(|e| {
                    InstallError::io("cannot prune generation", self.path.join(&name), errno(e))
                })?;
                pruned.push(k);
            }
        }
        pruned.sort_unstable();
        Ok(pruned)
    }
}

/// A generation being written. Removed on drop unless `commit` was called.
pub struct NewGeneration<'a> {
    mount: &'a MountDir,
    tmp_name: String,
    final_name: String,
    fd: Option<OwnedFd>,
    renamed: bool,
    committed: bool,
    owners: Owners,
}

impl NewGeneration<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("generation fd").as_fd()
    }

    /// Path of the generation directory as it will be once finished.
    pub fn final_path(&self) -> PathBuf {
        self.mount.path.join(&self.final_name)
    }

    fn display(&self, rel: &[String]) -> PathBuf {
        let mut p = self.mount.path.join(if self.renamed {
            &self.final_name
        } else {
            &self.tmp_name
        });
        for c in rel {
            p.push(c);
        }
        p
    }

    /// Creates `rel` (all but the last component are directories) with the given owner and mode
    /// and writes `bytes` into it. `what` names the secret in errors.
    pub fn write(
        &self,
        what: &str,
        rel: &[String],
        ids: Option<(u32, u32)>,
        mode: u32,
        bytes: &[u8],
    ) -> Result<(), InstallError> {
        let wrap = |e: std::io::Error, upto: usize| InstallError::Write {
            secret: what.to_string(),
            path: self.display(&rel[..upto]),
            source: e,
        };
        let (leaf, dirs) = rel.split_last().expect("validated: non-empty name");
        let mut held: Option<OwnedFd> = None;
        for (i, d) in dirs.iter().enumerate() {
            let parent = held.as_ref().map_or(self.fd(), |f| f.as_fd());
            let next = match mkdirat(parent, d.as_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    let fd = open_dir_at(parent, d).map_err(|e| wrap(errno(e), i + 1))?;
                    let dir_ids = self.owners.chown.then_some((0, self.owners.keys_gid));
                    set_owner_mode(fd.as_fd(), dir_ids, DIR_MODE)
                        .map_err(|e| wrap(errno(e), i + 1))?;
                    fd
                }
                // Made by an earlier secret of this generation (the tree is fresh and private).
                Err(Errno::EEXIST) => open_dir_at(parent, d).map_err(|e| wrap(errno(e), i + 1))?,
                Err(e) => return Err(wrap(errno(e), i + 1)),
            };
            held = Some(next);
        }
        let parent = held.as_ref().map_or(self.fd(), |f| f.as_fd());
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, leaf.as_str(), flags, Mode::empty())
            .map_err(|e| wrap(errno(e), rel.len()))?;
        let file_ids = if self.owners.chown { ids } else { None };
        set_owner_mode(fd.as_fd(), file_ids, mode).map_err(|e| wrap(errno(e), rel.len()))?;
        let mut f = File::from(fd);
        f.write_all(bytes).map_err(|e| wrap(e, rel.len()))?;
        Ok(())
    }

    /// Renames `.tmp-<N>` to `<N>`: from here on the generation is complete.
    pub fn finish(&mut self) -> Result<(), InstallError> {
        renameat(
            self.mount.fd(),
            self.tmp_name.as_str(),
            self.mount.fd(),
            self.final_name.as_str(),
        )
        .map_err(|e| InstallError::io("cannot finish generation", self.final_path(), errno(e)))?;
        self.renamed = true;
        Ok(())
    }

    /// Keeps the generation (it is now, or will stay, the active one).
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for NewGeneration<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let name = if self.renamed {
            &self.final_name
        } else {
            &self.tmp_name
        };
        if let Err(e) = remove_tree_at(self.mount.fd(), name) {
            tracing::warn!(path = %self.mount.path.join(name).display(), error = %e, "cannot remove unfinished generation");
        }
    }
}

/// A previous generation, read for change detection.
pub struct OldGeneration {
    fd: OwnedFd,
}

/// An old file's content and metadata.
pub struct OldFile {
    pub bytes: crate::secret::SecretBytes,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl OldGeneration {
    /// Reads `rel` without following symlinks; None if absent or not a regular file.
    pub fn read(&self, rel: &[String]) -> Option<OldFile> {
        let (leaf, dirs) = rel.split_last()?;
        let mut held: Option<OwnedFd> = None;
        for d in dirs {
            let parent = held.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            held = Some(open_dir_at(parent, d).ok()?);
        }
        let parent = held.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        let fd = openat(
            parent,
            leaf.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st: FileStat = fstat(fd.as_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        File::from(fd).read_to_end(&mut buf).ok()?;
        Some(OldFile {
            bytes: buf.into(),
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
        })
    }

    /// Every regular file of the generation as relative paths (for "removed" reporting).
    pub fn files(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        walk(self.fd.as_fd(), &mut Vec::new(), &mut out);
        out
    }
}

fn walk(dir: BorrowedFd<'_>, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Ok(entries) = list_dir(dir) else { return };
    for (name, t) in entries {
        let is_dir = match t {
            Some(Type::Directory) => true,
            Some(_) => false,
            None => fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR),
        };
        prefix.push(name.clone());
        if is_dir {
            if let Ok(fd) = open_dir_at(dir, &name) {
                walk(fd.as_fd(), prefix, out);
            }
        } else {
            out.push(prefix.clone());
        }
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn rel(s: &str) -> Vec<String> {
        s.split('/').map(str::to_string).collect()
    }

    #[test]
    fn writes_with_exact_modes_regardless_of_umask_and_finishes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        // A restrictive umask must not change any mode (0o077 keeps other tests' temp files working).
        let old = unsafe { libc::umask(0o077) };
        let m = MountDir::open(dir.path()).unwrap();
        let owners = Owners {
            chown: false,
            keys_gid: 0,
        };
        let mut g = m.create_generation(1, owners).unwrap();
        g.write("secret 'a/b/c'", &rel("a/b/c"), None, 0o440, b"value")
            .unwrap();
        g.write("secret 'a/d'", &rel("a/d"), None, 0o600, b"v2")
            .unwrap();
        assert!(
            !dir.path().join("1").exists(),
            "not visible under its number before finish"
        );
        g.finish().unwrap();
        g.commit();
        unsafe { libc::umask(old) };
        let meta = std::fs::metadata(dir.path().join("1/a/b/c")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
        assert_eq!(
            std::fs::metadata(dir.path().join("1/a/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o751
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("1"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o751
        );
        assert_eq!(std::fs::read(dir.path().join("1/a/d")).unwrap(), b"v2");
        let old_gen = m.open_generation(1).unwrap();
        let f = old_gen.read(&rel("a/b/c")).unwrap();
        assert_eq!(f.bytes.expose(), b"value");
        assert_eq!(f.mode, 0o440);
        assert_eq!(f.uid, std::fs::metadata(dir.path()).unwrap().uid());
        let mut files = old_gen.files();
        files.sort();
        assert_eq!(files, vec![rel("a/b/c"), rel("a/d")]);
    }

    #[test]
    fn uncommitted_generation_is_removed_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let m = MountDir::open(dir.path()).unwrap();
        let owners = Owners {
            chown: false,
            keys_gid: 0,
        };
        {
            let g = m.create_generation(3, owners).unwrap();
            g.write("secret 'x'", &rel("x"), None, 0o400, b"x").unwrap();
        }
        assert!(!dir.path().join(".tmp-3").exists());
        std::fs::create_dir_all(dir.path().join(".tmp-9/a")).unwrap();
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::create_dir_all(dir.path().join("5")).unwrap();
        std::fs::write(dir.path().join("age-keys.txt"), "AGE-SECRET-KEY-1X").unwrap();
        let mut removed = m.remove_leftovers(Some(5)).unwrap();
        removed.sort();
        assert_eq!(removed, vec![".tmp-9", "7", "age-keys.txt"]);
        assert!(dir.path().join("5").exists());
    }

    #[test]
    fn planted_symlink_in_generation_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let m = MountDir::open(dir.path()).unwrap();
        let owners = Owners {
            chown: false,
            keys_gid: 0,
        };
        let g = m.create_generation(1, owners).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(".tmp-1/a")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join(".tmp-1/f")).unwrap();
        let e = g
            .write("secret 'a/x'", &rel("a/x"), None, 0o400, b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret 'a/x'"), "{e}");
        let e = g
            .write("secret 'f'", &rel("f"), None, 0o400, b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists"), "{e}");
        assert!(!outside.path().join("x").exists() && !outside.path().join("f").exists());
    }

    #[test]
    fn prune_keeps_the_newest_generations() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=5 {
            std::fs::create_dir(dir.path().join(n.to_string())).unwrap();
        }
        let m = MountDir::open(dir.path()).unwrap();
        assert_eq!(m.prune(5, 0).unwrap(), Vec::<u64>::new());
        assert_eq!(m.prune(5, 2).unwrap(), vec![1, 2, 3]);
        assert_eq!(m.prune(5, 1).unwrap(), vec![4]);
        assert!(dir.path().join("5").exists());
    }
}
