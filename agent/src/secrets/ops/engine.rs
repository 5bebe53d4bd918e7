//! The narrow SOPS surface the operator commands need: encrypt a flat map of secret values to a
//! list of age recipients (YAML, sops-compatible), decrypt such a file with the operator key,
//! and read a file's recipients and top-level keys without any key.
//!
//! INTERIM BACKEND: drives the real `sops` binary (values on stdin/stdout pipes, the key file
//! path in SOPS_AGE_KEY_FILE, only public recipients in argv) until `crate::sops` lands; the
//! signatures here are what the call sites use, so switching backends touches only this file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::secret::SecretBytes;

/// Errors from the SOPS layer. Messages name the file and never hold a value.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The file is not a sops file (no metadata) or is malformed.
    #[error("{path}: not a valid sops file: {detail}")]
    NotSops { path: String, detail: String },
    /// No identity we hold opens the file.
    #[error("{path}: cannot decrypt with the operator key ({detail})")]
    Decrypt { path: String, detail: String },
    /// Encryption failed.
    #[error("cannot encrypt {what}: {detail}")]
    Encrypt { what: String, detail: String },
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::NotSops { .. } => "not_sops",
            EngineError::Decrypt { .. } => "decrypt",
            EngineError::Encrypt { .. } => "encrypt",
        }
    }
}

/// Age identities used to decrypt (the operator key file).
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_file: PathBuf,
}

fn sops_cmd() -> Command {
    let mut c = Command::new("sops");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SOPS_") {
            c.env_remove(k);
        }
    }
    c.env("SOPS_DISABLE_VERSION_CHECK", "1");
    // No .sops.yaml lookup from the caller's directory: recipients are always explicit.
    c.current_dir("/");
    c
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::io::Result<(bool, Vec<u8>, String)> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    // sops' stderr never echoes values; keep only its last line for the error message.
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    Ok((out.status.success(), out.stdout, err))
}

/// Encrypts `entries` (top-level key → value, in order) to every recipient; returns the sops
/// YAML file bytes. `what` labels errors (a path).
pub fn encrypt(
    entries: &[(&str, &SecretBytes)],
    recipients: &[String],
    what: &str,
) -> Result<Vec<u8>, EngineError> {
    let mut map = serde_json::Map::new();
    for (k, v) in entries {
        // Interim backend limitation: JSON carries UTF-8 only.
        let s = std::str::from_utf8(v.expose()).map_err(|_| EngineError::Encrypt {
            what: what.into(),
            detail: format!("value of '{k}' is not UTF-8"),
        })?;
        map.insert((*k).to_string(), serde_json::Value::String(s.to_string()));
    }
    let json = zeroize::Zeroizing::new(serde_json::to_vec(&map).expect("map serializes"));
    drop(map);
    let mut cmd = sops_cmd();
    cmd.args([
        "encrypt",
        "--input-type",
        "json",
        "--output-type",
        "yaml",
        "--age",
        &recipients.join(","),
        "/dev/stdin",
    ]);
    let (ok, out, err) = run_with_stdin(cmd, &json).map_err(|e| EngineError::Encrypt {
        what: what.into(),
        detail: format!("cannot run sops: {e}"),
    })?;
    if !ok {
        return Err(EngineError::Encrypt {
            what: what.into(),
            detail: err,
        });
    }
    Ok(out)
}

/// Decrypts a sops YAML file; returns its top-level entries with string values.
pub fn decrypt(
    bytes: &[u8],
    identity: &Identity,
    what: &str,
) -> Result<Vec<(String, SecretBytes)>, EngineError> {
    let mut cmd = sops_cmd();
    cmd.env("SOPS_AGE_KEY_FILE", &identity.key_file);
    cmd.args([
        "decrypt",
        "--input-type",
        "yaml",
        "--output-type",
        "json",
        "/dev/stdin",
    ]);
    let (ok, out, err) = run_with_stdin(cmd, bytes).map_err(|e| EngineError::Decrypt {
        path: what.into(),
        detail: format!("cannot run sops: {e}"),
    })?;
    let out = zeroize::Zeroizing::new(out);
    if !ok {
        return Err(EngineError::Decrypt {
            path: what.into(),
            detail: err,
        });
    }
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out).map_err(|_| EngineError::Decrypt {
            path: what.into(),
            detail: "sops output is not a JSON object".into(),
        })?;
    Ok(v.into_iter()
        .map(|(k, v)| {
            let bytes = match v {
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (k, SecretBytes::new(bytes))
        })
        .collect())
}

/// The parts of a sops YAML file readable without a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub top_level_keys: Vec<String>,
    pub age_recipients: Vec<String>,
}

/// Reads the top-level keys and age recipients of a sops YAML file without decrypting.
pub fn envelope(bytes: &[u8], what: &str) -> Result<Envelope, EngineError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EngineError::NotSops {
        path: what.into(),
        detail: "not UTF-8 text".into(),
    })?;
    let mut env = Envelope::default();
    let mut in_sops = false;
    let mut has_mac = false;
    let mut has_enc_value = false;
    for line in text.lines() {
        if line.starts_with(' ')
            || line.starts_with('\t')
            || line.starts_with('-')
            || line.is_empty()
            || line.starts_with('#')
        {
            if in_sops {
                let t = line.trim_start().trim_start_matches("- ");
                if let Some(r) = t.strip_prefix("recipient: ") {
                    env.age_recipients
                        .push(r.trim().trim_matches('"').to_string());
                }
                if t.starts_with("mac: ENC[") {
                    has_mac = true;
                }
            }
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(EngineError::NotSops {
                path: what.into(),
                detail: "not a YAML mapping".into(),
            });
        };
        in_sops = key == "sops";
        if !in_sops {
            env.top_level_keys.push(key.trim_matches('"').to_string());
            if rest.trim_start().starts_with("ENC[") {
                has_enc_value = true;
            }
        }
    }
    if !has_mac {
        return Err(EngineError::NotSops {
            path: what.into(),
            detail: "no sops metadata (mac)".into(),
        });
    }
    let _ = has_enc_value;
    Ok(env)
}

/// Reads a file and returns its envelope.
pub fn read_envelope(path: &Path, label: &str) -> Result<(Vec<u8>, Envelope), EngineError> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::NotSops {
        path: label.into(),
        detail: e.to_string(),
    })?;
    let env = envelope(&bytes, label)?;
    Ok((bytes, env))
}
