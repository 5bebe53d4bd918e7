//! Caller identity from the kernel: SO_PEERCRED uid (captured at connect) → user name, and
//! whether that user is root or in the admin group. The request body never decides who the
//! caller is. Lookups are cached briefly per uid so the passwd/group files are not read on
//! every connection; a user that cannot be resolved is refused, not guessed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// An authenticated caller on the unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub uid: u32,
    pub name: String,
    /// Root or a member of the admin group: sees every job, may use privileged options.
    pub admin: bool,
}

/// Resolves uids to actors.
#[derive(Debug)]
pub struct Resolver {
    admin_group: Option<String>,
    cache: Mutex<HashMap<u32, (Instant, Option<Actor>)>>,
    ttl: Duration,
}

impl Resolver {
    pub fn new(admin_group: Option<String>) -> Self {
        Resolver {
            admin_group,
            cache: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(30),
        }
    }

    /// The actor for `uid`, or `None` when the uid has no user entry. A cache miss asks NSS
    /// (files, but also LDAP or systemd-userdb, which may be slow) on the blocking pool, so no
    /// other connection waits for it.
    pub async fn resolve(&self, uid: u32) -> Option<Actor> {
        if let Some(hit) = self.cached(uid) {
            return hit;
        }
        let admin_group = self.admin_group.clone();
        let actor = tokio::task::spawn_blocking(move || lookup(uid, admin_group.as_deref()))
            .await
            .ok()
            .flatten();
        self.remember(uid, &actor);
        actor
    }

    fn cached(&self, uid: u32) -> Option<Option<Actor>> {
        let cache = self.cache.lock().ok()?;
        let (at, a) = cache.get(&uid)?;
        (at.elapsed() < self.ttl).then(|| a.clone())
    }

    fn remember(&self, uid: u32, actor: &Option<Actor>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 4096 {
                cache.clear();
            }
            cache.insert(uid, (Instant::now(), actor.clone()));
        }
    }
}

fn lookup(uid: u32, admin_group: Option<&str>) -> Option<Actor> {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten()?;
    let admin = uid == 0 || admin_group.is_some_and(|g| in_group(&user, g));
    Some(Actor {
        uid,
        name: user.name,
        admin,
    })
}

fn in_group(user: &User, group: &str) -> bool {
    let Ok(Some(g)) = Group::from_name(group) else {
        return false;
    };
    user.gid == g.gid || g.mem.iter().any(|m| m == &user.name)
}

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<Gid> {
    Group::from_name(name).ok().flatten().map(|g| g.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn root_is_admin_and_unknown_uid_is_refused() {
        let r = Resolver::new(None);
        let root = r.resolve(0).await.expect("root exists");
        assert_eq!(root.name, "root");
        assert!(root.admin);
        assert!(r.resolve(4_000_000_000).await.is_none());
        // Now from the cache: the same answers.
        assert_eq!(r.resolve(0).await, Some(root));
        assert!(r.resolve(4_000_000_000).await.is_none());
    }
}
