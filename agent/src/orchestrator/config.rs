//! Orchestrator configuration in three stages: the raw JSON file (serde, unknown fields rejected),
//! merged with defaults and command-line flags, then validated into `Settings`. Only `Settings`
//! reaches the daemon. This module does no I/O beyond reading the one config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::OrchestratorError;

/// Default unix socket path.
pub const DEFAULT_SOCKET: &str = "/run/clf/orchestrator.sock";
/// Default SQLite state file.
pub const DEFAULT_STATE: &str = "/var/lib/clf/orchestrator/state.sqlite";
/// Default group that owns the socket (bots are members).
pub const DEFAULT_GROUP: &str = "clf-bots";
/// Default TCP port of the cattle listener.
pub const DEFAULT_CATTLE_PORT: u16 = 18337;
/// Bootstrap token TTL bounds and default (seconds).
pub const TOKEN_TTL_MIN: u64 = 30;
pub const TOKEN_TTL_MAX: u64 = 3600;
pub const TOKEN_TTL_DEFAULT: u64 = 600;

/// The config file as written (camelCase JSON). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    pub admin_group: Option<String>,
    pub bootstrap_ttl_seconds: Option<u64>,
    pub env_keys: Option<Vec<String>>,
    pub privileged_env_keys: Option<Vec<String>>,
    pub secrets_dir: Option<PathBuf>,
    pub prune_interval_seconds: Option<u64>,
    pub reap_interval_seconds: Option<u64>,
    pub retention_seconds: Option<u64>,
    pub allow_wildcard_cattle_listen: Option<bool>,
    pub limits: Option<RawLimits>,
    pub queue: Option<RawQueue>,
    pub vm_auth: Option<RawVmAuth>,
    pub cattle: Option<RawCattle>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    pub max_result_bytes: Option<usize>,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<f64>,
    pub max_queued_per_requester: Option<u32>,
    pub max_concurrent_cattle_per_requester: Option<u32>,
    pub max_connections: Option<usize>,
    pub header_timeout_seconds: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawQueue {
    pub lease_seconds: Option<u64>,
    pub max_lease_seconds: Option<u64>,
    pub default_max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub worker_concurrency: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawVmAuth {
    pub window_seconds: Option<u64>,
    pub nonce_ttl_seconds: Option<u64>,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCattle {
    pub backend: Option<String>,
    pub max_instances: Option<u32>,
    pub default_ttl_seconds: Option<u64>,
    pub max_ttl_seconds: Option<u64>,
    pub base_url: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub local: Option<RawLocal>,
    pub hcloud: Option<RawHcloud>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLocal {
    /// Program (and arguments) that plays the VM; `{userData}` is replaced by the user_data file.
    pub command: Option<Vec<String>>,
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHcloud {
    pub api_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub image: Option<String>,
    pub server_type: Option<String>,
    pub location: Option<String>,
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub socket: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub group: Option<String>,
    pub cattle_listen: Option<String>,
    pub allow_wildcard: bool,
}

/// Which cloud plays the cattle VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A local process per VM (tests, demo, development).
    Local {
        command: Vec<String>,
        work_dir: PathBuf,
    },
    /// Hetzner Cloud.
    Hcloud {
        api_url: String,
        token_file: PathBuf,
        image: String,
        server_type: String,
        location: String,
    },
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_result_bytes: usize,
    pub rate_per_second: f64,
    pub rate_burst: f64,
    pub max_queued_per_requester: u32,
    pub max_concurrent_cattle_per_requester: u32,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub lease_ms: i64,
    pub max_lease_ms: i64,
    pub default_max_attempts: u32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub worker_concurrency: u32,
}

#[derive(Debug, Clone)]
pub struct VmAuthSettings {
    pub window_ms: i64,
    pub nonce_ttl_ms: i64,
    pub rate_per_second: f64,
    pub rate_burst: f64,
}

#[derive(Debug, Clone)]
pub struct CattleSettings {
    pub backend: Backend,
    pub max_instances: u32,
    pub default_ttl_s: u64,
    pub max_ttl_s: u64,
    pub base_url: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Validated settings: the only configuration the daemon sees.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    pub state: PathBuf,
    pub group: String,
    pub admin_group: Option<String>,
    pub cattle_listen: Option<SocketAddr>,
    pub bootstrap_ttl_s: u64,
    pub env_keys: Vec<String>,
    pub privileged_env_keys: Vec<String>,
    pub secrets_dir: PathBuf,
    pub prune_interval: Duration,
    pub reap_interval: Duration,
    pub retention_ms: i64,
    pub limits: Limits,
    pub queue: QueueSettings,
    pub vm_auth: VmAuthSettings,
    pub cattle: CattleSettings,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Config {
        field: field.to_string(),
        message: why.to_string(),
    }
}

/// Reads and parses the config file (stage 1).
pub fn read_raw(path: &Path) -> Result<RawConfig, OrchestratorError> {
    let text = std::fs::read_to_string(path).map_err(|e| OrchestratorError::Io {
        path: path.to_path_buf(),
        message: format!("cannot read config: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| invalid(&path.display().to_string(), e))
}

fn env_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.as_bytes()[0].is_ascii_digit()
}

/// Stages 2 and 3: defaults, flags, validation.
pub fn settle(raw: RawConfig, flags: &Flags) -> Result<Settings, OrchestratorError> {
    let socket = flags
        .socket
        .clone()
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let state = flags.state.clone().unwrap_or_else(|| DEFAULT_STATE.into());
    if !socket.is_absolute() {
        return Err(invalid("socket", "must be an absolute path"));
    }
    if !state.is_absolute() {
        return Err(invalid("state", "must be an absolute path"));
    }
    let group = flags.group.clone().unwrap_or_else(|| DEFAULT_GROUP.into());
    let allow_wildcard = flags.allow_wildcard || raw.allow_wildcard_cattle_listen.unwrap_or(false);
    let cattle_listen = match &flags.cattle_listen {
        None => None,
        Some(s) => Some(parse_listen(s, allow_wildcard)?),
    };
    let ttl = raw.bootstrap_ttl_seconds.unwrap_or(TOKEN_TTL_DEFAULT);
    if !(TOKEN_TTL_MIN..=TOKEN_TTL_MAX).contains(&ttl) {
        return Err(invalid(
            "bootstrapTtlSeconds",
            format!("{ttl} is outside {TOKEN_TTL_MIN}..{TOKEN_TTL_MAX}"),
        ));
    }
    let env_keys = raw.env_keys.unwrap_or_default();
    let privileged_env_keys = raw
        .privileged_env_keys
        .unwrap_or_else(|| vec!["GITHUB_TOKEN".into()]);
    for k in env_keys.iter().chain(privileged_env_keys.iter()) {
        if !env_key_ok(k) {
            return Err(invalid(
                "envKeys",
                format!("'{k}' is not an environment variable name"),
            ));
        }
    }
    let secrets_dir = raw.secrets_dir.unwrap_or_else(|| "/run/secrets".into());
    if !secrets_dir.is_absolute() {
        return Err(invalid("secretsDir", "must be an absolute path"));
    }
    let positive = |field: &str, v: u64| -> Result<u64, OrchestratorError> {
        if v == 0 {
            Err(invalid(field, "must be greater than 0"))
        } else {
            Ok(v)
        }
    };
    let l = raw.limits.unwrap_or_default();
    let limits = Limits {
        max_body_bytes: l.max_body_bytes.unwrap_or(256 * 1024),
        max_payload_bytes: l.max_payload_bytes.unwrap_or(64 * 1024),
        max_result_bytes: l.max_result_bytes.unwrap_or(64 * 1024),
        rate_per_second: l.rate_per_second.unwrap_or(50.0),
        rate_burst: l.rate_burst.unwrap_or(100.0),
        max_queued_per_requester: l.max_queued_per_requester.unwrap_or(1000),
        max_concurrent_cattle_per_requester: l.max_concurrent_cattle_per_requester.unwrap_or(2),
        max_connections: l.max_connections.unwrap_or(512),
        header_timeout: Duration::from_secs(positive(
            "limits.headerTimeoutSeconds",
            l.header_timeout_seconds.unwrap_or(5),
        )?),
        request_timeout: Duration::from_secs(positive(
            "limits.requestTimeoutSeconds",
            l.request_timeout_seconds.unwrap_or(30),
        )?),
    };
    if limits.max_body_bytes < 1024 || limits.max_body_bytes > 16 * 1024 * 1024 {
        return Err(invalid(
            "limits.maxBodyBytes",
            "must be within 1024..16777216",
        ));
    }
    if limits.max_payload_bytes > limits.max_body_bytes
        || limits.max_result_bytes > limits.max_body_bytes
    {
        return Err(invalid(
            "limits",
            "payload and result limits must not exceed maxBodyBytes",
        ));
    }
    if !(limits.rate_per_second > 0.0 && limits.rate_burst >= 1.0) {
        return Err(invalid(
            "limits.ratePerSecond",
            "rate must be > 0 and burst >= 1",
        ));
    }
    if limits.max_connections == 0 {
        return Err(invalid("limits.maxConnections", "must be greater than 0"));
    }
    let q = raw.queue.unwrap_or_default();
    let queue = QueueSettings {
        lease_ms: positive("queue.leaseSeconds", q.lease_seconds.unwrap_or(60))? as i64 * 1000,
        max_lease_ms: positive("queue.maxLeaseSeconds", q.max_lease_seconds.unwrap_or(3600))?
            as i64
            * 1000,
        default_max_attempts: q.default_max_attempts.unwrap_or(3).clamp(1, 100),
        backoff_base_ms: q.backoff_base_ms.unwrap_or(5_000) as i64,
        backoff_max_ms: q.backoff_max_ms.unwrap_or(300_000) as i64,
        worker_concurrency: q.worker_concurrency.unwrap_or(2).clamp(1, 64),
    };
    if queue.backoff_base_ms > queue.backoff_max_ms {
        return Err(invalid(
            "queue.backoffBaseMs",
            "must not exceed backoffMaxMs",
        ));
    }
    let v = raw.vm_auth.unwrap_or_default();
    let vm_auth = VmAuthSettings {
        window_ms: v.window_seconds.unwrap_or(60).clamp(1, 300) as i64 * 1000,
        nonce_ttl_ms: v.nonce_ttl_seconds.unwrap_or(300).clamp(60, 3600) as i64 * 1000,
        rate_per_second: v.rate_per_second.unwrap_or(5.0),
        rate_burst: v.rate_burst.unwrap_or(20.0),
    };
    if vm_auth.nonce_ttl_ms < 2 * vm_auth.window_ms {
        return Err(invalid(
            "vmAuth.nonceTtlSeconds",
            "must cover twice the window",
        ));
    }
    let c = raw.cattle.unwrap_or_default();
    let backend = match c.backend.as_deref().unwrap_or("local") {
        "local" => {
            let lc = c.local.unwrap_or_default();
            let command = lc.command.unwrap_or_default();
            let work_dir = lc.work_dir.unwrap_or_else(|| {
                state
                    .parent()
                    .map(|p| p.join("cattle"))
                    .unwrap_or_else(|| "/tmp".into())
            });
            Backend::Local { command, work_dir }
        }
        "hcloud" => {
            let hc = c.hcloud.unwrap_or_default();
            let image = hc
                .image
                .ok_or_else(|| invalid("cattle.hcloud.image", "is required"))?;
            Backend::Hcloud {
                api_url: hc
                    .api_url
                    .unwrap_or_else(|| "https://api.hetzner.cloud/v1".into()),
                token_file: hc
                    .token_file
                    .unwrap_or_else(|| secrets_dir.join("hcloud_token")),
                image,
                server_type: hc.server_type.unwrap_or_else(|| "cx22".into()),
                location: hc.location.unwrap_or_else(|| "nbg1".into()),
            }
        }
        other => {
            return Err(invalid(
                "cattle.backend",
                format!("'{other}' is not local or hcloud"),
            ));
        }
    };
    let cattle = CattleSettings {
        backend,
        max_instances: c.max_instances.unwrap_or(10).max(1),
        default_ttl_s: c.default_ttl_seconds.unwrap_or(7200).max(60),
        max_ttl_s: c.max_ttl_seconds.unwrap_or(86_400).max(60),
        base_url: c.base_url,
        labels: c.labels.unwrap_or_default(),
    };
    if let Some(u) = &cattle.base_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(invalid(
            "cattle.baseUrl",
            "must start with http:// or https://",
        ));
    }
    Ok(Settings {
        socket,
        state,
        group,
        admin_group: raw
            .admin_group
            .or_else(|| Some("clf-admins".into()))
            .filter(|g| !g.is_empty()),
        cattle_listen,
        bootstrap_ttl_s: ttl,
        env_keys,
        privileged_env_keys,
        secrets_dir,
        prune_interval: Duration::from_secs(raw.prune_interval_seconds.unwrap_or(3600).max(1)),
        reap_interval: Duration::from_secs(raw.reap_interval_seconds.unwrap_or(300).max(1)),
        retention_ms: raw.retention_seconds.unwrap_or(7 * 86_400).max(60) as i64 * 1000,
        limits,
        queue,
        vm_auth,
        cattle,
    })
}

/// Parses the cattle listen address; a bare IP gets the default port. Wildcards are refused
/// unless `allow_wildcard`: the cattle listener belongs on the tailnet address only.
pub fn parse_listen(s: &str, allow_wildcard: bool) -> Result<SocketAddr, OrchestratorError> {
    let addr: SocketAddr = match s.parse() {
        Ok(a) => a,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, DEFAULT_CATTLE_PORT),
            Err(_) => {
                return Err(invalid(
                    "cattleListen",
                    format!("'{s}' is not an IP address"),
                ));
            }
        },
    };
    if addr.ip().is_unspecified() && !allow_wildcard {
        return Err(invalid(
            "cattleListen",
            format!(
                "'{s}' listens on every interface; bind the tailnet address \
                 (hint: pass --allow-wildcard-cattle-listen to force)"
            ),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, OrchestratorError> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| invalid("test", e))?;
        settle(raw, &Flags::default())
    }

    #[test]
    fn defaults_are_sane() {
        let s = parse("{}").unwrap();
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.bootstrap_ttl_s, 600);
        assert_eq!(s.limits.max_body_bytes, 256 * 1024);
        assert!(matches!(s.cattle.backend, Backend::Local { .. }));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(parse(r#"{"adminGroupp": "x"}"#).is_err());
        assert!(parse(r#"{"limits": {"rate": 1}}"#).is_err());
    }

    #[test]
    fn ttl_is_bounded() {
        assert!(parse(r#"{"bootstrapTtlSeconds": 29}"#).is_err());
        assert!(parse(r#"{"bootstrapTtlSeconds": 3601}"#).is_err());
        assert_eq!(
            parse(r#"{"bootstrapTtlSeconds": 30}"#)
                .unwrap()
                .bootstrap_ttl_s,
            30
        );
    }

    #[test]
    fn wildcard_listen_is_refused_unless_forced() {
        assert!(parse_listen("0.0.0.0:18337", false).is_err());
        assert!(parse_listen("[::]:18337", false).is_err());
        assert!(parse_listen("0.0.0.0", true).is_ok());
        assert_eq!(parse_listen("100.64.0.1", false).unwrap().port(), 18337);
    }

    #[test]
    fn bad_env_keys_are_rejected() {
        assert!(parse(r#"{"envKeys": ["A B"]}"#).is_err());
        assert!(parse(r#"{"envKeys": ["1A"]}"#).is_err());
        assert!(parse(r#"{"envKeys": ["OPENAI_API_KEY"]}"#).is_ok());
    }

    #[test]
    fn hcloud_needs_an_image() {
        assert!(parse(r#"{"cattle": {"backend": "hcloud"}}"#).is_err());
        assert!(parse(r#"{"cattle": {"backend": "aws"}}"#).is_err());
        let s = parse(r#"{"cattle": {"backend": "hcloud", "hcloud": {"image": "debian-12"}}}"#);
        assert!(matches!(s.unwrap().cattle.backend, Backend::Hcloud { .. }));
    }
}
