//! The operator repo layout, byte-compatible with existing clawdlets fleets:
//!
//! ```text
//! fleet/clawdlets.json                                  public fleet config
//! secrets/.sops.yaml                                    creation rules (committed)
//! secrets/hosts/<host>/<secret>.yaml                    one sops file per secret, one key = <secret>
//! secrets/keys/hosts/<host>.agekey.yaml                 host age key, encrypted to the operators
//! .clawdlets/                                           gitignored, 0700
//!   keys/operators/<op>.agekey (0600), <op>.age.pub     operator private key and recipient
//!   extra-files/<host>/var/lib/sops-nix/key.txt (0600)  host key for nixos-anywhere --extra-files
//!   extra-files/<host>/var/lib/clawdlets/secrets/hosts/<host>/<secret>.yaml (0400)
//! ```
//!
//! Only path arithmetic and name checks here; no I/O besides finding the repo root.

use std::path::{Path, PathBuf};

use crate::fleet::validate::{is_host_name, is_operator_name, is_secret_name};

/// Modes of the extra-files tree, as installed on the host by nixos-anywhere (which copies
/// modes verbatim, so `var` and `var/lib` must stay 0755).
pub const EXTRA_DIR_MODES: &[(&str, u32)] = &[
    ("", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/lib/sops-nix", 0o700),
    ("var/lib/clawdlets", 0o755),
    ("var/lib/clawdlets/secrets", 0o700),
    ("var/lib/clawdlets/secrets/hosts", 0o700),
];
pub const EXTRA_KEY_MODE: u32 = 0o600;
pub const EXTRA_SECRET_MODE: u32 = 0o400;
pub const HOST_SECRETS_DIR_MODE: u32 = 0o700;
/// Mode of every file the operator tools write (encrypted or not): never world-readable.
pub const FILE_MODE: u32 = 0o600;

/// Paths of one operator repo.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
}

impl Repo {
    pub fn new(root: impl Into<PathBuf>) -> Repo {
        Repo { root: root.into() }
    }

    /// `dir` itself or the nearest parent holding `fleet/clawdlets.json`.
    pub fn discover(dir: &Path) -> Option<Repo> {
        let dir = std::path::absolute(dir).ok()?;
        dir.ancestors()
            .find(|d| d.join("fleet/clawdlets.json").is_file())
            .map(Repo::new)
    }

    pub fn fleet_config(&self) -> PathBuf {
        self.root.join("fleet/clawdlets.json")
    }
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn sops_yaml(&self) -> PathBuf {
        self.root.join("secrets/.sops.yaml")
    }
    pub fn host_secrets_dir(&self, host: &str) -> PathBuf {
        debug_assert!(is_host_name(host));
        self.root.join("secrets/hosts").join(host)
    }
    pub fn host_secret(&self, host: &str, secret: &str) -> PathBuf {
        debug_assert!(is_secret_name(secret));
        self.host_secrets_dir(host).join(format!("{secret}.yaml"))
    }
    pub fn host_key_file(&self, host: &str) -> PathBuf {
        debug_assert!(is_host_name(host));
        self.root
            .join("secrets/keys/hosts")
            .join(format!("{host}.agekey.yaml"))
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join(".clawdlets")
    }
    pub fn operator_key(&self, op: &str) -> PathBuf {
        debug_assert!(is_operator_name(op));
        self.root
            .join(".clawdlets/keys/operators")
            .join(format!("{op}.agekey"))
    }
    pub fn operator_pub(&self, op: &str) -> PathBuf {
        self.root
            .join(".clawdlets/keys/operators")
            .join(format!("{op}.age.pub"))
    }
    pub fn operator_keys_dir(&self) -> PathBuf {
        self.root.join(".clawdlets/keys/operators")
    }
    pub fn extra_files(&self, host: &str) -> PathBuf {
        debug_assert!(is_host_name(host));
        self.root.join(".clawdlets/extra-files").join(host)
    }
    pub fn extra_key(&self, host: &str) -> PathBuf {
        self.extra_files(host).join("var/lib/sops-nix/key.txt")
    }
    pub fn extra_secrets_dir(&self, host: &str) -> PathBuf {
        self.extra_files(host)
            .join("var/lib/clawdlets/secrets/hosts")
            .join(host)
    }
    pub fn extra_secret(&self, host: &str, secret: &str) -> PathBuf {
        self.extra_secrets_dir(host).join(format!("{secret}.yaml"))
    }
    pub fn gitignore(&self) -> PathBuf {
        self.root.join(".gitignore")
    }

    /// `path` relative to the repo root, for display (falls back to the full path).
    pub fn rel<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(&self.root) {
            Ok(r) => r.to_string_lossy(),
            Err(_) => path.to_string_lossy(),
        }
    }

    /// The mode a directory must have when it is created under this repo.
    pub fn dir_mode_for(&self, dir: &Path) -> u32 {
        for host_root in [self.root.join(".clawdlets/extra-files")] {
            if let Ok(rest) = dir.strip_prefix(&host_root) {
                let mut comps = rest.components();
                comps.next(); // the host name
                let inner = comps.as_path().to_string_lossy().to_string();
                if let Some((_, m)) = EXTRA_DIR_MODES.iter().find(|(p, _)| *p == inner) {
                    return *m;
                }
                return HOST_SECRETS_DIR_MODE;
            }
        }
        if dir.starts_with(self.runtime_dir()) {
            return 0o700;
        }
        0o755
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let r = Repo::new("/r");
        assert_eq!(
            r.host_secret("fleet-1", "wg_key"),
            Path::new("/r/secrets/hosts/fleet-1/wg_key.yaml")
        );
        assert_eq!(
            r.host_key_file("fleet-1"),
            Path::new("/r/secrets/keys/hosts/fleet-1.agekey.yaml")
        );
        assert_eq!(
            r.extra_key("fleet-1"),
            Path::new("/r/.clawdlets/extra-files/fleet-1/var/lib/sops-nix/key.txt")
        );
        assert_eq!(
            r.extra_secret("fleet-1", "x"),
            Path::new(
                "/r/.clawdlets/extra-files/fleet-1/var/lib/clawdlets/secrets/hosts/fleet-1/x.yaml"
            )
        );
        assert_eq!(
            r.operator_key("alice"),
            Path::new("/r/.clawdlets/keys/operators/alice.agekey")
        );
    }

    #[test]
    fn dir_modes() {
        let r = Repo::new("/r");
        assert_eq!(
            r.dir_mode_for(Path::new("/r/.clawdlets/extra-files/h/var")),
            0o755
        );
        assert_eq!(
            r.dir_mode_for(Path::new("/r/.clawdlets/extra-files/h/var/lib/sops-nix")),
            0o700
        );
        assert_eq!(
            r.dir_mode_for(Path::new(
                "/r/.clawdlets/extra-files/h/var/lib/clawdlets/secrets/hosts/h"
            )),
            0o700
        );
        assert_eq!(r.dir_mode_for(Path::new("/r/.clawdlets/keys")), 0o700);
        assert_eq!(r.dir_mode_for(Path::new("/r/secrets/hosts/h")), 0o755);
    }
}
