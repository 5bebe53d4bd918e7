//! Semantic validation of a parsed fleet: names, ranges, references between fields. Every problem
//! names the field path (`hosts.fleet-1.secrets.x.value.bytes`) so the operator can fix it. All
//! problems are collected, not just the first. Must not touch the filesystem.

use std::collections::BTreeSet;
use std::str::FromStr;

use regex::Regex;

use super::raw::{EgressMode, Fleet, SshExposureMode, ValueSpec};

/// The schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Bounds for generated values (also in docs/fleet.schema.json).
pub const MIN_BYTES: u32 = 16;
pub const MAX_BYTES: u32 = 4096;
pub const MIN_PASSWORD: u32 = 12;
pub const MAX_PASSWORD: u32 = 1024;
/// Length of a generated `password-hash` password when `length` is omitted.
pub const DEFAULT_PASSWORD_HASH_LENGTH: u32 = 24;
/// SHA-512-crypt rounds of `password-hash` values: the crypt(3) default is the floor; the cap
/// keeps a typo from making every login take minutes.
pub const DEFAULT_HASH_ROUNDS: u32 = 5_000;
pub const MIN_HASH_ROUNDS: u32 = 5_000;
pub const MAX_HASH_ROUNDS: u32 = 10_000_000;

/// One validation problem: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// Host names: a DNS label (the host's hostname and a path component).
pub fn is_host_name(s: &str) -> bool {
    s.len() <= 63 && re(r"^[a-z][a-z0-9-]*$").is_match(s) && !s.ends_with('-')
}

/// Secret names: the file name and the single top-level key of the sops file.
pub fn is_secret_name(s: &str) -> bool {
    s.len() <= 128 && re(r"^[A-Za-z][A-Za-z0-9_-]*$").is_match(s)
}

/// Bot and operator names (bots become the user `bot-<name>`, max 32 chars).
pub fn is_bot_name(s: &str) -> bool {
    s.len() <= 28 && re(r"^[a-z][a-z0-9_-]*$").is_match(s)
}

pub fn is_operator_name(s: &str) -> bool {
    s.len() <= 64 && re(r"^[a-z][a-z0-9_-]*$").is_match(s)
}

/// POSIX-ish user/group names as accepted by NixOS (`users.users.<name>`).
fn is_account_name(s: &str) -> bool {
    s.len() <= 32 && re(r"^[a-z_][a-z0-9_-]*\$?$").is_match(s)
}

/// A valid `age1...` X25519 recipient.
pub fn is_age_recipient(s: &str) -> bool {
    age::x25519::Recipient::from_str(s).is_ok()
}

/// Checks every rule; returns all problems in file order.
pub fn validate(fleet: &Fleet) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut push = |field: String, message: String| p.push(Problem { field, message });

    if fleet.schema_version != SCHEMA_VERSION {
        push(
            "schemaVersion".into(),
            format!(
                "unsupported version {} (this build reads {SCHEMA_VERSION})",
                fleet.schema_version
            ),
        );
    }

    if fleet.operators.is_empty() {
        push(
            "operators".into(),
            "at least one operator is required".into(),
        );
    }
    let mut op_names = BTreeSet::new();
    let mut recipients = BTreeSet::new();
    for (i, op) in fleet.operators.iter().enumerate() {
        if !is_operator_name(&op.name) {
            push(
                format!("operators[{i}].name"),
                format!("'{}' must match ^[a-z][a-z0-9_-]*$", op.name),
            );
        }
        if !op_names.insert(op.name.as_str()) {
            push(
                format!("operators[{i}].name"),
                format!("duplicate operator '{}'", op.name),
            );
        }
        if let Some(r) = &op.age_recipient {
            if !is_age_recipient(r) {
                push(
                    format!("operators[{i}].ageRecipient"),
                    "not an age X25519 recipient (age1...)".into(),
                );
            } else if !recipients.insert(r.as_str()) {
                push(
                    format!("operators[{i}].ageRecipient"),
                    "the same recipient is listed twice".into(),
                );
            }
        }
    }

    if fleet.hosts.is_empty() {
        push("hosts".into(), "at least one host is required".into());
    }
    for (host_name, host) in &fleet.hosts {
        let h = format!("hosts.{host_name}");
        if !is_host_name(host_name) {
            push(
                h.clone(),
                "host name must be a DNS label matching ^[a-z][a-z0-9-]*$ (max 63)".into(),
            );
        }
        if !matches!(host.system.as_str(), "x86_64-linux" | "aarch64-linux") {
            push(
                format!("{h}.system"),
                format!("'{}' must be x86_64-linux or aarch64-linux", host.system),
            );
        }
        if let Some(t) = &host.target_host
            && (t.trim().is_empty() || t.contains(char::is_whitespace))
        {
            push(
                format!("{h}.targetHost"),
                "must be a non-empty ssh destination without spaces".into(),
            );
        }
        for (i, key) in host.ssh_authorized_keys.iter().enumerate() {
            let ok = [
                "ssh-ed25519 ",
                "ssh-rsa ",
                "ecdsa-sha2-",
                "sk-ssh-ed25519@openssh.com ",
                "sk-ecdsa-",
            ]
            .iter()
            .any(|pfx| key.starts_with(pfx));
            if !ok || key.contains('\n') {
                push(
                    format!("{h}.sshAuthorizedKeys[{i}]"),
                    "not an OpenSSH public key line".into(),
                );
            }
            if key.contains("PRIVATE KEY") {
                push(
                    format!("{h}.sshAuthorizedKeys[{i}]"),
                    "looks like a private key; only public keys belong here".into(),
                );
            }
        }
        let ssh = &host.ssh_exposure;
        if ssh.mode == SshExposureMode::Public && !ssh.acknowledge_public {
            push(
                format!("{h}.sshExposure.acknowledgePublic"),
                "must be true for mode \"public\" (SSH reachable from the internet for good); \
                 use \"bootstrap\" for a first install"
                    .into(),
            );
        }
        if ssh.bootstrap_until.is_some() && ssh.mode != SshExposureMode::Bootstrap {
            push(
                format!("{h}.sshExposure.bootstrapUntil"),
                "only applies to mode \"bootstrap\"".into(),
            );
        }
        for (i, cidr) in ssh.source_ranges.iter().enumerate() {
            if !is_cidr(cidr) {
                push(
                    format!("{h}.sshExposure.sourceRanges[{i}]"),
                    format!("'{cidr}' is not an IPv4 or IPv6 CIDR like 203.0.113.0/24"),
                );
            }
        }
        if host.egress.mode == EgressMode::ProxyAllowlist && host.egress.allowed_domains.is_empty()
        {
            push(
                format!("{h}.egress.allowedDomains"),
                "must not be empty in proxy-allowlist mode".into(),
            );
        }
        for (i, d) in host.egress.allowed_domains.iter().enumerate() {
            if !is_domain_pattern(d) {
                push(
                    format!("{h}.egress.allowedDomains[{i}]"),
                    format!("'{d}' is not a domain pattern"),
                );
            }
        }
        for (bot_name, bot) in &host.bots {
            let b = format!("{h}.bots.{bot_name}");
            if !is_bot_name(bot_name) {
                push(
                    b.clone(),
                    "bot name must match ^[a-z][a-z0-9_-]*$ (max 28)".into(),
                );
            }
            for (i, s) in bot.secrets.iter().enumerate() {
                if !host.secrets.contains_key(s) {
                    push(
                        format!("{b}.secrets[{i}]"),
                        format!("'{s}' is not declared in {h}.secrets"),
                    );
                }
            }
            for (i, d) in bot.egress_allow.iter().enumerate() {
                if !is_domain_pattern(d) {
                    push(
                        format!("{b}.egressAllow[{i}]"),
                        format!("'{d}' is not a domain pattern"),
                    );
                }
            }
        }
        for (secret_name, secret) in &host.secrets {
            let s = format!("{h}.secrets.{secret_name}");
            if !is_secret_name(secret_name) {
                push(
                    s.clone(),
                    "secret name must match ^[A-Za-z][A-Za-z0-9_-]*$ (max 128)".into(),
                );
            }
            let v = format!("{s}.value");
            match secret.value {
                ValueSpec::Hex { bytes } | ValueSpec::Base64 { bytes }
                    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) =>
                {
                    push(
                        format!("{v}.bytes"),
                        format!("must be between {MIN_BYTES} and {MAX_BYTES} (got {bytes})"),
                    )
                }
                ValueSpec::Password { length }
                    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) =>
                {
                    push(
                        format!("{v}.length"),
                        format!("must be between {MIN_PASSWORD} and {MAX_PASSWORD} (got {length})"),
                    )
                }
                ValueSpec::PasswordHash {
                    generate,
                    length,
                    rounds,
                } => {
                    match length {
                        Some(_) if !generate => push(
                            format!("{v}.length"),
                            "only applies with \"generate\": true (a supplied password has its own length)".into(),
                        ),
                        Some(length) if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) => push(
                            format!("{v}.length"),
                            format!("must be between {MIN_PASSWORD} and {MAX_PASSWORD} (got {length})"),
                        ),
                        _ => {}
                    }
                    if let Some(r) = rounds
                        && !(MIN_HASH_ROUNDS..=MAX_HASH_ROUNDS).contains(&r)
                    {
                        push(
                            format!("{v}.rounds"),
                            format!(
                                "must be between {MIN_HASH_ROUNDS} and {MAX_HASH_ROUNDS} (got {r})"
                            ),
                        );
                    }
                }
                _ => {}
            }
            if secret.needed_for_users && matches!(secret.value, ValueSpec::Password { .. }) {
                push(
                    format!("{v}.kind"),
                    "\"password\" stores the plaintext, but a neededForUsers secret feeds \
                     hashedPasswordFile, which needs a crypt(3) hash: use {\"kind\": \"password-hash\"} \
                     (add \"generate\": true to have one made)"
                        .into(),
                );
            }
            for (field, val) in [("owner", &secret.owner), ("group", &secret.group)] {
                if let Some(val) = val
                    && !is_account_name(val)
                {
                    push(
                        format!("{s}.{field}"),
                        format!("'{val}' is not a valid user or group name"),
                    );
                }
            }
            if let Some(mode) = &secret.mode {
                if !re(r"^0?[0-7]{3}$").is_match(mode) {
                    push(
                        format!("{s}.mode"),
                        format!("'{mode}' must be an octal mode like \"0400\""),
                    );
                } else if u32::from_str_radix(mode, 8).is_ok_and(|m| m & 0o007 != 0) {
                    push(
                        format!("{s}.mode"),
                        format!(
                            "'{mode}' gives access to other users; secrets must not be world-accessible"
                        ),
                    );
                }
            }
            for (i, unit) in secret.restart_units.iter().enumerate() {
                if unit.is_empty() || unit.contains('/') || unit.contains(char::is_whitespace) {
                    push(
                        format!("{s}.restartUnits[{i}]"),
                        format!("'{unit}' is not a systemd unit name"),
                    );
                }
            }
        }
    }
    p
}

/// An address with a prefix length that fits its family (`203.0.113.0/24`, `2001:db8::/32`).
fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

fn is_domain_pattern(d: &str) -> bool {
    let d = d
        .strip_prefix("*.")
        .or_else(|| d.strip_prefix('.'))
        .unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_host_name("fleet-1"));
        assert!(!is_host_name("Fleet"));
        assert!(!is_host_name("a/b"));
        assert!(!is_host_name("x-"));
        assert!(is_secret_name("discord_token_maren"));
        assert!(!is_secret_name("../x"));
        assert!(!is_secret_name("_x"));
        assert!(is_domain_pattern("*.example.com"));
        assert!(is_domain_pattern(".example.com"));
        assert!(!is_domain_pattern("exa mple.com"));
    }
}
