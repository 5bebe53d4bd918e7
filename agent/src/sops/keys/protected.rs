//! Passphrase-protected identities, read the way sops 3.11 reads them: an age file encrypted to
//! a passphrase whose plaintext is a key file (`age -p`), and an encrypted OpenSSH private key.
//! Each stays sealed until a data key needs it, then its passphrase is asked once and what it
//! holds joins the keyring for the rest of the process; a failure is remembered, not re-asked.
//! An SSH key's public half is readable without the passphrase, so it is only asked for when a
//! file is encrypted to that key; an age file's recipients are unknown until it is opened.

use std::io::Read;
use std::sync::OnceLock;

use zeroize::Zeroizing;

use super::Keyring;
use crate::secret::SecretString;
use crate::sops::error::SopsError;

/// Asks for a passphrase, given the prompt to show.
pub(super) type AskPassphrase = Box<dyn Fn(&str) -> std::io::Result<SecretString> + Send + Sync>;

/// Largest plaintext accepted from a protected age file (sops' limit is 16 MiB; a key file is a
/// few hundred bytes).
const MAX_PLAINTEXT: u64 = 1 << 20;

/// Largest scrypt work factor (log2 N) accepted: the age tools' limit; `age -p` writes 18.
/// age's own default bound is calibrated on this machine (+4 over ~1 s) and refuses files that
/// `age -p` wrote on a faster one. The file is the user's own key, not input from others.
const MAX_SCRYPT_LOG_N: u8 = 22;

/// What to do when no passphrase can be asked for, per kind of key.
const AGE_FILE_HINT: &str = "hint: run this on a terminal, or hand the keys over unprotected \
     through SOPS_AGE_KEY_CMD (e.g. \"age -d FILE\")";
const SSH_KEY_HINT: &str = "hint: run this on a terminal, or use an age key for unattended runs";

/// What is sealed.
enum Sealed {
    /// An age file (binary or armored) whose plaintext is a key file.
    AgeFile(Zeroizing<Vec<u8>>),
    /// An encrypted OpenSSH private key and the recipients its public half stands for (the
    /// native `ssh-…` one and, for ed25519, the ssh-to-age `age1…` one).
    Ssh {
        text: Zeroizing<String>,
        recipients: Vec<String>,
    },
}

/// A protected identity: sealed until opened, then the identities inside it, or why they could
/// not be had.
pub(super) struct Protected {
    source: String,
    sealed: Sealed,
    opened: OnceLock<Result<Keyring, String>>,
}

/// An age file, binary or armored: in a key source, a passphrase-protected identity file.
pub fn is_age_file(bytes: &[u8]) -> bool {
    let b = bytes.trim_ascii_start();
    b.starts_with(b"age-encryption.org/") || b.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

impl Protected {
    pub(super) fn age_file(source: &str, file: Zeroizing<Vec<u8>>) -> Protected {
        Protected::new(source, Sealed::AgeFile(file))
    }

    /// An OpenSSH private key if it is encrypted, with the recipients it can open; `None` for an
    /// unencrypted key or text that is not an OpenSSH key (left to the usual parser).
    pub(super) fn ssh_key(source: &str, text: &str) -> Option<Protected> {
        let key = ssh_key::PrivateKey::from_openssh(text.trim()).ok()?;
        if !key.is_encrypted() {
            return None;
        }
        let public = key.public_key().to_openssh().ok()?;
        let native: String = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut recipients = vec![native.clone()];
        if let Ok(converted) = super::ssh_ed25519_public_to_age(&native) {
            recipients.push(converted);
        }
        Some(Protected::new(
            source,
            Sealed::Ssh {
                text: Zeroizing::new(text.to_string()),
                recipients,
            },
        ))
    }

    fn new(source: &str, sealed: Sealed) -> Protected {
        Protected {
            source: source.to_string(),
            sealed,
            opened: OnceLock::new(),
        }
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// Whether opening this could help with a data key wrapped for `recipient`.
    pub(super) fn may_open(&self, recipient: &str) -> bool {
        match &self.sealed {
            Sealed::AgeFile(_) => true,
            Sealed::Ssh { recipients, .. } => {
                // An `ssh-…` recipient may carry the key's comment; compare type and key only.
                let bare: Vec<&str> = recipient.split_whitespace().take(2).collect();
                recipients.iter().any(|r| *r == bare.join(" "))
            }
        }
    }

    pub(super) fn is_opened(&self) -> bool {
        self.opened.get().is_some()
    }

    /// The identities inside, opening (asking for the passphrase) on the first call.
    pub(super) fn open(&self, ask: &AskPassphrase) -> Option<&Keyring> {
        self.opened.get_or_init(|| self.unseal(ask)).as_ref().ok()
    }

    /// The identities inside if opened before.
    pub(super) fn opened(&self) -> Option<&Keyring> {
        self.opened.get().and_then(|r| r.as_ref().ok())
    }

    /// Why opening failed, if it did.
    pub(super) fn failure(&self) -> Option<&str> {
        match self.opened.get() {
            Some(Err(detail)) => Some(detail),
            _ => None,
        }
    }

    fn unseal(&self, ask: &AskPassphrase) -> Result<Keyring, String> {
        // Inside: the usual syntax; a protected key inside a protected file is refused.
        let mut inner = Keyring::new();
        let added = match &self.sealed {
            Sealed::AgeFile(file) => {
                let text = open_age_file(file, &self.source, ask)?;
                let text = std::str::from_utf8(&text)
                    .map_err(|_| "the decrypted identity file is not UTF-8".to_string())?;
                inner.add_keys_from(&self.source, text)
            }
            Sealed::Ssh { text, .. } => {
                let text = open_ssh_key(text, &self.source, ask)?;
                inner.add_ssh_key_text(&self.source, &text)
            }
        };
        added.map_err(|e| match e {
            SopsError::Key { detail, .. } => detail,
            other => other.to_string(),
        })?;
        Ok(inner)
    }
}

fn ask_for(
    ask: &AskPassphrase,
    prompt: &str,
    what: &str,
    hint: &str,
) -> Result<SecretString, String> {
    ask(prompt).map_err(|e| {
        format!(
            "{what} is passphrase-protected and the passphrase cannot be asked for: {e}\n{hint}"
        )
    })
}

/// The plaintext of an age file encrypted to a passphrase.
fn open_age_file(
    file: &[u8],
    source: &str,
    ask: &AskPassphrase,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let reader = age::armor::ArmoredReader::new(file.trim_ascii_start());
    let dec = age::Decryptor::new_buffered(reader)
        .map_err(|e| format!("not a readable age-encrypted identity file: {e}"))?;
    if !dec.is_scrypt() {
        return Err(
            "the identity file is encrypted to a key, not to a passphrase; decrypt it with that key first"
                .into(),
        );
    }
    // sops 3.11's prompt.
    let prompt = format!("Enter passphrase for identity '{source}': ");
    let pass = ask_for(ask, &prompt, "the identity file", AGE_FILE_HINT)?;
    let mut id =
        age::scrypt::Identity::new(age::secrecy::SecretString::from(pass.expose().to_string()));
    id.set_max_work_factor(MAX_SCRYPT_LOG_N);
    let stream = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys
            | age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed => "incorrect passphrase".to_string(),
            other => format!("cannot decrypt the identity file: {other}"),
        })?;
    let mut text = Zeroizing::new(Vec::new());
    stream
        .take(MAX_PLAINTEXT + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot decrypt the identity file: {e}"))?;
    if text.len() as u64 > MAX_PLAINTEXT {
        return Err("the decrypted identity file is larger than 1 MiB".into());
    }
    Ok(text)
}

/// The unencrypted OpenSSH text of an encrypted OpenSSH private key.
fn open_ssh_key(
    text: &str,
    source: &str,
    ask: &AskPassphrase,
) -> Result<Zeroizing<String>, String> {
    let key = ssh_key::PrivateKey::from_openssh(text.trim())
        .map_err(|e| format!("not an OpenSSH private key: {e}"))?;
    // sops 3.11's prompt.
    let prompt = format!("Enter passphrase for \"{source}\": ");
    let pass = ask_for(ask, &prompt, "the SSH key", SSH_KEY_HINT)?;
    let plain = key.decrypt(pass.expose()).map_err(|e| match e {
        ssh_key::Error::Crypto => "incorrect passphrase".to_string(),
        other => format!("cannot decrypt the SSH key: {other}"),
    })?;
    plain
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot re-encode the decrypted SSH key: {e}"))
}
