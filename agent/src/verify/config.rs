//! The intended policy verify judges against: `/etc/clawdlets/verify.json` (installed by the
//! NixOS module) or `--config FILE`. JSON, camelCase, every key optional, unknown keys refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How SSH is meant to be reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshExposure {
    /// Open to the internet until the host joins the tailnet.
    Bootstrap,
    /// Only through the tailnet interface.
    Tailnet,
    /// Open to the internet on purpose.
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tailnet {
    Tailscale,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    SmtpOnly,
    ProxyAllowlist,
    None,
}

/// Where the orchestrator keeps its socket and state, and who runs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Orchestrator {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_orch_user")]
    pub user: String,
    #[serde(default = "default_bots_group")]
    pub group: String,
}

fn default_socket() -> PathBuf {
    "/run/clf/orchestrator.sock".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/clf/orchestrator".into()
}
fn default_orch_user() -> String {
    "clf-orchestrator".into()
}
fn default_bots_group() -> String {
    "clf-bots".into()
}

impl Default for Orchestrator {
    fn default() -> Self {
        Orchestrator {
            socket: default_socket(),
            state_dir: default_state_dir(),
            user: default_orch_user(),
            group: default_bots_group(),
        }
    }
}

/// The verify policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyConfig {
    pub ssh_exposure: Option<SshExposure>,
    pub tailnet: Option<Tailnet>,
    pub egress: Option<Egress>,
    #[serde(default)]
    pub bot_units: Vec<String>,
    pub proxy_unit: Option<String>,
    pub orchestrator: Option<Orchestrator>,
    /// Highest acceptable `systemd-analyze security` exposure (0.0-10.0); default 5.0.
    pub security_threshold: Option<f64>,
    pub secrets_manifest: Option<PathBuf>,
    /// Optional: the tailnet interface name (default `tailscale0`).
    pub tailnet_interface: Option<String>,
    /// Optional: bot users (names or uids) whose traffic egress.smtp evaluates.
    #[serde(default)]
    pub bot_users: Vec<String>,
    /// Optional: the admin user sshd's Match blocks are evaluated for (default `root`).
    pub admin_user: Option<String>,
    /// Optional: the proxy's listening ports, used when its main PID is unknown (default 3128, 9810).
    #[serde(default)]
    pub proxy_ports: Vec<u16>,
    /// Optional: time budget of secrets.store in seconds (default 20).
    pub store_scan_timeout_secs: Option<u64>,
}

/// The config spelling of an enum value (`tailnet`, `smtp-only`), or `unset`.
pub fn show<T: Serialize>(v: Option<T>) -> String {
    match v.map(|v| serde_json::to_value(v)) {
        Some(Ok(serde_json::Value::String(s))) => s,
        _ => "unset".into(),
    }
}

/// Errors loading the policy file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read verify config '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid JSON for this schema (unknown key, wrong type or enum value).
    #[error("invalid verify config '{path}': {source}")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A value is out of range.
    #[error("invalid verify config '{path}': {what}")]
    Range { path: PathBuf, what: String },
}

impl ConfigError {
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "config_read",
            ConfigError::Invalid { .. } => "config_invalid",
            ConfigError::Range { .. } => "config_range",
        }
    }
}

impl VerifyConfig {
    /// Loads `path`; when `optional` and the file does not exist, returns the defaults.
    pub fn load(path: &Path, optional: bool) -> Result<VerifyConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let cfg: VerifyConfig =
            serde_json::from_str(&text).map_err(|source| ConfigError::Invalid {
                path: path.into(),
                source,
            })?;
        if let Some(t) = cfg.security_threshold
            && !(0.0..=10.0).contains(&t)
        {
            return Err(ConfigError::Range {
                path: path.into(),
                what: format!("securityThreshold {t} is not within 0.0-10.0"),
            });
        }
        Ok(cfg)
    }

    pub fn tailnet_iface(&self) -> &str {
        self.tailnet_interface.as_deref().unwrap_or("tailscale0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_config_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        std::fs::write(
            &p,
            r#"{"sshExposure":"tailnet","tailnet":"tailscale","egress":"proxy-allowlist","botUnits":["bot-a.service"],
               "proxyUnit":"clf-egress-proxy.service","orchestrator":{"socket":"/run/clf/o.sock"},"securityThreshold":4.5,
               "secretsManifest":"/etc/m.json"}"#,
        )
        .unwrap();
        let c = VerifyConfig::load(&p, false).unwrap();
        assert_eq!(c.ssh_exposure, Some(SshExposure::Tailnet));
        assert_eq!(c.egress, Some(Egress::ProxyAllowlist));
        assert_eq!(c.orchestrator.unwrap().group, "clf-bots");
        std::fs::write(&p, r#"{"sshExposure":"tailnet","bogus":1}"#).unwrap();
        let e = VerifyConfig::load(&p, false).unwrap_err();
        assert_eq!(e.kind(), "config_invalid");
        assert!(e.to_string().contains("bogus"), "{e}");
        std::fs::write(&p, r#"{"securityThreshold":11}"#).unwrap();
        assert_eq!(
            VerifyConfig::load(&p, false).unwrap_err().kind(),
            "config_range"
        );
        assert!(VerifyConfig::load(&dir.path().join("missing"), true).is_ok());
        assert!(VerifyConfig::load(&dir.path().join("missing"), false).is_err());
    }
}
