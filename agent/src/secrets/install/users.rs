//! Owner and group resolution. Names go through NSS (`getpwnam`/`getgrnam` via `nix::unistd`);
//! with `--root DIR`, `DIR/etc/passwd` and `DIR/etc/group` are consulted first when they exist, so
//! a sandboxed host's own users resolve. A numeric string that is not a known name is taken as the
//! id itself (DynamicUser and users created later are common reasons for that). Nothing here
//! creates users or touches files.

use std::path::{Path, PathBuf};

/// Where names are looked up.
#[derive(Debug, Clone)]
pub struct Directory {
    /// `<root>/etc` when running with `--root`.
    sandbox_etc: Option<PathBuf>,
}

/// A resolved user: uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

impl Directory {
    pub fn new(root: Option<&Path>) -> Directory {
        Directory {
            sandbox_etc: root.map(|r| r.join("etc")),
        }
    }

    /// Resolves a user name (or a numeric uid string). `None` when unknown.
    pub fn user(&self, name: &str) -> Option<UserIds> {
        if let Some(found) = self.sandbox_lookup("passwd", name).map(|f| UserIds {
            uid: f.0,
            gid: f.1.unwrap_or(f.0),
        }) {
            return Some(found);
        }
        // Transient NSS failures (nscd/sssd restarting during activation) get one retry.
        for attempt in 0..2 {
            match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => {
                    return Some(UserIds {
                        uid: u.uid.as_raw(),
                        gid: u.gid.as_raw(),
                    });
                }
                Ok(None) => break,
                Err(_) if attempt == 0 => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        let uid: u32 = parse_numeric(name)?;
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .unwrap_or(uid);
        Some(UserIds { uid, gid })
    }

    /// Resolves a group name (or a numeric gid string). `None` when unknown.
    pub fn group(&self, name: &str) -> Option<u32> {
        if let Some((gid, _)) = self.sandbox_lookup("group", name) {
            return Some(gid);
        }
        for attempt in 0..2 {
            match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => return Some(g.gid.as_raw()),
                Ok(None) => break,
                Err(_) if attempt == 0 => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        parse_numeric(name)
    }

    /// The group that owns the mount point and generation directories: `keys`, else `nogroup`
    /// (sops-nix's choice), else 0.
    pub fn keys_gid(&self) -> u32 {
        self.group_by_name_only("keys")
            .or_else(|| self.group_by_name_only("nogroup"))
            .unwrap_or(0)
    }

    fn group_by_name_only(&self, name: &str) -> Option<u32> {
        if let Some((gid, _)) = self.sandbox_lookup("group", name) {
            return Some(gid);
        }
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }

    /// Looks `name` up in `<root>/etc/<db>` (passwd: returns uid and gid; group: gid).
    fn sandbox_lookup(&self, db: &str, name: &str) -> Option<(u32, Option<u32>)> {
        let text = std::fs::read_to_string(self.sandbox_etc.as_ref()?.join(db)).ok()?;
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            let _password = fields.next()?;
            let id = fields.next()?.parse().ok()?;
            let second = fields.next().and_then(|g| g.parse().ok());
            Some((id, if db == "passwd" { second } else { None }))
        })
    }
}

fn parse_numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_through_nss() {
        let d = Directory::new(None);
        assert_eq!(d.user("root"), Some(UserIds { uid: 0, gid: 0 }));
        assert_eq!(d.group("root"), Some(0));
    }

    #[test]
    fn numeric_strings_are_ids_and_unknown_names_are_none() {
        let d = Directory::new(None);
        assert_eq!(d.user("4242").map(|u| u.uid), Some(4242));
        assert_eq!(d.group("4343"), Some(4343));
        assert_eq!(d.user("no-such-user-clawdlets"), None);
        assert_eq!(d.group("no-such-group-clawdlets"), None);
        assert_eq!(d.user("-1"), None);
    }

    #[test]
    fn sandbox_etc_files_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "bot-maren:x:1500:1600::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "clf-bots:x:1600:bot-maren\nkeys:x:96:\n",
        )
        .unwrap();
        let d = Directory::new(Some(dir.path()));
        assert_eq!(
            d.user("bot-maren"),
            Some(UserIds {
                uid: 1500,
                gid: 1600
            })
        );
        assert_eq!(d.group("clf-bots"), Some(1600));
        assert_eq!(d.keys_gid(), 96);
        // Falls back to NSS for names the sandbox does not define.
        assert_eq!(d.user("root").map(|u| u.uid), Some(0));
    }
}
