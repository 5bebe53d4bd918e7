//! Secret value generation from the OS CSPRNG (`getrandom` via `OsRng`), one function per value
//! kind of the fleet config. Returns values in `SecretBytes`; public halves (SSH, WireGuard) are
//! returned separately because they may be printed. Must not log or format any value.

use base64::Engine as _;
use rand::Rng as _;
use rand::RngCore as _;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::fleet::ValueSpec;
use crate::fleet::validate::{DEFAULT_HASH_ROUNDS, DEFAULT_PASSWORD_HASH_LENGTH};
use crate::secret::SecretBytes;

/// A freshly generated value and, for key pairs, its public half.
#[derive(Debug)]
pub struct Generated {
    pub value: SecretBytes,
    /// OpenSSH public key line or WireGuard public key: safe to print.
    pub public: Option<String>,
    /// A generated login password whose hash is `value`: the operator sees it once (on a
    /// terminal, after the plan is applied); it is stored nowhere.
    pub shown_once: Option<SecretBytes>,
}

/// Errors generating a value.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// `provided` values (and `password-hash` without `generate`) come from the operator.
    #[error("secret kind '{0}' is supplied by the operator and has no generator")]
    Provided(&'static str),
    /// The SSH key library failed (should not happen with a working OS RNG).
    #[error("cannot generate ssh key: {0}")]
    Ssh(String),
    /// Hashing a generated login password failed.
    #[error(transparent)]
    PasswordHash(#[from] super::passhash::PassHashError),
}

impl GenerateError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            GenerateError::Provided(_) => "generate_provided",
            GenerateError::Ssh(_) => "generate_ssh",
            GenerateError::PasswordHash(e) => e.kind(),
        }
    }
}

/// Generates a value for `spec`. `comment` labels SSH keys (e.g. "fleet-1/deploy_key").
pub fn generate(spec: &ValueSpec, comment: &str) -> Result<Generated, GenerateError> {
    let plain = |value| Generated {
        value,
        public: None,
        shown_once: None,
    };
    Ok(match spec {
        ValueSpec::Provided
        | ValueSpec::PasswordHash {
            generate: false, ..
        } => return Err(GenerateError::Provided(spec.kind())),
        ValueSpec::Hex { bytes } => plain(SecretBytes::new(
            hex::encode(random_bytes(*bytes)).into_bytes(),
        )),
        ValueSpec::Base64 { bytes } => plain(SecretBytes::new(
            base64::engine::general_purpose::STANDARD
                .encode(random_bytes(*bytes))
                .into_bytes(),
        )),
        ValueSpec::Password { length } => plain(password(*length as usize)),
        ValueSpec::PasswordHash {
            generate: true,
            length,
            rounds,
        } => {
            let pw = password(length.unwrap_or(DEFAULT_PASSWORD_HASH_LENGTH) as usize);
            let hash =
                super::passhash::hash_password(pw.expose(), rounds.unwrap_or(DEFAULT_HASH_ROUNDS))?;
            Generated {
                value: hash,
                public: None,
                shown_once: Some(pw),
            }
        }
        ValueSpec::SshEd25519 => ssh_ed25519(comment)?,
        ValueSpec::Wireguard => wireguard(),
    })
}

fn random_bytes(n: u32) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; n as usize]);
    OsRng.fill_bytes(&mut buf);
    buf
}

const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Uniformly random characters from [A-Za-z0-9] (5.95 bits each; 24 chars ≈ 143 bits).
/// Alphanumeric only so the value survives shells, YAML, env files and URLs unquoted.
pub fn password(length: usize) -> SecretBytes {
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        // gen_range is unbiased (rejection sampling).
        out.push(PASSWORD_ALPHABET[OsRng.gen_range(0..PASSWORD_ALPHABET.len())]);
    }
    SecretBytes::new(out)
}

/// An ed25519 key pair: the OpenSSH private key (PEM-like text, LF line endings) and the
/// `ssh-ed25519 AAAA... comment` public line.
pub fn ssh_ed25519(comment: &str) -> Result<Generated, GenerateError> {
    let mut key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(|e| GenerateError::Ssh(e.to_string()))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| GenerateError::Ssh(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| GenerateError::Ssh(e.to_string()))?;
    Ok(Generated {
        value: SecretBytes::new(private.as_bytes().to_vec()),
        public: Some(public),
        shown_once: None,
    })
}

/// A WireGuard private key exactly like `wg genkey`: 32 random bytes clamped as an X25519 scalar,
/// base64. The public key is `wg pubkey` of it.
pub fn wireguard() -> Generated {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut *raw);
    raw[0] &= 248;
    raw[31] &= 127;
    raw[31] |= 64;
    let secret = x25519_dalek::StaticSecret::from(*raw);
    let public = x25519_dalek::PublicKey::from(&secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    Generated {
        value: SecretBytes::new(b64.encode(secret.to_bytes()).into_bytes()),
        public: Some(b64.encode(public.as_bytes())),
        shown_once: None,
    }
}

/// The public key of a WireGuard private key (base64), for display after rotation.
pub fn wireguard_public(private_b64: &[u8]) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = Zeroizing::new(b64.decode(private_b64).ok()?);
    let arr: [u8; 32] = raw.as_slice().try_into().ok()?;
    let secret = x25519_dalek::StaticSecret::from(arr);
    Some(b64.encode(x25519_dalek::PublicKey::from(&secret).as_bytes()))
}

/// The OpenSSH public line of an OpenSSH private key.
pub fn ssh_public(private_openssh: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(private_openssh).ok()?;
    let key = ssh_key::PrivateKey::from_openssh(text).ok()?;
    key.public_key().to_openssh().ok()
}

/// The public half of a value of kind `spec`, when it has one.
pub fn public_of(spec: &ValueSpec, value: &[u8]) -> Option<String> {
    match spec {
        ValueSpec::SshEd25519 => ssh_public(value),
        ValueSpec::Wireguard => wireguard_public(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_have_the_declared_entropy() {
        let g = generate(&ValueSpec::Hex { bytes: 32 }, "").unwrap();
        assert_eq!(g.value.len(), 64);
        assert!(g.value.expose().iter().all(|c| c.is_ascii_hexdigit()));
        let g2 = generate(&ValueSpec::Hex { bytes: 32 }, "").unwrap();
        assert_ne!(g.value.expose(), g2.value.expose());
        let g = generate(&ValueSpec::Base64 { bytes: 32 }, "").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(g.value.expose())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn password_uses_whole_alphabet_uniformly() {
        let p = password(24);
        assert_eq!(p.len(), 24);
        assert!(p.expose().iter().all(u8::is_ascii_alphanumeric));
        // 62 symbols over 62_000 draws: every symbol appears, none wildly off.
        let big = password(62_000);
        let mut counts = [0usize; 256];
        for b in big.expose() {
            counts[*b as usize] += 1;
        }
        for c in PASSWORD_ALPHABET {
            assert!(
                (700..1300).contains(&counts[*c as usize]),
                "{} {}",
                *c as char,
                counts[*c as usize]
            );
        }
    }

    #[test]
    fn generated_login_password_is_stored_only_as_its_hash() {
        let spec = ValueSpec::PasswordHash {
            generate: true,
            length: Some(20),
            rounds: None,
        };
        let g = generate(&spec, "fleet-1/admin_password_hash").unwrap();
        let pw = g.shown_once.expect("the password is shown once");
        assert_eq!(pw.len(), 20);
        assert!(g.value.expose().starts_with(b"$6$"));
        assert!(super::super::passhash::verify(
            pw.expose(),
            g.value.expose()
        ));
        let stored = String::from_utf8(g.value.expose().to_vec()).unwrap();
        assert!(!stored.contains(std::str::from_utf8(pw.expose()).unwrap()));
        assert!(g.public.is_none(), "nothing public to print");

        let supplied = ValueSpec::PasswordHash {
            generate: false,
            length: None,
            rounds: None,
        };
        assert_eq!(
            generate(&supplied, "x").unwrap_err().kind(),
            "generate_provided"
        );
    }

    #[test]
    fn ssh_key_roundtrips_and_public_matches() {
        let g = ssh_ed25519("fleet-1/deploy_key").unwrap();
        let text = std::str::from_utf8(g.value.expose()).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let public = g.public.unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA") && public.ends_with(" fleet-1/deploy_key"));
        assert_eq!(ssh_public(g.value.expose()).unwrap(), public);
    }

    #[test]
    fn wireguard_key_is_clamped_and_public_matches() {
        let g = wireguard();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(g.value.expose())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert_eq!(
            wireguard_public(g.value.expose()).unwrap(),
            g.public.unwrap()
        );
        // RFC 7748 test vector: Alice's key.
        let alice = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(alice);
        let pubk = base64::engine::general_purpose::STANDARD
            .decode(wireguard_public(b64.as_bytes()).unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(pubk),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
