//! Errors of the SOPS engine. Every message names the file, format or key path involved and never
//! contains a plaintext value.

use std::path::PathBuf;

/// What went wrong while reading, decrypting or writing a SOPS file.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    /// The file could not be read or written.
    #[error("cannot access '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not valid in the given format. `detail` says where (line, key path).
    #[error("invalid {format} input: {detail}")]
    Parse {
        format: &'static str,
        detail: String,
    },
    /// The format name is not one of yaml, json, dotenv, ini, binary.
    #[error("unknown format '{0}' (expected yaml, json, dotenv, ini or binary)")]
    UnsupportedFormat(String),
    /// The document has no `sops` metadata: it is not an encrypted SOPS file.
    #[error("sops metadata not found: the file is not encrypted with sops")]
    NotSops,
    /// The metadata block is present but malformed.
    #[error("invalid sops metadata: {0}")]
    Metadata(String),
    /// No available identity could unwrap the data key.
    #[error(
        "no identity could decrypt the data key (file recipients: {recipients})\nhint: provide the matching age key with --age-key-file, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or an SSH key"
    )]
    NoKey { recipients: String },
    /// The MAC over all values does not match: the file was tampered with or a value was added,
    /// removed or changed outside sops.
    #[error(
        "MAC mismatch: the file was modified outside sops or is corrupt (computed MAC differs from the stored one)"
    )]
    MacMismatch,
    /// An `ENC[...]` value is malformed or fails authentication. `path` is the key path.
    #[error("cannot decrypt value at {path}: {detail}")]
    Decrypt { path: String, detail: String },
    /// The requested key path does not exist.
    #[error("key not found: {path}")]
    KeyNotFound { path: String },
    /// Encryption failed (bad recipient, bad rule).
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// A key or identity could not be parsed or used.
    #[error("invalid key {source_name}: {detail}")]
    Key { source_name: String, detail: String },
    /// `.sops.yaml` problems: unreadable, malformed, or no rule matches.
    #[error("{0}")]
    Config(String),
}

impl SopsError {
    /// A stable machine-readable kind for JSON output and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SopsError::Io { .. } => "io",
            SopsError::Parse { .. } => "parse",
            SopsError::UnsupportedFormat(_) => "unsupported_format",
            SopsError::NotSops => "not_sops",
            SopsError::Metadata(_) => "metadata",
            SopsError::NoKey { .. } => "no_key",
            SopsError::MacMismatch => "mac_mismatch",
            SopsError::Decrypt { .. } => "decrypt",
            SopsError::KeyNotFound { .. } => "key_not_found",
            SopsError::Encrypt(_) => "encrypt",
            SopsError::Key { .. } => "key",
            SopsError::Config(_) => "config",
        }
    }

    pub(crate) fn parse(format: &'static str, detail: impl Into<String>) -> Self {
        SopsError::Parse {
            format,
            detail: detail.into(),
        }
    }
}
