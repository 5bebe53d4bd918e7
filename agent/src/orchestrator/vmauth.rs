//! Request signing for cattle VMs after bootstrap. Each VM gets its own HMAC key in the
//! `/v1/cattle/env` response; the daemon does not store it but derives it from a private master
//! key (a 0600 file beside the database) and the key id, so the database never holds a usable VM
//! secret. A signed request carries key id, timestamp, nonce and an HMAC-SHA256 over
//! `clf-v1\n{method}\n{path}\n{sha256(body)}\n{timestamp}\n{nonce}`. The daemon checks the
//! window (±60 s by default), the key (known, unrevoked, unexpired), the MAC (constant time), and
//! finally records the nonce in SQLite — a replay inside the nonce TTL fails even after a restart.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::audit::{self, Who};
use super::store::StoreError;
use crate::secret::SecretBytes;

type HmacSha256 = Hmac<Sha256>;

pub const H_KEY_ID: &str = "x-clf-key-id";
pub const H_TIMESTAMP: &str = "x-clf-timestamp";
pub const H_NONCE: &str = "x-clf-nonce";
pub const H_SIGNATURE: &str = "x-clf-signature";

/// Loads the master key, creating it (0600, O_EXCL) on first start.
pub fn load_master_key(path: &Path) -> std::io::Result<SecretBytes> {
    use std::io::{Read, Write};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(mut f) => {
            let mut k = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
            f.write_all(&k)?;
            f.sync_all()?;
            Ok(SecretBytes::new(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            let mut k = Vec::with_capacity(32);
            f.read_to_end(&mut k)?;
            if k.len() != 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "vm master key must be 32 bytes",
                ));
            }
            Ok(SecretBytes::new(k))
        }
        Err(e) => Err(e),
    }
}

/// The VM key for `key_id`.
pub fn derive_key(master: &SecretBytes, key_id: &str) -> SecretBytes {
    let mut mac = HmacSha256::new_from_slice(master.expose()).expect("hmac takes any key length");
    mac.update(b"clf-vm-key-v1\0");
    mac.update(key_id.as_bytes());
    SecretBytes::new(mac.finalize().into_bytes().to_vec())
}

/// The string a VM signs.
pub fn signing_string(method: &str, path: &str, body: &[u8], ts: i64, nonce: &str) -> String {
    format!(
        "clf-v1\n{method}\n{path}\n{}\n{ts}\n{nonce}",
        hex::encode(Sha256::digest(body))
    )
}

/// Hex HMAC of the signing string (used by the VM side and by tests).
pub fn sign(key: &[u8], method: &str, path: &str, body: &[u8], ts: i64, nonce: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(signing_string(method, path, body, ts, nonce).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A fresh nonce.
pub fn new_nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Issues a key for a VM: stores its id and binding, returns (key id, base64 key).
pub fn issue(
    conn: &Connection,
    master: &SecretBytes,
    now: i64,
    cattle: &str,
    job_id: &str,
    expires_at: i64,
) -> Result<(String, SecretBytes), StoreError> {
    let key_id = format!("vmk_{}", hex::encode(rand::random::<[u8; 8]>()));
    conn.prepare_cached("INSERT INTO vm_keys (key_id, cattle_name, job_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![key_id, cattle, job_id, now, expires_at])?;
    audit::record(
        conn,
        now,
        Some(job_id),
        Who::DAEMON,
        "vmkey.issue",
        "ok",
        &format!("{key_id} for {cattle}"),
        None,
    )?;
    let key = derive_key(master, &key_id);
    let b64 = STANDARD.encode(key.expose());
    Ok((key_id, SecretBytes::new(b64.into_bytes())))
}

/// The headers of a signed request.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    pub key_id: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// A verified VM.
#[derive(Debug, Clone)]
pub struct VmIdentity {
    pub key_id: String,
    pub cattle_name: String,
    pub job_id: String,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Skewed,
    UnknownKey,
    BadSignature,
    Replay,
}

impl Refusal {
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Skewed => "clock_skew",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Replay => "replay",
        }
    }
}

/// Verification parameters.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub window_ms: i64,
}

/// Verifies a signed request and records its nonce. Every refusal is audited.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    conn: &Connection,
    master: &SecretBytes,
    s: &Signed<'_>,
    method: &str,
    path: &str,
    body: &[u8],
    now: i64,
    w: Window,
    source: &str,
) -> Result<Result<VmIdentity, Refusal>, StoreError> {
    let who = Who {
        uid: None,
        name: source,
    };
    let refuse = |conn: &Connection,
                  r: Refusal,
                  job: Option<&str>|
     -> Result<Result<VmIdentity, Refusal>, StoreError> {
        audit::record(
            conn,
            now,
            job,
            who,
            "vm.request",
            r.kind(),
            &format!("{method} {path} key {}", short(s.key_id)),
            None,
        )?;
        Ok(Err(r))
    };
    let ts: Option<i64> = s.timestamp.parse().ok();
    let nonce_ok = (16..=64).contains(&s.nonce.len())
        && s.nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let key_ok = s.key_id.len() == 20 && s.key_id.starts_with("vmk_");
    let sig_ok = s.signature.len() == 64 && s.signature.bytes().all(|b| b.is_ascii_hexdigit());
    let Some(ts) = ts.filter(|_| nonce_ok && key_ok && sig_ok) else {
        return refuse(conn, Refusal::Malformed, None);
    };
    if (ts.saturating_mul(1000) - now).abs() > w.window_ms {
        return refuse(conn, Refusal::Skewed, None);
    }
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT cattle_name, job_id FROM vm_keys WHERE key_id = ?1 AND revoked_at IS NULL AND expires_at > ?2")?
        .query_row(params![s.key_id, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((cattle_name, job_id)) = row else {
        return refuse(conn, Refusal::UnknownKey, None);
    };
    let key = derive_key(master, s.key_id);
    let mut mac = HmacSha256::new_from_slice(key.expose()).expect("hmac takes any key length");
    mac.update(signing_string(method, path, body, ts, s.nonce).as_bytes());
    let Ok(given) = hex::decode(s.signature) else {
        return refuse(conn, Refusal::Malformed, Some(&job_id));
    };
    // `verify_slice` compares in constant time.
    if mac.verify_slice(&given).is_err() {
        return refuse(conn, Refusal::BadSignature, Some(&job_id));
    }
    let fresh = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO nonces (key_id, nonce, seen_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![s.key_id, s.nonce, now])?;
    if fresh == 0 {
        return refuse(conn, Refusal::Replay, Some(&job_id));
    }
    Ok(Ok(VmIdentity {
        key_id: s.key_id.to_string(),
        cattle_name,
        job_id,
    }))
}

fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::store::Store;

    fn setup() -> (tempfile::TempDir, Store, SecretBytes, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _h) = Store::open_threaded(&dir.path().join("db.sqlite")).unwrap();
        let master = load_master_key(&dir.path().join("vm.key")).unwrap();
        let m = master.clone();
        let (id, key) = s
            .call_blocking(move |c| issue(c, &m, 1_000_000, "c1", "job1", 9_000_000))
            .unwrap();
        let raw = STANDARD.decode(key.expose()).unwrap();
        (dir, s, master, id, raw)
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        s: &Store,
        master: &SecretBytes,
        id: &str,
        key: &[u8],
        ts: i64,
        nonce: &str,
        now: i64,
        body_signed: &[u8],
        body_sent: &[u8],
    ) -> Result<VmIdentity, Refusal> {
        let sig = sign(key, "POST", "/v1/cattle/result", body_signed, ts, nonce);
        let (m, id, nonce, body) = (
            master.clone(),
            id.to_string(),
            nonce.to_string(),
            body_sent.to_vec(),
        );
        s.call_blocking(move |c| {
            let sg = Signed {
                key_id: &id,
                timestamp: &ts.to_string(),
                nonce: &nonce,
                signature: &sig,
            };
            verify(
                c,
                &m,
                &sg,
                "POST",
                "/v1/cattle/result",
                &body,
                now,
                Window { window_ms: 60_000 },
                "t",
            )
        })
        .unwrap()
    }

    #[test]
    fn valid_request_passes_once() {
        let (_d, s, m, id, key) = setup();
        let n = new_nonce();
        assert_eq!(
            check(&s, &m, &id, &key, 1000, &n, 1_000_000, b"{}", b"{}")
                .unwrap()
                .cattle_name,
            "c1"
        );
        assert_eq!(
            check(&s, &m, &id, &key, 1000, &n, 1_000_001, b"{}", b"{}").unwrap_err(),
            Refusal::Replay
        );
    }

    #[test]
    fn skew_tamper_and_wrong_key_are_refused() {
        let (_d, s, m, id, key) = setup();
        assert_eq!(
            check(
                &s,
                &m,
                &id,
                &key,
                1061,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{}"
            )
            .unwrap_err(),
            Refusal::Skewed
        );
        assert_eq!(
            check(
                &s,
                &m,
                &id,
                &key,
                939,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{}"
            )
            .unwrap_err(),
            Refusal::Skewed
        );
        assert!(
            check(
                &s,
                &m,
                &id,
                &key,
                1060,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{}"
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &s,
                &m,
                &id,
                &key,
                1000,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{\"x\":1}"
            )
            .unwrap_err(),
            Refusal::BadSignature
        );
        assert_eq!(
            check(
                &s,
                &m,
                &id,
                &[0u8; 32],
                1000,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{}"
            )
            .unwrap_err(),
            Refusal::BadSignature
        );
        assert_eq!(
            check(
                &s,
                &m,
                "vmk_0000000000000000",
                &key,
                1000,
                &new_nonce(),
                1_000_000,
                b"{}",
                b"{}"
            )
            .unwrap_err(),
            Refusal::UnknownKey
        );
        // The key expires with its VM.
        assert_eq!(
            check(
                &s,
                &m,
                &id,
                &key,
                9_000,
                &new_nonce(),
                9_000_000,
                b"{}",
                b"{}"
            )
            .unwrap_err(),
            Refusal::UnknownKey
        );
        let refusals: i64 = s
            .call_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM events WHERE action = 'vm.request'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(refusals, 6);
    }

    #[test]
    fn nonce_cache_survives_a_restart() {
        let (d, s, m, id, key) = setup();
        let n = new_nonce();
        assert!(check(&s, &m, &id, &key, 1000, &n, 1_000_000, b"", b"").is_ok());
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (s2, _h) = Store::open_threaded(&d.path().join("db.sqlite")).unwrap();
        let m2 = load_master_key(&d.path().join("vm.key")).unwrap();
        assert_eq!(
            check(&s2, &m2, &id, &key, 1000, &n, 1_000_500, b"", b"").unwrap_err(),
            Refusal::Replay
        );
    }
}
