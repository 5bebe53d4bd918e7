//! Key sources for decryption, held in memory only: `ageKeyFile` (age identities) and the ed25519
//! SSH host keys of `ageSshKeyPaths`, each usable both as a native `ssh-ed25519` age recipient and
//! as its ssh-to-age X25519 conversion (the SOPS engine's `Keyring` does both). Nothing is ever
//! written except the key file `--generate-age-key` creates when it is missing. Also the
//! `Engine` implementation on `crate::sops`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::engine::{Engine, EngineError, Opened};
use super::error::InstallError;
use super::validate::{Format, Plan};
use crate::secret::SecretBytes;
use crate::sops;

fn sops_format(f: Format) -> sops::Format {
    match f {
        Format::Yaml => sops::Format::Yaml,
        Format::Json => sops::Format::Json,
        Format::Binary => sops::Format::Binary,
        Format::Dotenv => sops::Format::Dotenv,
        Format::Ini => sops::Format::Ini,
    }
}

fn engine_err(e: sops::SopsError) -> EngineError {
    EngineError {
        kind: e.kind(),
        detail: e.to_string(),
    }
}

/// The real engine: decrypts with the identities of `keyring`.
pub struct SopsEngine {
    keyring: sops::Keyring,
}

struct OpenedTree {
    tree: sops::Tree,
    format: sops::Format,
}

impl Opened for OpenedTree {
    fn whole(&self) -> Result<SecretBytes, EngineError> {
        self.tree.emit(self.format).map_err(engine_err)
    }

    fn value(&self, key: &[String]) -> Result<SecretBytes, EngineError> {
        let path: Vec<&str> = key.iter().map(String::as_str).collect();
        let v = self.tree.get(&path).map_err(|_| EngineError {
            kind: "key_not_found",
            detail: format!("key '{}' not found", key.join("/")),
        })?;
        v.to_secret_bytes().ok_or_else(|| {
            let shape = match v {
                sops::Value::Map(_) => "a map",
                sops::Value::List(_) => "a list",
                sops::Value::Null => "null",
                _ => "not a scalar",
            };
            EngineError {
                kind: "value_shape",
                detail: format!(
                    "the value of key '{}' is {shape}, not a string or number",
                    key.join("/")
                ),
            }
        })
    }
}

impl Engine for SopsEngine {
    fn check(&self, path: &Path, format: Format, keys: &[&[String]]) -> Result<(), EngineError> {
        let file = sops::EncryptedFile::read(path, sops_format(format)).map_err(engine_err)?;
        for k in keys {
            let p: Vec<&str> = k.iter().map(String::as_str).collect();
            if !file.contains_key(&p) {
                return Err(EngineError {
                    kind: "key_not_found",
                    detail: format!("key '{}' not found", k.join("/")),
                });
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path, format: Format) -> Result<Box<dyn Opened>, EngineError> {
        let f = sops_format(format);
        let tree = sops::decrypt_file(path, f, &self.keyring).map_err(engine_err)?;
        Ok(Box::new(OpenedTree { tree, format: f }))
    }
}

/// Builds the engine for `plan`. `check_only`: no keys are loaded (build-time validation).
pub fn make_engine(
    plan: &Plan,
    generate: bool,
    check_only: bool,
) -> Result<Box<dyn Engine>, InstallError> {
    if check_only {
        return Ok(Box::new(SopsEngine {
            keyring: sops::Keyring::new(),
        }));
    }
    if generate {
        generate_if_missing(plan)?;
    }
    Ok(Box::new(SopsEngine {
        keyring: load(plan)?,
    }))
}

/// Loads every configured identity. An unreadable ageKeyFile is fatal (as in sops-nix); a
/// missing or unusable SSH key is a warning, since hosts often list keys they do not have.
pub fn load(plan: &Plan) -> Result<sops::Keyring, InstallError> {
    let mut keyring = sops::Keyring::new();
    let mut tried = Vec::new();
    let log_import = plan.logging.key_import;
    for p in &plan.age_ssh_key_paths {
        let before = keyring.recipients().len();
        match keyring.add_ssh_key_file(p) {
            Ok(()) => {
                let recipients = keyring.recipients();
                let new = recipients.get(before..).unwrap_or_default().join(", ");
                tracing::info!(event = "age_key_imported", path = %p.display(), recipient = %new, "imported SSH host key");
                if log_import {
                    eprintln!("imported ssh host key '{}' as age key {new}", p.display());
                }
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot use SSH host key");
                eprintln!("warning: cannot use ssh key '{}': {e}", p.display());
                tried.push(format!("'{}': {e}", p.display()));
            }
        }
    }
    if let Some(p) = &plan.age_key_file {
        keyring.add_age_key_file(p).map_err(|e| InstallError::Key {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        tracing::info!(event = "age_key_imported", path = %p.display(), "imported age key file");
    }
    if keyring.is_empty() {
        let detail = if tried.is_empty() {
            "no ageKeyFile and no ageSshKeyPaths are configured".to_string()
        } else {
            tried.join("; ")
        };
        return Err(InstallError::NoKeys { detail });
    }
    Ok(keyring)
}

/// `--generate-age-key`: creates ageKeyFile when it does not exist, from the first usable
/// ed25519 SSH host key (so the recipient is the one `ssh-to-age` prints for the host's public
/// key), else a fresh random key. Mode 0600, created exclusively, never overwritten.
pub fn generate_if_missing(plan: &Plan) -> Result<(), InstallError> {
    let Some(path) = &plan.age_key_file else {
        return Err(InstallError::invalid(
            "--generate-age-key",
            "the manifest sets no ageKeyFile",
        ));
    };
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let mut from = None;
    for p in &plan.age_ssh_key_paths {
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        if let Ok(kp) = sops::ssh_ed25519_to_age(&text) {
            from = Some((kp, format!("derived from {}", p.display())));
            break;
        }
    }
    let (kp, origin) =
        from.unwrap_or_else(|| (sops::generate_age_keypair(), "generated".to_string()));
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| InstallError::Key {
                path: path.clone(),
                detail: format!("cannot create parent: {e}"),
            })?;
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let text = zeroize::Zeroizing::new(format!(
            "# created: {created}\n# public key: {}\n{}\n",
            kp.recipient,
            kp.secret.expose()
        ));
        f.write_all(text.as_bytes())
    };
    write().map_err(|e| InstallError::Key {
        path: path.clone(),
        detail: format!("cannot create key file: {e}"),
    })?;
    tracing::info!(event = "age_key_generated", path = %path.display(), recipient = %kp.recipient, origin = %origin, "created age key");
    eprintln!(
        "created age key '{}' ({origin}); public key: {}",
        path.display(),
        kp.recipient
    );
    Ok(())
}
