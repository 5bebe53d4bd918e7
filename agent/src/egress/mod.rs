//! The loopback egress proxy (`clawdlets egress-proxy`): HTTPS via CONNECT and plain HTTP via
//! absolute-URI forwarding, letting bots reach only allowlisted domains on allowlisted ports, and
//! never a private, loopback, link-local or metadata address whatever DNS says.
//!
//! It owns: the config format (`config`), host patterns (`allowlist`), address classes
//! (`classify`), resolve-once-then-dial (`resolve`), caller identity (`identity`), the proxy
//! itself (`proxy`), decision logs (`log`) and Prometheus metrics (`metrics`).
//! It must not: intercept TLS, listen on a non-loopback address, resolve a name twice for one
//! request, or log paths, query strings or credentials.

pub mod allowlist;
pub mod classify;
pub mod cli;
pub mod config;
pub mod identity;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod resolve;
pub mod sni;

pub use cli::{EgressArgs, run};

use std::path::PathBuf;

/// Everything that can go wrong while loading a config or starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config '{path}': {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML/JSON for the schema (unknown key, wrong type...).
    #[error("invalid config '{path}': {message}")]
    ParseConfig { path: PathBuf, message: String },
    /// A value in the config (or a flag) is not acceptable; `key` names the entry.
    #[error("invalid setting {key}: {message}")]
    Invalid { key: String, message: String },
    /// An allowlist entry could not be parsed; the entry is quoted.
    #[error("invalid allowlist pattern '{pattern}' in {key}: {message}")]
    Pattern {
        key: String,
        pattern: String,
        message: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A bot's password file could not be read.
    #[error("cannot read password file '{path}' of bot '{bot}': {source}")]
    PasswordFile {
        bot: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A stable machine-readable identifier of the error class.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ReadConfig { .. } => "read-config",
            Error::ParseConfig { .. } => "parse-config",
            Error::Invalid { .. } => "invalid-setting",
            Error::Pattern { .. } => "invalid-pattern",
            Error::Listen { .. } => "listen",
            Error::PasswordFile { .. } => "password-file",
        }
    }
}
