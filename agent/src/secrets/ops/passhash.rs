//! Login password hashes for `password-hash` secrets (NixOS `users.users.<name>.hashedPasswordFile`
//! reads a crypt(3) hash, never a plaintext). A supplied password is hashed with SHA-512-crypt
//! (RustCrypto `sha-crypt`, 16-character salt from the OS CSPRNG); a supplied value that already
//! is a crypt hash (`$6$`, `$5$`, `$y$`, `$2b$`, `$2y$`) is kept after a format check.
//!
//! Must not log, format or return the password: errors name the problem, never the value (not
//! even part of it, except a known scheme id such as `$1$`).

use std::sync::LazyLock;

use rand::RngCore as _;
use rand::rngs::OsRng;
use regex::bytes::Regex;
use sha_crypt::{Algorithm, Params, PasswordHasher as _, PasswordVerifier as _, ShaCrypt};
use zeroize::Zeroizing;

use crate::fleet::validate::{DEFAULT_HASH_ROUNDS, MAX_HASH_ROUNDS, MIN_HASH_ROUNDS};
use crate::secret::SecretBytes;

/// Shortest password clawdlets hashes (a login password of a server reachable over SSH).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Errors turning an operator-supplied value into a stored hash. No variant carries the value.
#[derive(Debug, thiserror::Error)]
pub enum PassHashError {
    /// The password is shorter than `MIN_PASSWORD_CHARS`.
    #[error(
        "the password is too short ({len} characters; at least {MIN_PASSWORD_CHARS}); generate one with {{\"kind\": \"password-hash\", \"generate\": true}}"
    )]
    TooShort { len: usize },
    /// A NUL byte (crypt(3) stops at it) or a line break (no login prompt can take it).
    #[error(
        "the password contains a NUL byte or a line break, which crypt(3) and login prompts cannot take"
    )]
    BadChar,
    /// The value starts like a crypt hash of an accepted scheme but is not well formed.
    #[error(
        "the value starts like a {scheme} hash ('${id}$...') but is not a well-formed one; supply the password itself or the complete hash (no spaces or line breaks)"
    )]
    MalformedHash {
        id: &'static str,
        scheme: &'static str,
    },
    /// The value is a crypt hash of a weak or unsupported scheme.
    #[error(
        "'${id}$' ({scheme}) hashes are not accepted: {why}; supply the password itself (clawdlets stores its SHA-512-crypt hash) or a $6$, $y$ or $2b$ hash"
    )]
    Unsupported {
        id: &'static str,
        scheme: &'static str,
        why: &'static str,
    },
    /// `rounds` outside the accepted range (the fleet validator checks it first).
    #[error(
        "sha-512-crypt rounds must be between {MIN_HASH_ROUNDS} and {MAX_HASH_ROUNDS} (got {0})"
    )]
    Rounds(u32),
    /// The hashing library failed (should not happen with valid parameters).
    #[error("sha-512-crypt failed: {0}")]
    Hash(String),
}

impl PassHashError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            PassHashError::TooShort { .. } => "password_too_short",
            PassHashError::BadChar => "password_bad_char",
            PassHashError::MalformedHash { .. } => "password_hash_malformed",
            PassHashError::Unsupported { .. } => "password_hash_unsupported",
            PassHashError::Rounds(_) => "password_hash_rounds",
            PassHashError::Hash(_) => "password_hash_failed",
        }
    }
}

/// What `prepare` did with the supplied value (for the plan note; never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A password, now stored as its SHA-512-crypt hash.
    Hashed,
    /// Already a crypt hash of this scheme: stored as it is.
    Kept(&'static str),
}

impl Prepared {
    pub fn describe(self) -> String {
        match self {
            Prepared::Hashed => "stored as its sha-512-crypt hash".into(),
            Prepared::Kept(scheme) => format!("an existing {scheme} hash, stored as is"),
        }
    }
}

/// A crypt(3) scheme: its MCF id, name, and the full-string format when accepted.
struct Scheme {
    id: &'static str,
    name: &'static str,
    /// `Ok(format)` for accepted schemes, `Err(why)` for refused ones.
    format: Result<&'static LazyLock<Regex>, &'static str>,
}

// Salt and hash characters of crypt(3)'s base64 ("./0-9A-Za-z").
static SHA512: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$6\$(rounds=([0-9]{1,9})\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$").unwrap()
});
static SHA256: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$5\$(rounds=([0-9]{1,9})\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}$").unwrap()
});
static YESCRYPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$y\$[./0-9A-Za-z]{1,32}\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43}$").unwrap()
});
static BCRYPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$2[by]\$(0[4-9]|[12][0-9]|3[01])\$[./0-9A-Za-z]{53}$").unwrap()
});

/// Every MCF id a crypt(3) hash may start with. A value starting with one of these is treated as
/// a hash (accepted or refused), never hashed again as if it were a password.
const SCHEMES: &[Scheme] = &[
    Scheme {
        id: "6",
        name: "sha-512-crypt",
        format: Ok(&SHA512),
    },
    Scheme {
        id: "5",
        name: "sha-256-crypt",
        format: Ok(&SHA256),
    },
    Scheme {
        id: "y",
        name: "yescrypt",
        format: Ok(&YESCRYPT),
    },
    Scheme {
        id: "2b",
        name: "bcrypt",
        format: Ok(&BCRYPT),
    },
    Scheme {
        id: "2y",
        name: "bcrypt",
        format: Ok(&BCRYPT),
    },
    Scheme {
        id: "2a",
        name: "bcrypt",
        format: Err("the $2a$ variant is ambiguous about non-ASCII passwords; rehash as $2b$"),
    },
    Scheme {
        id: "2x",
        name: "bcrypt",
        format: Err("the $2x$ variant marks hashes made by a buggy implementation"),
    },
    Scheme {
        id: "2",
        name: "bcrypt",
        format: Err("the original $2$ bcrypt is obsolete"),
    },
    Scheme {
        id: "1",
        name: "md5-crypt",
        format: Err("MD5-crypt is too fast to resist offline guessing"),
    },
    Scheme {
        id: "3",
        name: "NT hash",
        format: Err("unsalted NT hashes are too weak"),
    },
    Scheme {
        id: "gy",
        name: "gost-yescrypt",
        format: Err("not enabled in NixOS's default PAM configuration"),
    },
    Scheme {
        id: "7",
        name: "scrypt",
        format: Err("not enabled in NixOS's default PAM configuration"),
    },
    Scheme {
        id: "sha1",
        name: "sha1-crypt",
        format: Err("a legacy NetBSD scheme"),
    },
    Scheme {
        id: "md5",
        name: "sun-md5",
        format: Err("a legacy Solaris scheme"),
    },
];

/// When `value` starts like a crypt(3) hash (`$<known id>$`): `Some(Ok(scheme name))` for a
/// well-formed hash of an accepted scheme, `Some(Err(..))` for a refused or malformed one;
/// `None` when it does not look like a hash at all (then it is a password).
pub fn check_crypt_hash(value: &[u8]) -> Option<Result<&'static str, PassHashError>> {
    let scheme = SCHEMES.iter().find(|s| {
        value.len() > s.id.len() + 2
            && value[0] == b'$'
            && value[1..].starts_with(s.id.as_bytes())
            && value[1 + s.id.len()] == b'$'
    })?;
    Some(match scheme.format {
        Err(why) => Err(PassHashError::Unsupported {
            id: scheme.id,
            scheme: scheme.name,
            why,
        }),
        Ok(re) => match re.captures(value) {
            None => Err(PassHashError::MalformedHash {
                id: scheme.id,
                scheme: scheme.name,
            }),
            Some(c) => {
                // $5$/$6$ with rounds=: glibc clamps out-of-range values, so a hash written with
                // one would not verify the way its text says. Refuse it.
                let rounds_ok = c.get(2).is_none_or(|r| {
                    std::str::from_utf8(r.as_bytes())
                        .ok()
                        .and_then(|r| r.parse::<u32>().ok())
                        .is_some_and(|r| (Params::ROUNDS_MIN..=Params::ROUNDS_MAX).contains(&r))
                });
                if rounds_ok {
                    Ok(scheme.name)
                } else {
                    Err(PassHashError::MalformedHash {
                        id: scheme.id,
                        scheme: scheme.name,
                    })
                }
            }
        },
    })
}

/// The SHA-512-crypt hash of `password` with a fresh 16-character salt. With the default 5000
/// rounds the string is `$6$<salt>$<hash>` (what `mkpasswd -m sha-512` prints); otherwise
/// `$6$rounds=<n>$<salt>$<hash>`.
pub fn hash_password(password: &[u8], rounds: u32) -> Result<SecretBytes, PassHashError> {
    if !(MIN_HASH_ROUNDS..=MAX_HASH_ROUNDS).contains(&rounds) {
        return Err(PassHashError::Rounds(rounds));
    }
    let params = Params::new(rounds).map_err(|_| PassHashError::Rounds(rounds))?;
    // 12 random bytes encode to exactly 16 crypt-base64 characters, the longest salt SHA-crypt uses.
    let mut salt = Zeroizing::new([0u8; 12]);
    OsRng.fill_bytes(&mut *salt);
    let hash = ShaCrypt::new(Algorithm::Sha512Crypt, params)
        .hash_password_with_salt(password, &*salt)
        .map_err(|e| PassHashError::Hash(e.to_string()))?;
    let text: &str = hash.as_ref();
    let out = if rounds == DEFAULT_HASH_ROUNDS {
        // Without a rounds field crypt(3) uses 5000: the same hash, in its canonical form.
        text.replacen("$rounds=5000$", "$", 1)
    } else {
        text.to_string()
    };
    Ok(SecretBytes::new(out.into_bytes()))
}

/// Turns an operator-supplied value of a `password-hash` secret into the value to store: an
/// accepted crypt hash as is, otherwise a password (checked) hashed with `rounds`.
pub fn prepare(value: &SecretBytes, rounds: u32) -> Result<(SecretBytes, Prepared), PassHashError> {
    if let Some(checked) = check_crypt_hash(value.expose()) {
        let scheme = checked?;
        return Ok((value.clone(), Prepared::Kept(scheme)));
    }
    let v = value.expose();
    if v.iter().any(|b| matches!(b, 0 | b'\n' | b'\r')) {
        return Err(PassHashError::BadChar);
    }
    let len = String::from_utf8_lossy(v).chars().count();
    if len < MIN_PASSWORD_CHARS {
        return Err(PassHashError::TooShort { len });
    }
    Ok((hash_password(v, rounds)?, Prepared::Hashed))
}

/// Whether `password` matches a `$6$`/`$5$` hash (the `sha-crypt` verifier, constant time).
/// Other schemes (and malformed hashes) never match here.
pub fn verify(password: &[u8], hash: &[u8]) -> bool {
    let Ok(hash) = std::str::from_utf8(hash) else {
        return false;
    };
    ShaCrypt::default().verify_password(password, hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "correct horse battery staple";

    fn s(v: &SecretBytes) -> &str {
        std::str::from_utf8(v.expose()).unwrap()
    }

    #[test]
    fn hash_is_sha512_crypt_with_a_16_char_salt_and_verifies() {
        let h = hash_password(PW.as_bytes(), DEFAULT_HASH_ROUNDS).unwrap();
        let text = s(&h);
        assert!(SHA512.is_match(text.as_bytes()), "{text}");
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(fields.len(), 4, "default rounds: no rounds= field: {text}");
        assert_eq!(fields[1], "6");
        assert_eq!(fields[2].len(), 16);
        assert_eq!(fields[3].len(), 86);
        assert!(verify(PW.as_bytes(), h.expose()));
        assert!(!verify(b"correct horse battery stapler", h.expose()));
        // The sha-crypt verifier directly, as a PAM-side check would.
        ShaCrypt::default()
            .verify_password(PW.as_bytes(), text)
            .unwrap();
        // Fresh salt every time.
        let h2 = hash_password(PW.as_bytes(), DEFAULT_HASH_ROUNDS).unwrap();
        assert_ne!(h.expose(), h2.expose());
        // The hash never contains the password.
        assert!(!text.contains(PW));
    }

    #[test]
    fn stronger_rounds_are_written_and_verify() {
        let h = hash_password(PW.as_bytes(), 6000).unwrap();
        assert!(s(&h).starts_with("$6$rounds=6000$"), "{}", s(&h));
        assert!(SHA512.is_match(h.expose()));
        assert!(verify(PW.as_bytes(), h.expose()));
        assert!(matches!(
            hash_password(PW.as_bytes(), 1000),
            Err(PassHashError::Rounds(1000))
        ));
    }

    #[test]
    fn verifies_a_hash_made_by_glibc_crypt() {
        // The SHA-crypt specification's test vector (as glibc's crypt(3) and `openssl passwd -6` print it).
        let glibc = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify(b"Hello world!", glibc.as_bytes()));
        assert!(!verify(b"Hello world?", glibc.as_bytes()));
        assert_eq!(
            check_crypt_hash(glibc.as_bytes()).unwrap().unwrap(),
            "sha-512-crypt"
        );
        let rounds = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";
        assert!(verify(b"Hello world!", rounds.as_bytes()));
    }

    #[test]
    fn an_existing_hash_is_kept_byte_for_byte() {
        // Made by glibc/libxcrypt crypt(3) (the last two of "pw12345678").
        let hashes = [
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$.3PFyKl9LaVkmGGUtYhoTaXWsmDmJDamIF77y.E0et4",
            "$2b$12$GhvMmNVjRW29ulnudl.LbuVKI1B5I5gBXc7r2pLuLDLlwdY2p7ZF2",
        ];
        for h in hashes {
            let (v, how) = prepare(&SecretBytes::from(h), DEFAULT_HASH_ROUNDS).unwrap();
            assert_eq!(v.expose(), h.as_bytes());
            assert!(matches!(how, Prepared::Kept(_)), "{h}");
        }
        assert_eq!(
            prepare(&SecretBytes::from(hashes[2]), DEFAULT_HASH_ROUNDS)
                .unwrap()
                .1,
            Prepared::Kept("yescrypt")
        );
    }

    #[test]
    fn weak_malformed_and_truncated_hashes_are_refused_without_echoing_them() {
        let cases = [
            (
                "$1$abcdefgh$0123456789abcdefghij01",
                "password_hash_unsupported",
            ),
            (
                "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
                "password_hash_unsupported",
            ),
            (
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHW",
                "password_hash_malformed",
            ),
            (
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1 ",
                "password_hash_malformed",
            ),
            (
                "$6$rounds=999$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
                "password_hash_malformed",
            ),
            ("$y$j9T$salt", "password_hash_malformed"),
            ("$2b$12$tooShort", "password_hash_malformed"),
        ];
        for (v, kind) in cases {
            let e = prepare(&SecretBytes::from(v), DEFAULT_HASH_ROUNDS).unwrap_err();
            assert_eq!(e.kind(), kind, "{v}");
            let msg = e.to_string();
            let tail = &v[4..];
            assert!(!msg.contains(tail), "error echoes the value: {msg}");
        }
    }

    #[test]
    fn a_password_is_hashed_and_bad_passwords_are_refused_without_echoing_them() {
        let (v, how) = prepare(&SecretBytes::from(PW), DEFAULT_HASH_ROUNDS).unwrap();
        assert_eq!(how, Prepared::Hashed);
        assert!(s(&v).starts_with("$6$"));
        assert!(verify(PW.as_bytes(), v.expose()));
        // A password that merely starts with '$' is a password.
        let (v, how) = prepare(&SecretBytes::from("$ecret-Passw0rd"), DEFAULT_HASH_ROUNDS).unwrap();
        assert_eq!(how, Prepared::Hashed);
        assert!(verify(b"$ecret-Passw0rd", v.expose()));

        for (bad, kind) in [
            ("abc12", "password_too_short"),
            ("line\nbreak-password", "password_bad_char"),
            ("nul\0byte-password", "password_bad_char"),
        ] {
            let e = prepare(&SecretBytes::from(bad), DEFAULT_HASH_ROUNDS).unwrap_err();
            assert_eq!(e.kind(), kind);
            assert!(!e.to_string().contains(bad));
        }
        // Length counts characters, not bytes.
        assert!(prepare(&SecretBytes::from("ääääääää"), DEFAULT_HASH_ROUNDS).is_ok());
        assert!(prepare(&SecretBytes::from("äääääää"), DEFAULT_HASH_ROUNDS).is_err());
    }

    #[test]
    fn debug_of_a_prepared_value_is_redacted() {
        let (v, _) = prepare(&SecretBytes::from(PW), DEFAULT_HASH_ROUNDS).unwrap();
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("$6$") && !dbg.contains(PW), "{dbg}");
    }
}
