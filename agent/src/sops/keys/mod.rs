//! Age keys: the `Keyring` of identities used to unwrap data keys (found like sops finds them),
//! key generation, and the OpenSSH ed25519 → age conversion that ssh-to-age and sops-nix use.
//!
//! Passphrase-protected identities (`protected`) stay sealed until a data key needs them; a
//! keyring made for unattended use (`Keyring::new`) refuses them when they are added.
//!
//! An OpenSSH ed25519 private key is held twice: as the native `ssh-ed25519` age identity (files
//! sops encrypted to an `ssh-ed25519 …` recipient) and converted to an X25519 identity (files
//! encrypted to the ssh-to-age recipient). Secret material stays in zeroizing types and is never
//! logged; errors name the key source, never the key.

pub mod age_key;
mod protected;

pub use protected::is_age_file;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use bech32::{ToBase32, Variant};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use self::protected::{AskPassphrase, Protected};
use super::error::SopsError;
use crate::secret::SecretString;

/// A generated or converted age key pair.
#[derive(Debug, Clone)]
pub struct AgeKeypair {
    /// `AGE-SECRET-KEY-1…`
    pub secret: SecretString,
    /// `age1…`
    pub recipient: String,
}

/// Age identities available for decryption.
#[derive(Default)]
pub struct Keyring {
    x25519: Vec<(age::x25519::Identity, String)>,
    ssh: Vec<age::ssh::Identity>,
    /// Passphrase-protected identities, opened when first needed.
    protected: Vec<Protected>,
    /// How to ask for a passphrase; `None` (unattended) refuses protected identities.
    ask: Option<AskPassphrase>,
    /// Where the identities came from (paths and variable names, never key material).
    sources: Vec<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("x25519", &self.x25519.len())
            .field("ssh", &self.ssh.len())
            .field("protected", &self.protected.len())
            .field("sources", &self.sources)
            .finish()
    }
}

fn key_err(source: &str, detail: impl Into<String>) -> SopsError {
    SopsError::Key {
        source_name: source.to_string(),
        detail: detail.into(),
    }
}

/// The user config directory sops uses on Linux: `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn user_config_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() && Path::new(&x).is_absolute() => Some(PathBuf::from(x)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".config")),
    }
}

impl Keyring {
    /// A keyring for unattended use: a passphrase-protected identity is an error when added.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A keyring for a person at a terminal: a passphrase-protected identity is opened when first
    /// needed, asking for its passphrase on `/dev/tty` like sops does.
    pub fn interactive() -> Keyring {
        Keyring::asking_with(|prompt| rpassword::prompt_password(prompt).map(SecretString::new))
    }

    /// A keyring that gets the passphrases of protected identities from `ask` (given the prompt).
    pub fn asking_with(
        ask: impl Fn(&str) -> std::io::Result<SecretString> + Send + Sync + 'static,
    ) -> Keyring {
        Keyring {
            ask: Some(Box::new(ask)),
            ..Keyring::default()
        }
    }

    /// sops' lookup, all sources merged: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY_CMD`,
    /// `SOPS_AGE_SSH_PRIVATE_KEY_FILE`, `~/.ssh/id_ed25519` and `~/.ssh/id_rsa` (when present;
    /// passphrase-protected ones only for a keyring that can ask), then
    /// `<config dir>/sops/age/keys.txt`. A source named by a variable that cannot be used is an
    /// error; the default locations are skipped when absent.
    pub fn from_sops_env() -> Result<Keyring, SopsError> {
        let mut k = Keyring::new();
        k.add_sops_env()?;
        Ok(k)
    }

    /// Adds the identities of `from_sops_env` to this keyring.
    pub fn add_sops_env(&mut self) -> Result<(), SopsError> {
        if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
            self.add_keys_from("SOPS_AGE_KEY", &text)?;
        }
        if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE") {
            self.add_age_key_file(Path::new(&path))?;
        }
        if let Ok(cmd) = std::env::var("SOPS_AGE_KEY_CMD") {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| key_err("SOPS_AGE_KEY_CMD", format!("cannot run the command: {e}")))?;
            if !out.status.success() {
                return Err(key_err(
                    "SOPS_AGE_KEY_CMD",
                    format!("the command failed with {}", out.status),
                ));
            }
            let text = Zeroizing::new(
                String::from_utf8(out.stdout)
                    .map_err(|_| key_err("SOPS_AGE_KEY_CMD", "output is not UTF-8"))?,
            );
            self.add_keys_from("SOPS_AGE_KEY_CMD", &text)?;
        }
        if let Some(path) = std::env::var_os("SOPS_AGE_SSH_PRIVATE_KEY_FILE") {
            self.add_ssh_key_file(Path::new(&path))?;
        }
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            for name in ["id_ed25519", "id_rsa"] {
                let p = Path::new(&home).join(".ssh").join(name);
                if p.is_file()
                    && let Err(e) = self.add_ssh_key_file(&p)
                {
                    tracing::debug!(path = %p.display(), error = %e, "skipping default ssh key");
                }
            }
        }
        if let Some(dir) = user_config_dir() {
            let p = dir.join("sops").join("age").join("keys.txt");
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let text = Zeroizing::new(text);
                    // The default location is best effort (like sops): a broken keys.txt must
                    // not hide identities given explicitly.
                    if let Err(e) = self.add_keys_from(&p.display().to_string(), &text) {
                        if self.is_empty() {
                            return Err(e);
                        }
                        tracing::warn!(path = %p.display(), error = %e, "ignoring unusable age key file");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SopsError::Io { path: p, source: e }),
            }
        }
        Ok(())
    }

    /// Adds every identity of an age key file (`AGE-SECRET-KEY-1…` lines, `#` comments), or a
    /// passphrase-protected one (an age-encrypted key file, binary or armored).
    pub fn add_age_key_file(&mut self, path: &Path) -> Result<(), SopsError> {
        let text = std::fs::read(path).map_err(|e| SopsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let text = Zeroizing::new(text);
        let source = path.display().to_string();
        if is_age_file(&text) {
            return self.add_protected(Protected::age_file(&source, text));
        }
        let text = std::str::from_utf8(&text)
            .map_err(|_| key_err(&source, "the key file is not UTF-8"))?;
        self.add_keys_from(&source, text)
    }

    /// Adds identities in key-file syntax.
    pub fn add_age_keys_str(&mut self, text: &str) -> Result<(), SopsError> {
        self.add_keys_from("age key text", text)
    }

    fn add_protected(&mut self, p: Protected) -> Result<(), SopsError> {
        if self.ask.is_none() {
            return Err(key_err(
                p.source(),
                "the key is passphrase-protected, and this command runs unattended and cannot \
                 ask for a passphrase\nhint: use a plain age key file or an SSH host key",
            ));
        }
        self.sources.push(p.source().to_string());
        self.protected.push(p);
        Ok(())
    }

    fn add_keys_from(&mut self, source: &str, text: &str) -> Result<(), SopsError> {
        if is_age_file(text.as_bytes()) {
            let file = Zeroizing::new(text.as_bytes().to_vec());
            return self.add_protected(Protected::age_file(source, file));
        }
        let mut found = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
                return self.add_ssh_key_text(source, text);
            }
            if !line.starts_with("AGE-SECRET-KEY-1") {
                let what =
                    if line.starts_with("AGE-PLUGIN-") || line.starts_with("AGE-SECRET-KEY-PQ-1") {
                        "plugin and post-quantum identities are not supported"
                    } else {
                        "expected an AGE-SECRET-KEY-1… line"
                    };
                return Err(key_err(source, format!("line {}: {what}", n + 1)));
            }
            let id = age::x25519::Identity::from_str(line).map_err(|e| {
                key_err(
                    source,
                    format!("line {}: malformed age secret key ({e})", n + 1),
                )
            })?;
            let recipient = id.to_public().to_string();
            if !self.x25519.iter().any(|(_, r)| *r == recipient) {
                self.x25519.push((id, recipient));
            }
            found += 1;
        }
        if found == 0 {
            return Err(key_err(source, "no age identity found"));
        }
        self.sources.push(source.to_string());
        Ok(())
    }

    /// Adds an OpenSSH private key file: ed25519 (native stanza + ssh-to-age conversion) or RSA
    /// (native stanza only). A passphrase-protected key is asked for only when a file is
    /// encrypted to it (refused by an unattended keyring).
    pub fn add_ssh_key_file(&mut self, path: &Path) -> Result<(), SopsError> {
        let text = std::fs::read(path).map_err(|e| SopsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let text = Zeroizing::new(text);
        let source = path.display().to_string();
        let text = std::str::from_utf8(&text)
            .map_err(|_| key_err(&source, "the SSH key file is not UTF-8"))?;
        self.add_ssh_key_text(&source, text)
    }

    fn add_ssh_key_text(&mut self, source: &str, text: &str) -> Result<(), SopsError> {
        if let Some(p) = Protected::ssh_key(source, text) {
            return self.add_protected(p);
        }
        let id = parse_ssh_identity(source, text)?;
        if let Some(seed) = ed25519_seed(text) {
            let kp = x25519_from_seed(&seed);
            let xid = age::x25519::Identity::from_str(kp.secret.expose())
                .map_err(|e| key_err(source, e))?;
            if !self.x25519.iter().any(|(_, r)| *r == kp.recipient) {
                self.x25519.push((xid, kp.recipient));
            }
        }
        self.ssh.push(id);
        self.sources.push(source.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.x25519.is_empty() && self.ssh.is_empty() && self.protected.is_empty()
    }

    /// The `age1…` recipient of every X25519 identity held (SSH keys: their converted form),
    /// those of protected files only once opened (`open_protected`).
    pub fn recipients(&self) -> Vec<String> {
        let opened = self.opened_protected().flat_map(|k| k.recipients());
        self.x25519
            .iter()
            .map(|(_, r)| r.clone())
            .chain(opened)
            .collect()
    }

    /// Opens every passphrase-protected identity not opened yet (asking once for each); the
    /// first that cannot be opened is the error.
    pub fn open_protected(&self) -> Result<(), SopsError> {
        if let Some(ask) = &self.ask {
            for p in &self.protected {
                let _opened_or_failed = p.open(ask);
            }
        }
        self.protected_failure().map_or(Ok(()), Err)
    }

    /// Whether an identity not yet opened might open a data key wrapped for `recipient`.
    pub(crate) fn has_unopened_protected_for(&self, recipient: &str) -> bool {
        self.protected
            .iter()
            .any(|p| !p.is_opened() && p.may_open(recipient))
    }

    /// The identities of the protected keys that might serve `recipient`, opening them first
    /// (asking for their passphrases).
    pub(crate) fn protected_identities_for<'a>(
        &'a self,
        recipient: &'a str,
    ) -> impl Iterator<Item = &'a dyn age::Identity> + 'a {
        self.protected
            .iter()
            .filter(move |p| p.may_open(recipient))
            .filter_map(|p| p.open(self.ask.as_ref()?))
            .flat_map(|k| k.identities())
    }

    /// Why a protected key could not be opened (wrong passphrase, no terminal…), if one failed.
    pub(crate) fn protected_failure(&self) -> Option<SopsError> {
        self.protected
            .iter()
            .find_map(|p| Some(key_err(p.source(), p.failure()?)))
    }

    fn opened_protected(&self) -> impl Iterator<Item = &Keyring> {
        self.protected.iter().filter_map(Protected::opened)
    }

    /// Where the identities came from (paths, variable names).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The identities held in the clear, and those of protected files already opened.
    pub(crate) fn identities(&self) -> Box<dyn Iterator<Item = &dyn age::Identity> + '_> {
        Box::new(
            self.x25519
                .iter()
                .map(|(i, _)| i as &dyn age::Identity)
                .chain(self.ssh.iter().map(|i| i as &dyn age::Identity))
                .chain(self.opened_protected().flat_map(|k| k.identities())),
        )
    }
}

fn parse_ssh_identity(source: &str, text: &str) -> Result<age::ssh::Identity, SopsError> {
    let id = age::ssh::Identity::from_buffer(text.as_bytes(), Some(source.to_string()))
        .map_err(|_| key_err(source, "not an OpenSSH private key (ed25519 or RSA)"))?;
    match id {
        age::ssh::Identity::Unencrypted(_) => Ok(id),
        age::ssh::Identity::Encrypted(_) => Err(key_err(
            source,
            "the SSH key is passphrase-protected in a form that cannot be opened here (only OpenSSH-format keys can)\nhint: convert it with `ssh-keygen -p -f FILE`, or use an age key file",
        )),
        age::ssh::Identity::Unsupported(_) => Err(key_err(
            source,
            "unsupported SSH key type (use ed25519 or RSA)",
        )),
    }
}

/// The ed25519 seed of an unencrypted OpenSSH private key, None for other key types.
fn ed25519_seed(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let key = ssh_key::PrivateKey::from_openssh(text.trim()).ok()?;
    if key.is_encrypted() {
        return None;
    }
    key.key_data()
        .ed25519()
        .map(|kp| Zeroizing::new(kp.private.to_bytes()))
}

/// The ssh-to-age conversion: X25519 secret = first 32 bytes of SHA-512(ed25519 seed).
fn x25519_from_seed(seed: &[u8; 32]) -> AgeKeypair {
    let mut digest = Zeroizing::new([0u8; 64]);
    digest.copy_from_slice(&Sha512::digest(seed));
    let mut encoded = Zeroizing::new(
        bech32::encode(
            "age-secret-key-",
            (&digest[..32]).to_base32(),
            Variant::Bech32,
        )
        .expect("valid human-readable part"),
    );
    let upper = encoded.to_uppercase();
    encoded.clear();
    let id = age::x25519::Identity::from_str(&upper).expect("freshly encoded key parses");
    AgeKeypair {
        recipient: id.to_public().to_string(),
        secret: SecretString::new(upper),
    }
}

/// A new X25519 key pair from the OS CSPRNG.
pub fn generate_age_keypair() -> AgeKeypair {
    let id = age::x25519::Identity::generate();
    AgeKeypair {
        secret: SecretString::new(id.to_string().expose_secret().to_string()),
        recipient: id.to_public().to_string(),
    }
}

/// The `age1…` recipient of an `AGE-SECRET-KEY-1…` secret key.
pub fn age_recipient_of(secret_key: &str) -> Result<String, SopsError> {
    age::x25519::Identity::from_str(secret_key.trim())
        .map(|id| id.to_public().to_string())
        .map_err(|e| key_err("age secret key", e))
}

/// Converts an OpenSSH ed25519 private key to its age key pair, exactly like ssh-to-age.
pub fn ssh_ed25519_to_age(openssh_private_key: &str) -> Result<AgeKeypair, SopsError> {
    parse_ssh_identity("ssh private key", openssh_private_key)?;
    let seed = ed25519_seed(openssh_private_key)
        .ok_or_else(|| key_err("ssh private key", "not an ed25519 key"))?;
    Ok(x25519_from_seed(&seed))
}

/// Converts an `ssh-ed25519 AAAA… [comment]` public key to its `age1…` recipient (ssh-to-age).
pub fn ssh_ed25519_public_to_age(openssh_public_key: &str) -> Result<String, SopsError> {
    use base64::Engine;
    let src = "ssh public key";
    let mut fields = openssh_public_key.split_whitespace();
    if fields.next() != Some("ssh-ed25519") {
        return Err(key_err(src, "not an ssh-ed25519 public key"));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(
            fields
                .next()
                .ok_or_else(|| key_err(src, "missing key data"))?,
        )
        .map_err(|_| key_err(src, "key data is not base64"))?;
    // string "ssh-ed25519", string key(32)
    let read = |b: &[u8], at: usize| -> Option<(Vec<u8>, usize)> {
        let len = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        Some((b.get(at + 4..at + 4 + len)?.to_vec(), at + 4 + len))
    };
    let (kind, at) = read(&blob, 0).ok_or_else(|| key_err(src, "truncated key data"))?;
    let (key, end) = read(&blob, at).ok_or_else(|| key_err(src, "truncated key data"))?;
    if kind != b"ssh-ed25519" || key.len() != 32 || end != blob.len() {
        return Err(key_err(src, "malformed ssh-ed25519 key data"));
    }
    let point = curve25519_dalek::edwards::CompressedEdwardsY::from_slice(&key)
        .map_err(|_| key_err(src, "malformed ed25519 point"))?
        .decompress()
        .ok_or_else(|| key_err(src, "the ed25519 public key is not a valid curve point"))?;
    let u = point.to_montgomery().to_bytes();
    Ok(bech32::encode("age", u.to_base32(), Variant::Bech32).expect("valid human-readable part"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Throwaway test key (ssh-keygen -t ed25519), never used anywhere else.
    const TEST_SSH_KEY: &str = include_str!("../../../tests/fixtures/test-ssh-ed25519");
    const TEST_SSH_PUB: &str = include_str!("../../../tests/fixtures/test-ssh-ed25519.pub");

    #[test]
    fn generated_keys_roundtrip() {
        let kp = generate_age_keypair();
        assert!(kp.secret.expose().starts_with("AGE-SECRET-KEY-1"));
        assert_eq!(age_recipient_of(kp.secret.expose()).unwrap(), kp.recipient);
        let mut k = Keyring::new();
        k.add_age_keys_str(&format!("# comment\n\n{}\n", kp.secret.expose()))
            .unwrap();
        assert_eq!(k.recipients(), vec![kp.recipient]);
        assert!(k.add_age_keys_str("garbage").is_err());
    }

    /// A passphrase-protected identity file holding `secret`, armored like `age -p -a` writes it
    /// (with a small scrypt work factor to keep the test fast).
    fn protect(secret: &str, passphrase: &str) -> Vec<u8> {
        use std::io::Write;
        let mut r = age::scrypt::Recipient::new(passphrase.to_string().into());
        r.set_work_factor(10);
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .unwrap();
        let mut w = enc.wrap_output(armor).unwrap();
        w.write_all(format!("# created: test\n{secret}\n").as_bytes())
            .unwrap();
        w.finish().unwrap().finish().unwrap();
        out
    }

    /// A sops YAML file encrypted to `recipients`.
    fn sops_file(recipients: &[String]) -> crate::sops::EncryptedFile {
        use crate::sops::file::{EncryptOptions, KeyGroups};
        use crate::sops::store::Format;
        let tree = crate::sops::tree::Tree::parse(b"a: secret\n", Format::Yaml).unwrap();
        let opts = EncryptOptions {
            key_groups: KeyGroups::single(recipients.to_vec()),
            ..EncryptOptions::default()
        };
        crate::sops::EncryptedFile::encrypt(&tree, Format::Yaml, &opts).unwrap()
    }

    /// A keyring answering `passphrase` and counting how often it was asked.
    fn asking(
        passphrase: &'static str,
    ) -> (Keyring, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = asked.clone();
        let k = Keyring::asking_with(move |prompt| {
            assert!(
                prompt.contains("id.age") || prompt.contains("id_ed25519"),
                "{prompt}"
            );
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(SecretString::new(passphrase.to_string()))
        });
        (k, asked)
    }

    #[test]
    fn protected_identity_file_is_opened_once_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let (inside, plain) = (generate_age_keypair(), generate_age_keypair());
        let path = d.path().join("id.age");
        std::fs::write(&path, protect(inside.secret.expose(), "right horse")).unwrap();

        let (mut k, asked) = asking("right horse");
        k.add_age_key_file(&path).unwrap();
        k.add_age_keys_str(plain.secret.expose()).unwrap();
        // A file the plain key opens: the passphrase is not asked for.
        sops_file(std::slice::from_ref(&plain.recipient))
            .decrypt(&k)
            .unwrap();
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(k.recipients(), std::slice::from_ref(&plain.recipient));
        // Files only the protected key opens: asked once, for all of them.
        for _ in 0..3 {
            let tree = sops_file(std::slice::from_ref(&inside.recipient))
                .decrypt(&k)
                .unwrap();
            assert_eq!(
                tree.emit(crate::sops::store::Format::Yaml)
                    .unwrap()
                    .expose(),
                b"a: secret\n"
            );
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(k.recipients(), [plain.recipient, inside.recipient]);
    }

    #[test]
    fn protected_identity_file_errors_name_the_file_and_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let inside = generate_age_keypair();
        let path = d.path().join("id.age");
        std::fs::write(&path, protect(inside.secret.expose(), "right horse")).unwrap();
        let file = sops_file(std::slice::from_ref(&inside.recipient));

        let (mut k, asked) = asking("wrong horse");
        k.add_age_key_file(&path).unwrap();
        let e = file.decrypt(&k).unwrap_err().to_string();
        assert!(
            e.contains("id.age") && e.contains("incorrect passphrase"),
            "{e}"
        );
        // A wrong passphrase is not asked again for the next key or file.
        assert!(file.decrypt(&k).is_err());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

        let mut k = Keyring::asking_with(|_| Err(std::io::Error::other("no terminal")));
        k.add_age_key_file(&path).unwrap();
        let e = file.decrypt(&k).unwrap_err().to_string();
        assert!(e.contains("cannot be asked for: no terminal"), "{e}");
        assert!(!e.contains("AGE-SECRET-KEY"), "{e}");

        // Unattended keyrings (the host installer) refuse the file up front.
        let e = Keyring::new()
            .add_age_key_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("passphrase-protected") && e.contains("unattended"),
            "{e}"
        );
    }

    #[test]
    fn protected_ssh_key_is_asked_for_only_for_files_encrypted_to_it() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::OsRng;
        let key = ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap();
        let native = key.public_key().to_openssh().unwrap();
        let converted = ssh_ed25519_public_to_age(&native).unwrap();
        let sealed = key.encrypt(&mut rng, "right horse").unwrap();
        let path = d.path().join("id_ed25519");
        std::fs::write(&path, sealed.to_openssh(ssh_key::LineEnding::LF).unwrap()).unwrap();
        let (other, plain) = (generate_age_keypair(), generate_age_keypair());

        let (mut k, asked) = asking("right horse");
        k.add_ssh_key_file(&path).unwrap();
        let e = sops_file(std::slice::from_ref(&other.recipient))
            .decrypt(&k)
            .unwrap_err();
        assert!(matches!(e, SopsError::NoKey { .. }), "{e}");
        k.add_age_keys_str(plain.secret.expose()).unwrap();
        sops_file(&[plain.recipient.clone(), converted.clone()])
            .decrypt(&k)
            .unwrap();
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Encrypted to the key (ssh-to-age form, then native form): asked once for both.
        let native_recipient = native
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        for r in [converted, native_recipient] {
            sops_file(&[r]).decrypt(&k).unwrap();
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (mut k, _) = asking("wrong horse");
        k.add_ssh_key_file(&path).unwrap();
        let e = sops_file(&[ssh_ed25519_public_to_age(&native).unwrap()])
            .decrypt(&k)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("id_ed25519") && e.contains("incorrect passphrase"),
            "{e}"
        );
        let e = Keyring::new()
            .add_ssh_key_file(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unattended"), "{e}");
    }

    #[test]
    fn ssh_conversion_private_and_public_agree() {
        let kp = ssh_ed25519_to_age(TEST_SSH_KEY).unwrap();
        assert_eq!(
            ssh_ed25519_public_to_age(TEST_SSH_PUB).unwrap(),
            kp.recipient
        );
        assert_eq!(age_recipient_of(kp.secret.expose()).unwrap(), kp.recipient);
        assert!(ssh_ed25519_public_to_age("ssh-rsa AAAA").is_err());
    }
}
