//! Wrapping and unwrapping the data key (or a Shamir share of it) for one age master key: the
//! `enc` field is a complete ASCII-armored age file with one recipient stanza whose payload is
//! the raw key bytes, exactly as sops writes it.

use std::io::{Read, Write};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use super::Keyring;

/// Largest payload we accept from an `enc` field (a data key or share is 32–33 bytes).
const MAX_PAYLOAD: u64 = 1024;

/// Parses an age recipient as sops does: `age1…` X25519, or `ssh-ed25519 …` / `ssh-rsa …`.
pub fn parse_recipient(recipient: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let r = recipient.trim();
    if let Some(rest) = r.strip_prefix("age1") {
        // Bech32 data never contains '1': a second one means an age1<plugin>1… recipient.
        if rest.contains('1') {
            return Err(format!("age plugin recipients are not supported: '{r}'"));
        }
        return age::x25519::Recipient::from_str(r)
            .map(|x| Box::new(x) as Box<dyn age::Recipient + Send>)
            .map_err(|e| format!("invalid age recipient '{r}': {e}"));
    }
    if r.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(r)
            .map(|x| Box::new(x) as Box<dyn age::Recipient + Send>)
            .map_err(|e| format!("invalid ssh recipient '{r}': {e:?}"));
    }
    Err(format!(
        "unknown recipient type '{r}' (expected age1… or ssh-ed25519/ssh-rsa)"
    ))
}

/// Encrypts `payload` to `recipient` as an armored age file.
pub fn wrap(recipient: &str, payload: &[u8]) -> Result<String, String> {
    let r = parse_recipient(recipient)?;
    let enc = age::Encryptor::with_recipients(std::iter::once(r.as_ref() as &dyn age::Recipient))
        .map_err(|e| format!("cannot encrypt to '{recipient}': {e}"))?;
    let mut out = Vec::new();
    let io = |e: std::io::Error| format!("cannot write age file: {e}");
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(io)?;
    let mut w = enc.wrap_output(armor).map_err(io)?;
    w.write_all(payload).map_err(io)?;
    w.finish().map_err(io)?.finish().map_err(io)?;
    String::from_utf8(out).map_err(|_| "armored output is not text".to_string())
}

/// Outcome of trying to unwrap one `enc` field.
pub enum Unwrap {
    Key(Zeroizing<Vec<u8>>),
    /// None of our identities matches a stanza.
    NoMatch,
    /// The field is malformed or fails authentication.
    Invalid(String),
}

/// Decrypts an armored age file wrapped for `recipient` with the identities of the keyring; a
/// passphrase-protected one is opened (its passphrase asked for) only when the others do not
/// match and it might.
pub fn unwrap(enc: &str, recipient: &str, keys: &Keyring) -> Unwrap {
    if keys.is_empty() {
        return Unwrap::NoMatch;
    }
    match unwrap_with(enc, keys.identities()) {
        Unwrap::NoMatch if keys.has_unopened_protected_for(recipient) => {
            unwrap_with(enc, keys.protected_identities_for(recipient))
        }
        other => other,
    }
}

fn unwrap_with<'a>(enc: &str, identities: impl Iterator<Item = &'a dyn age::Identity>) -> Unwrap {
    let reader = ArmoredReader::new(enc.trim_start().as_bytes());
    let dec = match age::Decryptor::new_buffered(reader) {
        Ok(d) => d,
        Err(e) => return Unwrap::Invalid(format!("malformed age data: {e}")),
    };
    if dec.is_scrypt() {
        return Unwrap::Invalid("passphrase-encrypted data keys are not supported".into());
    }
    match dec.decrypt(identities) {
        Ok(r) => {
            let mut out = Zeroizing::new(Vec::new());
            match r.take(MAX_PAYLOAD).read_to_end(&mut out) {
                Ok(_) => Unwrap::Key(out),
                Err(e) => Unwrap::Invalid(format!("corrupt age payload: {e}")),
            }
        }
        Err(age::DecryptError::NoMatchingKeys) => Unwrap::NoMatch,
        Err(e) => Unwrap::Invalid(format!("cannot unwrap: {e}")),
    }
}
