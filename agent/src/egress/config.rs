//! The proxy's configuration in three stages: raw serde structs that refuse unknown keys, merged
//! with command-line flags and defaults, then validated `Settings` with parsed patterns, ranges
//! and loopback-only sockets. Only `Settings` reaches the proxy; `--check-config` stops here.
//!
//! This module reads the config file and bots' password files; it opens no sockets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Error;
use super::allowlist::{AllowList, parse_pattern};
use super::classify::{AddressPolicy, parse_range};
use crate::secret::SecretString;

/// Name under which callers that map to no bot are logged and counted.
pub const DEFAULT_BOT: &str = "default";

/// The file format, as rendered by the NixOS module (camelCase keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub listen: Option<Vec<String>>,
    pub metrics_listen: Option<String>,
    pub mode: Option<Mode>,
    pub ports: Option<Vec<u16>>,
    pub allow: Option<Vec<String>>,
    pub bots: Option<BTreeMap<String, RawBot>>,
    pub allow_ranges: Option<Vec<String>>,
    pub limits: Option<RawLimits>,
    pub require_identity: Option<bool>,
    pub sni_check: Option<bool>,
}

/// One bot: the system users it runs as and its own allowlist.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBot {
    #[serde(default)]
    pub users: Vec<UserRef>,
    #[serde(default)]
    pub allow: Vec<String>,
    /// Overrides the top-level `ports` for this bot.
    pub ports: Option<Vec<u16>>,
    /// Whether the top-level `allow` list also applies to this bot (default true).
    pub inherit_default: Option<bool>,
    /// File holding the password for `Proxy-Authorization: Basic <bot>:<password>`.
    pub password_file: Option<PathBuf>,
    /// Overrides `limits.maxConnsPerBot` for this bot.
    pub max_conns: Option<u32>,
}

/// A user given by name or numeric uid.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    Uid(u32),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLimits {
    pub connect_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_conns_per_bot: Option<u32>,
    pub max_header_bytes: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub dns_timeout_secs: Option<u64>,
    pub max_conns: Option<u32>,
}

/// Enforce denies what the allowlists do not cover; report allows it and logs `would-deny`.
/// Address checks (private, loopback, metadata...) and request syntax are enforced in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// Values given on the command line; they extend or replace what the file says.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Replaces `listen` when non-empty.
    pub listen: Vec<String>,
    /// Added to `allow`.
    pub allow: Vec<String>,
    /// Replaces `ports` when non-empty.
    pub ports: Vec<u16>,
    /// Added to `allowRanges`.
    pub allow_ranges: Vec<String>,
    pub metrics_listen: Option<String>,
    pub mode: Option<Mode>,
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// `None` when set to 0 (no idle timeout).
    pub idle_timeout: Option<Duration>,
    pub max_conns_per_bot: u32,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub dns_timeout: Duration,
    pub max_conns: u32,
}

/// What one caller may reach.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: AllowList,
    pub ports: Vec<u16>,
}

impl Policy {
    pub fn port_allowed(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

/// A validated bot.
#[derive(Debug, Clone)]
pub struct Bot {
    pub name: String,
    pub policy: Policy,
    pub password: Option<SecretString>,
    pub max_conns: u32,
}

/// Validated settings: the only thing the proxy runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    /// True when `listen` came from the file or flags rather than the built-in default.
    pub listen_explicit: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub mode: Mode,
    pub default_policy: Policy,
    pub default_max_conns: u32,
    pub bots: Vec<Bot>,
    pub uid_to_bot: HashMap<u32, usize>,
    pub name_to_bot: HashMap<String, usize>,
    pub address: AddressPolicy,
    pub limits: Limits,
    pub require_identity: bool,
    /// Require a CONNECT tunnel's TLS ClientHello SNI to name the CONNECT host.
    pub sni_check: bool,
    /// Non-fatal findings (users that do not exist yet...), printed by `--check-config`.
    pub warnings: Vec<String>,
}

impl Settings {
    /// The bot index for a peer uid: configured uids first, then user names (users created after
    /// the config was loaded are found by name).
    pub fn bot_for_uid(&self, uid: u32) -> Option<usize> {
        if let Some(i) = self.uid_to_bot.get(&uid) {
            return Some(*i);
        }
        if self.name_to_bot.is_empty() {
            return None;
        }
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()?;
        self.name_to_bot.get(&user.name).copied()
    }

    pub fn bot_index(&self, name: &str) -> Option<usize> {
        self.bots.iter().position(|b| b.name == name)
    }
}

pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:3128", "[::1]:3128"];
pub const DEFAULT_METRICS: &str = "127.0.0.1:9810";

/// Reads a config file: `.toml` as TOML, `.json` as JSON.
pub fn read_file(path: &Path) -> Result<RawConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parse_err = |message: String| Error::ParseConfig {
        path: path.to_path_buf(),
        message,
    };
    match ext.as_str() {
        "json" => serde_json::from_str(&text).map_err(|e| parse_err(e.to_string())),
        "toml" => {
            toml::from_str(&text).map_err(|e| parse_err(e.to_string().trim_end().to_string()))
        }
        _ => Err(parse_err(
            "unknown format; name the file *.toml or *.json".into(),
        )),
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn loopback_addr(key: &str, raw: &str) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = raw.parse().map_err(|_| {
        invalid(
            key,
            format!("'{raw}' is not an address:port (IPv6 in brackets)"),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            key,
            format!(
                "'{raw}' is not a loopback address; the proxy only listens on 127.0.0.0/8 or ::1"
            ),
        ));
    }
    Ok(addr)
}

fn parse_list(key: &str, patterns: &[String]) -> Result<AllowList, Error> {
    let mut list = AllowList::new();
    for (i, p) in patterns.iter().enumerate() {
        let pat = parse_pattern(p).map_err(|message| Error::Pattern {
            key: format!("{key}[{i}]"),
            pattern: p.clone(),
            message,
        })?;
        list.insert(&pat);
    }
    Ok(list)
}

fn parse_ports(key: &str, ports: &[u16]) -> Result<Vec<u16>, Error> {
    if ports.is_empty() {
        return Err(invalid(key, "empty port list would deny everything"));
    }
    if ports.contains(&0) {
        return Err(invalid(key, "port 0 is not a destination port"));
    }
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    Ok(p)
}

fn secs(key: &str, v: Option<u64>, default: u64, allow_zero: bool) -> Result<u64, Error> {
    let v = v.unwrap_or(default);
    if v == 0 && !allow_zero {
        return Err(invalid(key, "must be at least 1"));
    }
    if v > 86_400 {
        return Err(invalid(key, "must be at most 86400 (one day)"));
    }
    Ok(v)
}

/// Merges `raw` with `over` and the defaults and validates everything.
pub fn validate(raw: RawConfig, over: &Overrides) -> Result<Settings, Error> {
    let mut warnings = Vec::new();
    let (listen_raw, listen_explicit) = if !over.listen.is_empty() {
        (over.listen.clone(), true)
    } else if let Some(l) = raw.listen {
        (l, true)
    } else {
        (
            DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
            false,
        )
    };
    if listen_raw.is_empty() {
        return Err(invalid("listen", "at least one address is needed"));
    }
    let mut listen = Vec::new();
    for (i, l) in listen_raw.iter().enumerate() {
        let a = loopback_addr(&format!("listen[{i}]"), l)?;
        if a.port() == 0 && listen_raw.len() > 1 {
            return Err(invalid(
                "listen",
                "port 0 (pick a free port) only works with a single address",
            ));
        }
        if !listen.contains(&a) {
            listen.push(a);
        }
    }
    let metrics_raw = over.metrics_listen.clone().or(raw.metrics_listen);
    let metrics_listen = match metrics_raw.as_deref() {
        None => Some(loopback_addr("metricsListen", DEFAULT_METRICS)?),
        Some("" | "off") => None,
        Some(m) => Some(loopback_addr("metricsListen", m)?),
    };
    if let Some(m) = metrics_listen
        && m.port() != 0
        && listen.contains(&m)
    {
        return Err(invalid(
            "metricsListen",
            "must differ from every listen address",
        ));
    }
    let mode = over.mode.or(raw.mode).unwrap_or_default();

    let ports = if !over.ports.is_empty() {
        parse_ports("--port", &over.ports)?
    } else {
        parse_ports("ports", raw.ports.as_deref().unwrap_or(&[443, 80]))?
    };
    let mut allow_raw = raw.allow.unwrap_or_default();
    allow_raw.extend(over.allow.iter().cloned());
    let default_allow = parse_list("allow", &allow_raw)?;

    let mut allow_ranges = Vec::new();
    let ranges_raw: Vec<String> = raw
        .allow_ranges
        .unwrap_or_default()
        .into_iter()
        .chain(over.allow_ranges.iter().cloned())
        .collect();
    for (i, r) in ranges_raw.iter().enumerate() {
        let net = parse_range(r)
            .map_err(|m| invalid(format!("allowRanges[{i}]"), format!("'{r}': {m}")))?;
        allow_ranges.push(net);
    }

    let l = raw.limits.unwrap_or_default();
    let limits = Limits {
        connect_timeout: Duration::from_secs(secs(
            "limits.connectTimeoutSecs",
            l.connect_timeout_secs,
            10,
            false,
        )?),
        idle_timeout: match secs("limits.idleTimeoutSecs", l.idle_timeout_secs, 300, true)? {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        max_conns_per_bot: l.max_conns_per_bot.unwrap_or(256),
        max_header_bytes: l.max_header_bytes.unwrap_or(16 * 1024),
        header_timeout: Duration::from_secs(secs(
            "limits.headerTimeoutSecs",
            l.header_timeout_secs,
            10,
            false,
        )?),
        dns_timeout: Duration::from_secs(secs(
            "limits.dnsTimeoutSecs",
            l.dns_timeout_secs,
            5,
            false,
        )?),
        max_conns: l.max_conns.unwrap_or(4096),
    };
    if limits.max_conns_per_bot == 0 || limits.max_conns == 0 {
        return Err(invalid("limits", "connection limits must be at least 1"));
    }
    if !(1024..=1024 * 1024).contains(&limits.max_header_bytes) {
        return Err(invalid(
            "limits.maxHeaderBytes",
            "must be between 1024 and 1048576",
        ));
    }

    let mut bots = Vec::new();
    let mut uid_to_bot = HashMap::new();
    let mut name_to_bot = HashMap::new();
    for (name, rb) in raw.bots.unwrap_or_default() {
        let key = format!("bots.{name}");
        if name.is_empty()
            || name == DEFAULT_BOT
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid(
                key,
                "bot names are [A-Za-z0-9._-]+ and not 'default'",
            ));
        }
        let idx = bots.len();
        let mut allow = parse_list(&format!("{key}.allow"), &rb.allow)?;
        if rb.inherit_default.unwrap_or(true) {
            allow.extend(&default_allow);
        }
        let ports = match &rb.ports {
            Some(p) => parse_ports(&format!("{key}.ports"), p)?,
            None => ports.clone(),
        };
        for u in &rb.users {
            match u {
                UserRef::Uid(uid) => {
                    if let Some(prev) = uid_to_bot.insert(*uid, idx) {
                        return Err(invalid(
                            format!("{key}.users"),
                            format!(
                                "uid {uid} is already used by bot '{}'",
                                bots_name(&bots, prev)
                            ),
                        ));
                    }
                }
                UserRef::Name(n) => {
                    if name_to_bot.insert(n.clone(), idx).is_some() {
                        return Err(invalid(
                            format!("{key}.users"),
                            format!("user '{n}' is listed by two bots"),
                        ));
                    }
                    match nix::unistd::User::from_name(n) {
                        Ok(Some(user)) => {
                            if let Some(prev) = uid_to_bot.insert(user.uid.as_raw(), idx)
                                && prev != idx
                            {
                                return Err(invalid(
                                    format!("{key}.users"),
                                    format!(
                                        "user '{n}' is already used by bot '{}'",
                                        bots_name(&bots, prev)
                                    ),
                                ));
                            }
                        }
                        _ => warnings.push(format!(
                            "{key}.users: no user '{n}' yet; it is looked up again when it connects"
                        )),
                    }
                }
            }
        }
        let password = match &rb.password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
                    bot: name.clone(),
                    path: path.clone(),
                    source,
                })?;
                let pw = text.trim_end_matches(['\n', '\r']).to_string();
                if pw.is_empty() {
                    return Err(invalid(
                        format!("{key}.passwordFile"),
                        format!("'{}' is empty", path.display()),
                    ));
                }
                Some(SecretString::new(pw))
            }
        };
        if rb.users.is_empty() && password.is_none() {
            warnings.push(format!(
                "{key}: no users and no passwordFile; no caller can be this bot"
            ));
        }
        let max_conns = rb.max_conns.unwrap_or(limits.max_conns_per_bot);
        if max_conns == 0 {
            return Err(invalid(format!("{key}.maxConns"), "must be at least 1"));
        }
        bots.push(Bot {
            name,
            policy: Policy { allow, ports },
            password,
            max_conns,
        });
    }
    let mut own_sockets = listen.clone();
    own_sockets.extend(metrics_listen);
    Ok(Settings {
        listen,
        listen_explicit,
        metrics_listen,
        mode,
        default_policy: Policy {
            allow: default_allow,
            ports,
        },
        default_max_conns: limits.max_conns_per_bot,
        bots,
        uid_to_bot,
        name_to_bot,
        address: AddressPolicy {
            allow_ranges,
            own_sockets,
        },
        limits,
        require_identity: raw.require_identity.unwrap_or(false),
        sni_check: raw.sni_check.unwrap_or(true),
        warnings,
    })
}

fn bots_name(bots: &[Bot], i: usize) -> &str {
    bots.get(i).map(|b| b.name.as_str()).unwrap_or("?")
}

/// Loads and validates: the file (if any) plus overrides.
pub fn load(path: Option<&Path>, over: &Overrides) -> Result<Settings, Error> {
    let raw = match path {
        Some(p) => read_file(p)?,
        None => RawConfig::default(),
    };
    validate(raw, over)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Result<Settings, Error> {
        validate(serde_json::from_str(s).unwrap(), &Overrides::default())
    }

    #[test]
    fn defaults() {
        let s = json("{}").unwrap();
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9810".parse().unwrap()));
        assert_eq!(s.default_policy.ports, vec![80, 443]);
        assert_eq!(s.mode, Mode::Enforce);
        assert!(s.default_policy.allow.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<RawConfig>(r#"{"alow": []}"#).is_err());
        assert!(serde_json::from_str::<RawConfig>(r#"{"limits": {"idle": 1}}"#).is_err());
        assert!(serde_json::from_str::<RawConfig>(r#"{"bots": {"a": {"allowed": []}}}"#).is_err());
        assert!(toml::from_str::<RawConfig>("mode = \"open\"").is_err());
    }

    #[test]
    fn non_loopback_sockets_are_refused() {
        let e = json(r#"{"listen": ["0.0.0.0:3128"]}"#).unwrap_err();
        assert!(e.to_string().contains("listen[0]"), "{e}");
        assert!(json(r#"{"listen": ["192.168.1.1:3128"]}"#).is_err());
        assert!(json(r#"{"metricsListen": "[::]:9810"}"#).is_err());
        assert!(
            json(r#"{"listen": ["127.0.0.2:3128", "[::1]:1"], "metricsListen": "off"}"#).is_ok()
        );
    }

    #[test]
    fn bad_pattern_names_the_entry() {
        let e = json(r#"{"allow": ["ok.com", "*bad.com"]}"#).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("allow[1]") && m.contains("*bad.com"), "{m}");
        let e = json(r#"{"bots": {"maren": {"allow": ["a..b"]}}}"#).unwrap_err();
        assert!(e.to_string().contains("bots.maren.allow[0]"), "{e}");
    }

    #[test]
    fn bots_inherit_the_default_list_unless_told_not_to() {
        let s = json(
            r#"{"allow": ["shared.com"], "bots": {
                "a": {"users": [4001], "allow": ["a.com"]},
                "b": {"users": [4002], "allow": ["b.com"], "inheritDefault": false, "ports": [443]}}}"#,
        )
        .unwrap();
        let a = &s.bots[s.uid_to_bot[&4001]];
        let b = &s.bots[s.uid_to_bot[&4002]];
        assert!(a.policy.allow.matches_name("shared.com") && a.policy.allow.matches_name("a.com"));
        assert!(!a.policy.allow.matches_name("b.com"));
        assert!(!b.policy.allow.matches_name("shared.com"));
        assert_eq!(b.policy.ports, vec![443]);
        assert!(json(r#"{"bots": {"a": {"users": [1]}, "b": {"users": [1]}}}"#).is_err());
        assert!(json(r#"{"bots": {"default": {}}}"#).is_err());
    }

    #[test]
    fn toml_and_ranges() {
        let raw: RawConfig = toml::from_str(
            "mode = \"report\"\nallow = [\".example.com\"]\nallowRanges = [\"10.0.0.0/8\"]\n[limits]\nidleTimeoutSecs = 0\n",
        )
        .unwrap();
        let s = validate(raw, &Overrides::default()).unwrap();
        assert_eq!(s.mode, Mode::Report);
        assert!(s.limits.idle_timeout.is_none());
        assert_eq!(s.address.allow_ranges.len(), 1);
        let e = json(r#"{"allowRanges": ["::ffff:0:0/96"]}"#).unwrap_err();
        assert!(e.to_string().contains("allowRanges[0]"));
    }
}
