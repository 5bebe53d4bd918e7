//! The raw serde shape of `fleet/clawdlets.json`: exactly what the file may contain, nothing
//! more (`deny_unknown_fields` everywhere). Semantic rules (names, ranges, references) live in
//! `validate.rs`; this file must not grow any logic beyond defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole fleet file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fleet {
    /// Editors' schema hint (`"$schema": "../docs/fleet.schema.json"`); ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub schema_version: u32,
    pub operators: Vec<Operator>,
    pub hosts: BTreeMap<String, Host>,
}

/// A person who may decrypt every secret of the fleet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operator {
    pub name: String,
    /// `age1...` X25519 recipient. Omitted for an operator who has not run `secrets init` yet;
    /// init then generates the key and records the recipient here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Host {
    #[serde(default = "default_system")]
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub tailnet: Tailnet,
    #[serde(default)]
    pub ssh_exposure: SshExposure,
    #[serde(default)]
    pub egress: Egress,
    #[serde(default)]
    pub bots: BTreeMap<String, Bot>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
}

fn default_system() -> String {
    "x86_64-linux".to_string()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tailnet {
    pub mode: TailnetMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TailnetMode {
    #[default]
    Tailscale,
    None,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshExposure {
    pub mode: SshExposureMode,
    /// Bootstrap mode only: unix time after which public SSH closes (the NixOS module's
    /// `clawdlets.sshExposure.bootstrapUntil`); without it the module's default window applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_until: Option<u64>,
    /// Public mode only: the explicit acknowledgement that SSH stays reachable from the internet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledge_public: bool,
    /// Source CIDRs that may reach public SSH (bootstrap and public modes); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshExposureMode {
    #[default]
    Bootstrap,
    Tailnet,
    Public,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Egress {
    pub mode: EgressMode,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    #[default]
    SmtpOnly,
    ProxyAllowlist,
    None,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bot {
    /// Names of host secrets this bot reads (each must be declared under `secrets`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Extra egress patterns for this bot (proxy-allowlist mode).
    #[serde(default)]
    pub egress_allow: Vec<String>,
}

/// A declared host secret: how its value is made, and how it is installed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    pub value: ValueSpec,
    /// Owner user of `/run/secrets/<name>` (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group of `/run/secrets/<name>` (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Octal mode of `/run/secrets/<name>` as a string, e.g. "0400" (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Installed before users are created (password hashes).
    #[serde(default)]
    pub needed_for_users: bool,
    /// systemd units to restart when the value changes.
    #[serde(default)]
    pub restart_units: Vec<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// How a secret value is made. Generated kinds use the OS CSPRNG; `provided` values come from
/// the operator (prompt, stdin, `--from-json`), never from the command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ValueSpec {
    /// Supplied by the operator (bot tokens, API keys).
    Provided,
    /// `bytes` random bytes, lower-case hex.
    Hex { bytes: u32 },
    /// `bytes` random bytes, standard base64 with padding.
    Base64 { bytes: u32 },
    /// A random password of `length` characters from [A-Za-z0-9].
    Password { length: u32 },
    /// An OpenSSH ed25519 private key (the public key is printed, never secret).
    SshEd25519,
    /// A WireGuard private key (base64 X25519, like `wg genkey`).
    Wireguard,
    /// A login password stored only as its crypt(3) hash, for NixOS
    /// `users.users.<name>.hashedPasswordFile` (declare it `neededForUsers`). The operator
    /// supplies the password like a `provided` value (or an existing `$6$`/`$y$`/`$2b$` hash,
    /// kept as is); clawdlets stores its SHA-512-crypt hash. With `generate`, a random password
    /// of `length` characters is made instead, hashed, and shown once on the terminal.
    PasswordHash {
        /// Generate the password (shown once) instead of asking for it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        generate: bool,
        /// Length of a generated password (only with `generate`; default 24).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<u32>,
        /// SHA-512-crypt rounds for passwords clawdlets hashes (default 5000, the crypt(3)
        /// default; more makes offline guessing slower and every login slower).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rounds: Option<u32>,
    },
}

impl ValueSpec {
    /// The `kind` string as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueSpec::Provided => "provided",
            ValueSpec::Hex { .. } => "hex",
            ValueSpec::Base64 { .. } => "base64",
            ValueSpec::Password { .. } => "password",
            ValueSpec::SshEd25519 => "ssh-ed25519",
            ValueSpec::Wireguard => "wireguard",
            ValueSpec::PasswordHash { .. } => "password-hash",
        }
    }

    /// The value is made by clawdlets (no operator input needed).
    pub fn is_generated(&self) -> bool {
        match self {
            ValueSpec::Provided => false,
            ValueSpec::PasswordHash { generate, .. } => *generate,
            _ => true,
        }
    }

    /// `secrets rotate HOST` without names renews it. Login passwords rotate only when named:
    /// a generated one is shown on the terminal, a supplied one needs the operator.
    pub fn rotates_by_default(&self) -> bool {
        self.is_generated() && !matches!(self, ValueSpec::PasswordHash { .. })
    }
}
