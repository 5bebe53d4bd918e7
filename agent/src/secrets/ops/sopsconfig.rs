//! `secrets/.sops.yaml` for `secrets check`: the age recipients the first matching creation rule
//! demands for a file, matched the way sops matches (`crate::sops::config`), with paths given
//! relative to the config's directory.

use std::path::{Path, PathBuf};

use crate::sops::SopsError;
use crate::sops::config::SopsConfig;

/// A loaded creation-rule set.
#[derive(Debug, Clone)]
pub struct Config {
    inner: SopsConfig,
    dir: PathBuf,
}

/// Loads `path` (a `.sops.yaml`).
pub fn load(path: &Path) -> Result<Config, SopsError> {
    let inner = SopsConfig::load(path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Config { inner, dir })
}

impl Config {
    /// Recipients (all key groups) of the first rule matching `rel_path`, or None.
    pub fn rule_for(&self, rel_path: &str) -> Option<Vec<String>> {
        self.inner
            .rule_for(&self.dir.join(rel_path))
            .map(|r| r.key_groups.all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_rules_match_like_sops() {
        let d = tempfile::tempdir().unwrap();
        let host = crate::sops::generate_age_keypair().recipient;
        let (a, b) = (
            crate::sops::generate_age_keypair().recipient,
            crate::sops::generate_age_keypair().recipient,
        );
        let text = super::super::keys::render_sops_yaml(
            &[("fleet-1".into(), host.clone())],
            &[a.clone(), b.clone()],
        );
        let p = d.path().join(".sops.yaml");
        std::fs::write(&p, text).unwrap();
        let c = load(&p).unwrap();
        assert_eq!(
            c.rule_for("hosts/fleet-1/x.yaml").unwrap(),
            [host, a.clone(), b.clone()]
        );
        assert_eq!(
            c.rule_for("keys/hosts/fleet-1.agekey.yaml").unwrap(),
            [a, b]
        );
        assert!(c.rule_for("hosts/other/x.yaml").is_none());
        assert!(c.rule_for("keys/hosts/fleet-1/x.yaml").is_none());
    }
}
