//! The typed errors of `secrets install`. Every message names the secret, file or path concerned
//! and the cause; none ever contains a secret value.

use std::path::PathBuf;

/// Why an install (or a check) failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The manifest file could not be read.
    #[error("cannot read manifest '{path}': {source}")]
    ManifestRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The manifest is not valid JSON or has unknown/mistyped fields.
    #[error("manifest '{path}' is not a valid sops-nix manifest: {detail}")]
    ManifestParse { path: PathBuf, detail: String },
    /// A manifest entry breaks a rule (bad mode, name escaping the mount, duplicate path...).
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// Installing needs root (mounting ramfs, chown) and no `--root` sandbox was given.
    #[error(
        "secrets install must run as root (it mounts a ramfs and sets file owners)\nhint: use --root DIR to install into a sandbox directory without root"
    )]
    NotRoot,
    /// An owner name is unknown to the system and not numeric.
    #[error("{what}: unknown user '{name}'")]
    UnknownUser { what: String, name: String },
    /// A group name is unknown to the system and not numeric.
    #[error("{what}: unknown group '{name}'")]
    UnknownGroup { what: String, name: String },
    /// A key source (age key file, SSH host key) could not be used.
    #[error("key '{path}': {detail}")]
    Key { path: PathBuf, detail: String },
    /// No age identity could be loaded from any configured source.
    #[error(
        "no usable age key: {detail}\nhint: set ageKeyFile or ageSshKeyPaths in the manifest (sops.age.keyFile / sops.age.sshKeyPaths)"
    )]
    NoKeys { detail: String },
    /// A sops file could not be read, parsed, or decrypted (wrong key, MAC mismatch...).
    /// `secret` is pre-formatted: `secret 'a'` or `secrets 'a', 'b' and 3 more`.
    #[error("{secret}: sops file '{file}': {detail}")]
    SopsFile {
        secret: String,
        file: String,
        sops_kind: &'static str,
        detail: String,
    },
    /// The key of a secret does not exist in its sops file or has an unusable shape.
    #[error("secret '{secret}': {detail} in '{file}'")]
    Value {
        secret: String,
        file: String,
        detail: String,
    },
    /// A template could not be read or rendered.
    #[error("template '{template}': {detail}")]
    Template { template: String, detail: String },
    /// Mounting or preparing the secrets filesystem failed.
    #[error("cannot prepare secrets filesystem at '{path}': {detail}")]
    Mount { path: PathBuf, detail: String },
    /// Writing a secret file (or its directory) into the new generation failed (ENOSPC...).
    #[error("secret '{secret}': cannot write '{path}': {source}")]
    Write {
        secret: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something that is not ours sits where a secret, link or the secrets symlink goes.
    #[error("refusing to replace '{path}': {detail}")]
    Planted { path: PathBuf, detail: String },
    /// Any other filesystem operation on a named path.
    #[error("{op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Requesting unit restarts/reloads failed (the new generation is active).
    #[error("cannot request unit restarts: {detail}")]
    Units { detail: String },
}

impl InstallError {
    /// A stable machine-readable kind for `--json` output and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InstallError::ManifestRead { .. } => "manifest-read",
            InstallError::ManifestParse { .. } => "manifest-parse",
            InstallError::Invalid { .. } => "manifest-invalid",
            InstallError::NotRoot => "not-root",
            InstallError::UnknownUser { .. } => "unknown-user",
            InstallError::UnknownGroup { .. } => "unknown-group",
            InstallError::Key { .. } => "key",
            InstallError::NoKeys { .. } => "no-keys",
            InstallError::SopsFile { sops_kind, .. } => sops_kind,
            InstallError::Value { .. } => "value",
            InstallError::Template { .. } => "template",
            InstallError::Mount { .. } => "mount",
            InstallError::Write { .. } => "write",
            InstallError::Planted { .. } => "planted",
            InstallError::Io { .. } => "io",
            InstallError::Units { .. } => "units",
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        InstallError::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InstallError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `nix` errors to `std::io::Error`, keeping the errno.
pub(crate) fn errno(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}
