//! The host being judged: its root directory (`--root` prefixes every host path), the policy,
//! the tool runner, and lazily loaded shared facts (live ruleset, passwd and group databases,
//! interfaces, sshd's effective ports). Checks read the host only through this type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::config::VerifyConfig;
use super::nft::Ruleset;
use super::runner::Runner;

/// `sshd -T` key/value pairs, or why they could not be read.
pub type SshdResult = Result<Vec<(String, String)>, String>;

pub struct Host<'a> {
    pub root: PathBuf,
    pub cfg: VerifyConfig,
    pub runner: &'a dyn Runner,
    /// `--manifest`, else the config's `secretsManifest`.
    pub manifest: Option<PathBuf>,
    /// True when `manifest` came from `--manifest` (a path on this machine, not under `--root`).
    pub manifest_outside_root: bool,
    /// A recorded `nft -j list ruleset` document to judge instead of the live one.
    pub ruleset_file: Option<PathBuf>,
    ruleset: OnceLock<Result<Ruleset, String>>,
    passwd: OnceLock<HashMap<String, (u32, u32)>>,
    groups: OnceLock<HashMap<String, u32>>,
    /// `sshd -T` results by `-C` spec, so several checks share one run.
    pub(crate) sshd_cache: std::sync::Mutex<HashMap<Option<String>, SshdResult>>,
}

impl<'a> Host<'a> {
    pub fn new(root: PathBuf, cfg: VerifyConfig, runner: &'a dyn Runner) -> Host<'a> {
        Host {
            root,
            manifest: cfg.secrets_manifest.clone(),
            manifest_outside_root: false,
            cfg,
            runner,
            ruleset_file: None,
            ruleset: OnceLock::new(),
            passwd: OnceLock::new(),
            groups: OnceLock::new(),
            sshd_cache: Default::default(),
        }
    }

    /// True when checks run against the live root filesystem.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// A host path under `--root`.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Where to read the secrets manifest from, if one is known.
    pub fn manifest_file(&self) -> Option<PathBuf> {
        let m = self.manifest.as_ref()?;
        Some(if self.manifest_outside_root {
            m.clone()
        } else {
            self.path(m)
        })
    }

    /// The parsed live ruleset (`nft -j list ruleset`), loaded once.
    pub fn ruleset(&self) -> Result<&Ruleset, String> {
        self.ruleset
            .get_or_init(|| {
                let text = match &self.ruleset_file {
                    Some(f) => std::fs::read_to_string(f)
                        .map_err(|e| format!("cannot read '{}': {e}", f.display()))?,
                    None => {
                        let out = self
                            .runner
                            .run("nft", &["-j", "list", "ruleset"])
                            .map_err(|e| e.to_string())?;
                        if !out.success() {
                            return Err(format!(
                                "`nft -j list ruleset` failed: {}",
                                out.stderr.trim()
                            ));
                        }
                        out.stdout
                    }
                };
                // An empty ruleset prints nothing at all on some nft versions.
                if text.trim().is_empty() {
                    return super::nft::parse(r#"{"nftables":[]}"#).map_err(|e| e.to_string());
                }
                let mut rs = super::nft::parse(&text).map_err(|e| e.to_string())?;
                if super::nft::bytecode::needs_bytecode(&rs) {
                    let netlink = match &self.ruleset_file {
                        Some(_) => None,
                        None => {
                            let out = self
                                .runner
                                .run("nft", &["--debug=netlink", "list", "ruleset"])
                                .map_err(|e| e.to_string())?;
                            out.success().then(|| out.stdout + &out.stderr)
                        }
                    };
                    super::nft::bytecode::apply(&mut rs, netlink.as_deref());
                }
                Ok(rs)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn passwd(&self) -> &HashMap<String, (u32, u32)> {
        self.passwd.get_or_init(|| {
            let text = std::fs::read_to_string(self.path("/etc/passwd")).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((
                        f.first()?.to_string(),
                        (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?),
                    ))
                })
                .collect()
        })
    }

    fn groups(&self) -> &HashMap<String, u32> {
        self.groups.get_or_init(|| {
            let text = std::fs::read_to_string(self.path("/etc/group")).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
                })
                .collect()
        })
    }

    /// uid of a user name (or a numeric uid).
    pub fn uid(&self, user: &str) -> Option<u32> {
        user.parse()
            .ok()
            .or_else(|| self.passwd().get(user).map(|u| u.0))
    }

    /// Primary gid of a user.
    pub fn primary_gid(&self, user: &str) -> Option<u32> {
        self.passwd().get(user).map(|u| u.1)
    }

    /// gid of a group name (or a numeric gid).
    pub fn gid(&self, group: &str) -> Option<u32> {
        group
            .parse()
            .ok()
            .or_else(|| self.groups().get(group).copied())
    }

    pub fn user_name(&self, uid: u32) -> String {
        self.passwd()
            .iter()
            .find(|(_, v)| v.0 == uid)
            .map_or(uid.to_string(), |(k, _)| k.clone())
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.groups()
            .iter()
            .find(|(_, v)| **v == gid)
            .map_or(gid.to_string(), |(k, _)| k.clone())
    }

    /// Network interfaces other than loopback, from `/sys/class/net` (under `--root`).
    pub fn interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("/sys/class/net"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.retain(|n| n != "lo");
        v.sort();
        v
    }

    /// True when systemd is the service manager here (PID 1).
    pub fn has_systemd(&self) -> bool {
        self.is_live() && Path::new("/run/systemd/system").is_dir()
    }
}
