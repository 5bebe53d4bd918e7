//! The narrow SOPS surface the operator commands need, on top of `crate::sops`: encrypt a flat
//! map of secret values to age recipients (sops YAML), decrypt with the operator key (MAC
//! verified), re-key a file (same data key when recipients were only added, a new data key
//! when any was removed), and read a file's recipients and top-level keys without a key.
//! Values stay in `SecretBytes`; errors name the file and never carry a value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::secret::SecretBytes;
use crate::sops::{
    EncryptOptions, EncryptedFile, EncryptionRule, Format, KeyGroups, Keyring, SopsError, Tree,
    Value,
};

/// Errors from the SOPS layer. Messages name the file and never hold a value.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The file is not a sops file (no metadata) or is malformed.
    #[error("{path}: not a valid sops file: {source}")]
    NotSops {
        path: String,
        #[source]
        source: SopsError,
    },
    /// No identity we hold opens the file, or the MAC does not verify.
    #[error("{path}: cannot decrypt with the operator key: {source}")]
    Decrypt {
        path: String,
        #[source]
        source: SopsError,
    },
    /// Encryption or re-keying failed.
    #[error("{path}: cannot encrypt: {source}")]
    Encrypt {
        path: String,
        #[source]
        source: SopsError,
    },
    /// The decrypted file does not have the flat shape of a clawdlets secret file.
    #[error("{path}: value of '{key}' is not a scalar")]
    Shape { path: String, key: String },
    /// The identity file could not be loaded.
    #[error("cannot load key file '{path}': {source}")]
    Key {
        path: String,
        #[source]
        source: SopsError,
    },
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::NotSops { .. } => "not_sops",
            EngineError::Decrypt { .. } => "decrypt",
            EngineError::Encrypt { .. } => "encrypt",
            EngineError::Shape { .. } => "shape",
            EngineError::Key { .. } => "key",
        }
    }
}

/// Age identities used to decrypt (the operator key file).
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_file: PathBuf,
    /// Loaded on first use and shared by every file of the command, so a passphrase-protected
    /// key file is asked for once.
    keys: Arc<OnceLock<Keyring>>,
}

impl Identity {
    pub fn new(key_file: PathBuf) -> Identity {
        Identity {
            key_file,
            keys: Arc::default(),
        }
    }

    fn keyring(&self) -> Result<&Keyring, EngineError> {
        if let Some(k) = self.keys.get() {
            return Ok(k);
        }
        let mut k = Keyring::interactive();
        k.add_age_key_file(&self.key_file)
            .map_err(|source| EngineError::Key {
                path: self.key_file.display().to_string(),
                source,
            })?;
        Ok(self.keys.get_or_init(|| k))
    }

    /// The recipients of the key file, opening a passphrase-protected one (asking once).
    pub fn recipients(&self) -> Result<Vec<String>, EngineError> {
        let keys = self.keyring()?;
        keys.open_protected().map_err(|source| EngineError::Key {
            path: self.key_file.display().to_string(),
            source,
        })?;
        Ok(keys.recipients())
    }
}

fn options(recipients: &[String]) -> EncryptOptions {
    EncryptOptions {
        key_groups: KeyGroups::single(recipients.to_vec()),
        rule: EncryptionRule::Default,
        ..EncryptOptions::default()
    }
}

/// Encrypts `entries` (top-level key → value, in order) to every recipient; returns the sops
/// YAML file bytes. `what` labels errors (a path).
pub fn encrypt(
    entries: &[(&str, &SecretBytes)],
    recipients: &[String],
    what: &str,
) -> Result<Vec<u8>, EngineError> {
    let mut tree = Tree::new_map();
    for (k, v) in entries {
        tree.insert(k, Value::Str((*v).clone()));
    }
    let err = |source| EngineError::Encrypt {
        path: what.into(),
        source,
    };
    let file = EncryptedFile::encrypt(&tree, Format::Yaml, &options(recipients)).map_err(err)?;
    file.to_bytes().map_err(err)
}

fn parse(bytes: &[u8], what: &str) -> Result<EncryptedFile, EngineError> {
    EncryptedFile::parse(bytes, Format::Yaml).map_err(|source| EngineError::NotSops {
        path: what.into(),
        source,
    })
}

/// Decrypts a sops YAML file; returns its top-level entries as bytes.
pub fn decrypt(
    bytes: &[u8],
    identity: &Identity,
    what: &str,
) -> Result<Vec<(String, SecretBytes)>, EngineError> {
    let file = parse(bytes, what)?;
    let tree = file
        .decrypt(identity.keyring()?)
        .map_err(|source| EngineError::Decrypt {
            path: what.into(),
            source,
        })?;
    let mut out = Vec::new();
    for key in tree.top_level_keys() {
        let value = tree
            .get(&[key.as_str()])
            .map_err(|source| EngineError::Decrypt {
                path: what.into(),
                source,
            })?;
        let bytes = value.to_secret_bytes().ok_or_else(|| EngineError::Shape {
            path: what.into(),
            key: key.clone(),
        })?;
        out.push((key, bytes));
    }
    Ok(out)
}

/// Re-keys a file for `recipients`. Only additions: the data key is kept and re-wrapped (values
/// and their ciphertext stay the same). Any removal, or `new_data_key`: a fresh data key and
/// every value re-encrypted, so an old copy of the data key opens nothing new.
pub fn rekey(
    bytes: &[u8],
    identity: &Identity,
    recipients: &[String],
    new_data_key: bool,
    what: &str,
) -> Result<Vec<u8>, EngineError> {
    let mut file = parse(bytes, what)?;
    let keys = identity.keyring()?;
    let err = |source| EngineError::Encrypt {
        path: what.into(),
        source,
    };
    file.update_keys(keys, KeyGroups::single(recipients.to_vec()))
        .map_err(|source| match source {
            e @ (SopsError::NoKey { .. } | SopsError::MacMismatch) => EngineError::Decrypt {
                path: what.into(),
                source: e,
            },
            e => err(e),
        })?;
    if new_data_key {
        file.rotate(keys).map_err(err)?;
    }
    file.to_bytes().map_err(err)
}

/// The parts of a sops file readable without a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub top_level_keys: Vec<String>,
    pub age_recipients: Vec<String>,
}

/// Reads the top-level keys and age recipients of a sops YAML file without decrypting.
pub fn envelope(bytes: &[u8], what: &str) -> Result<Envelope, EngineError> {
    let file = parse(bytes, what)?;
    Ok(Envelope {
        top_level_keys: file.top_level_keys(),
        age_recipients: file.age_recipients(),
    })
}

/// Reads a file and returns its bytes and envelope.
pub fn read_envelope(path: &Path, label: &str) -> Result<(Vec<u8>, Envelope), EngineError> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::NotSops {
        path: label.into(),
        source: SopsError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let env = envelope(&bytes, label)?;
    Ok((bytes, env))
}
