//! The value cipher: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` parsing, formatting, AES-256-GCM
//! with sops' 32-byte IV, and the typed plaintext renderings (`str`, `int`, `float`, `bool`,
//! `time`, `comment`, `bytes`) that both encryption and the MAC use.
//!
//! It keeps a "stash" of the IV each (plaintext, AAD) pair was decrypted with, so re-encrypting an
//! unchanged value yields the identical ciphertext (minimal diffs), like sops. It never logs and
//! never puts a plaintext value into an error.

use std::collections::HashMap;
#[cfg(test)]
use std::sync::LazyLock;

use aes_gcm::aead::consts::{U12, U32};
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
#[cfg(test)]
use regex::Regex;
use zeroize::Zeroizing;

use super::tree::Value;
use crate::secret::SecretBytes;

/// AES-256-GCM with the 32-byte nonce sops uses (GHASH derives the counter block).
type SopsGcm = AesGcm<Aes256, U32>;
/// Standard 12-byte nonce GCM, accepted on decrypt for hand-made or foreign files.
type StdGcm = AesGcm<Aes256, U12>;

const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// sops' own pattern: prefix anchored, greedy groups, end not anchored. `split_fields` computes
/// the same captures without a regex engine (it is on the hot path); a proptest checks them equal.
#[cfg(test)]
static ENC_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]").expect("valid regex")
});

const ENC_PREFIX: &str = "ENC[AES256_GCM,data:";

/// The four captures of sops' greedy pattern. `.` stops at a newline, so only the first line
/// counts; each greedy group ends at the last separator that still lets the rest match, found
/// right to left: the last `]`, the last `,type:` before it (one char at least in between), the
/// last `,tag:` before that, the last `,iv:` before that.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn split_fields(s: &str) -> Option<[&str; 4]> {
    let rest = s.strip_prefix(ENC_PREFIX)?;
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    // Each separator must lie wholly before the previous one's position minus one character
    // (the group between them is `.+`).
    // Byte positions: the separators are ASCII, so every cut below is a char boundary.
    let b = line.as_bytes();
    let r = rfind(b, b"]")?;
    let t = rfind(&b[..r.checked_sub(1)?], b",type:")?;
    let g = rfind(&b[..t.checked_sub(1)?], b",tag:")?;
    let v = rfind(&b[..g.checked_sub(1)?], b",iv:").filter(|&v| v >= 1)?;
    Some([
        &line[..v],
        &line[v + 4..g],
        &line[g + 5..t],
        &line[t + 6..r],
    ])
}

/// A parsed `ENC[...]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncValue {
    pub data: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub kind: String,
}

/// True when `s` looks like an encrypted value (cheap prefix test).
pub fn is_enc(s: &[u8]) -> bool {
    s.starts_with(b"ENC[AES256_GCM,")
}

impl EncValue {
    /// Parses an `ENC[...]` string exactly as sops does. The error never echoes the value.
    pub fn parse(s: &str) -> Result<EncValue, String> {
        let [data, iv, tag, kind] = split_fields(s)
            .ok_or_else(|| "value is not an ENC[AES256_GCM,...] string".to_string())?;
        let field = |text: &str, name: &str| {
            B64.decode(text)
                .map_err(|e| format!("invalid base64 in {name}: {e}"))
        };
        Ok(EncValue {
            data: field(data, "data")?,
            iv: field(iv, "iv")?,
            tag: field(tag, "tag")?,
            kind: kind.to_string(),
        })
    }

    /// Renders the value as sops writes it.
    pub fn format(&self) -> String {
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
            B64.encode(&self.data),
            B64.encode(&self.iv),
            B64.encode(&self.tag),
            self.kind
        )
    }
}

/// Go `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits, never an exponent.
pub fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".to_string()
        } else {
            "-Inf".to_string()
        }
    } else {
        // Rust's Display for f64 prints the shortest representation that round-trips, in
        // positional notation: the same digits Go produces with 'f' and precision -1.
        format!("{f}")
    }
}

/// Go `strconv.ParseBool`.
pub fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go `time.Time.MarshalText` (RFC 3339 with nanoseconds, trailing zeros trimmed) of an RFC 3339
/// text; the text unchanged when it does not parse.
pub fn go_time_text(s: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) else {
        return s.to_string();
    };
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push_str(&go_offset(t.offset()));
    out
}

/// Go's `Z07:00` rendering of an offset.
pub fn go_offset(off: time::UtcOffset) -> String {
    if off.is_utc() {
        return "Z".to_string();
    }
    let secs = off.whole_seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
}

/// The typed plaintext bytes of a scalar and its sops type name (`ToBytes` / `Cipher.Encrypt`).
/// `None` for maps, lists and null, which are never leaves.
pub fn plain_bytes(value: &Value) -> Option<(Zeroizing<Vec<u8>>, &'static str)> {
    let r = match value {
        Value::Str(s) => (Zeroizing::new(s.expose().to_vec()), "str"),
        Value::Int(i) => (Zeroizing::new(i.to_string().into_bytes()), "int"),
        Value::Float(f) => (Zeroizing::new(go_format_float(*f).into_bytes()), "float"),
        Value::Bool(b) => (
            Zeroizing::new(if *b {
                b"True".to_vec()
            } else {
                b"False".to_vec()
            }),
            "bool",
        ),
        Value::Time(t) => (Zeroizing::new(go_time_text(t).into_bytes()), "time"),
        Value::Comment(c) => (Zeroizing::new(c.as_bytes().to_vec()), "comment"),
        Value::Null | Value::Map(_) | Value::List(_) => return None,
    };
    Some(r)
}

/// Turns decrypted bytes of a given sops type back into a value (`Cipher.Decrypt`).
pub fn typed_value(mut bytes: Zeroizing<Vec<u8>>, kind: &str) -> Result<Value, String> {
    let text =
        || std::str::from_utf8(&bytes).map_err(|_| format!("decrypted {kind} value is not UTF-8"));
    Ok(match kind {
        // Moved, not copied: the Vec is owned by the zeroizing SecretBytes from here on.
        "str" | "bytes" => Value::Str(SecretBytes::new(std::mem::take(&mut *bytes))),
        "int" => Value::Int(
            text()?
                .parse::<i64>()
                .map_err(|_| "decrypted int value is not an integer".to_string())?,
        ),
        "float" => Value::Float(
            parse_go_float(text()?)
                .ok_or_else(|| "decrypted float value is not a number".to_string())?,
        ),
        "bool" => Value::Bool(
            go_parse_bool(text()?)
                .ok_or_else(|| "decrypted bool value is not a boolean".to_string())?,
        ),
        "time" => Value::Time(text()?.to_string()),
        "comment" => Value::Comment(text()?.to_string()),
        other => return Err(format!("unknown value type '{}'", other.escape_default())),
    })
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

/// Plaintext bytes, sops type name and IV of one decrypted value.
pub type Decrypted<'e> = (Zeroizing<Vec<u8>>, &'e str, Vec<u8>);

/// Key of the IV stash: the AAD plus the typed plaintext.
type StashKey = (String, &'static str, Vec<u8>);

/// Encrypts and decrypts values with one data key; remembers IVs of decrypted values.
pub struct Cipher {
    key: Zeroizing<[u8; 32]>,
    /// The expanded key, built once (it is the per-value hot path).
    gcm: Box<SopsGcm>,
    /// Whether `decrypt` remembers IVs (only needed before re-encrypting).
    record: bool,
    /// Plaintext of decrypted values keyed to their IV; wiped when the cipher is dropped.
    stash: HashMap<StashKey, Vec<u8>>,
}

impl Drop for Cipher {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for ((_, _, mut plain), _) in self.stash.drain() {
            plain.zeroize();
        }
    }
}

impl Cipher {
    /// A cipher that does not remember IVs (decrypt-only use).
    pub fn new(key: &[u8; 32]) -> Cipher {
        Cipher {
            key: Zeroizing::new(*key),
            gcm: Box::new(SopsGcm::new(key.into())),
            record: false,
            stash: HashMap::new(),
        }
    }

    /// A cipher whose `decrypt` remembers each value's IV, so that re-encrypting an unchanged
    /// value reproduces its ciphertext.
    pub fn with_stash(key: &[u8; 32]) -> Cipher {
        let mut c = Cipher::new(key);
        c.record = true;
        c
    }

    /// The data key this cipher uses.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Moves the stash over to a cipher with the same key (used after a decrypt, before writing).
    pub fn take_stash(&mut self, other: &mut Cipher) {
        if self.key[..] == other.key[..] {
            self.stash = std::mem::take(&mut other.stash);
        }
    }

    /// Encrypts one scalar under `aad`. Empty strings (and empty comments) are never encrypted:
    /// they come back as `""`, like sops.
    pub fn encrypt(&self, value: &Value, aad: &str) -> Result<String, String> {
        let (bytes, kind) =
            plain_bytes(value).ok_or_else(|| "only scalars can be encrypted".to_string())?;
        if bytes.is_empty() && matches!(value, Value::Str(_) | Value::Comment(_)) {
            return Ok(String::new());
        }
        let iv = match self.stash.get(&(aad.to_string(), kind, bytes.to_vec())) {
            Some(iv) => iv.clone(),
            None => {
                let mut iv = vec![0u8; NONCE_LEN];
                rand::rngs::OsRng.fill_bytes(&mut iv);
                iv
            }
        };
        self.encrypt_with_iv(&bytes, kind, aad, &iv)
    }

    /// Encrypts raw bytes of a given type with an explicit IV (32 bytes).
    pub fn encrypt_with_iv(
        &self,
        bytes: &[u8],
        kind: &str,
        aad: &str,
        iv: &[u8],
    ) -> Result<String, String> {
        let out = if iv.len() == NONCE_LEN {
            self.gcm.encrypt(
                Nonce::<U32>::from_slice(iv),
                Payload {
                    msg: bytes,
                    aad: aad.as_bytes(),
                },
            )
        } else if iv.len() == 12 {
            let gcm = StdGcm::new_from_slice(&self.key[..])
                .map_err(|_| "invalid data key length".to_string())?;
            gcm.encrypt(
                Nonce::<U12>::from_slice(iv),
                Payload {
                    msg: bytes,
                    aad: aad.as_bytes(),
                },
            )
        } else {
            return Err(format!("unsupported iv length {}", iv.len()));
        }
        .map_err(|_| "AES-GCM encryption failed".to_string())?;
        let (data, tag) = out.split_at(out.len() - TAG_LEN);
        Ok(EncValue {
            data: data.to_vec(),
            iv: iv.to_vec(),
            tag: tag.to_vec(),
            kind: kind.to_string(),
        }
        .format())
    }

    /// Decrypts raw bytes and the type name of one `ENC[...]` string, without remembering the IV.
    pub fn decrypt_raw<'e>(&self, enc: &'e str, aad: &str) -> Result<Decrypted<'e>, String> {
        let [data, iv, tag, kind] = split_fields(enc)
            .ok_or_else(|| "value is not an ENC[AES256_GCM,...] string".to_string())?;
        let b64 = |text: &str, name: &str| {
            B64.decode(text)
                .map_err(|e| format!("invalid base64 in {name}: {e}"))
        };
        // Decrypted in place: the buffer holding the ciphertext becomes the plaintext.
        let mut buf = Zeroizing::new(b64(data, "data")?);
        let iv = b64(iv, "iv")?;
        // The tag is decoded on the stack: anything but 16 bytes is refused.
        let mut tag_buf = [0u8; 24];
        let tag_len = B64
            .decode_slice(tag, &mut tag_buf)
            .map_err(|_| format!("tag must be {TAG_LEN} base64-encoded bytes"))?;
        if tag_len != TAG_LEN {
            return Err(format!("tag must be {TAG_LEN} bytes, found {tag_len}"));
        }
        let tag = aes_gcm::Tag::from_slice(&tag_buf[..TAG_LEN]);
        let aad_b = aad.as_bytes();
        match iv.len() {
            NONCE_LEN => self.gcm.decrypt_in_place_detached(
                Nonce::<U32>::from_slice(&iv),
                aad_b,
                &mut buf,
                tag,
            ),
            12 => StdGcm::new_from_slice(&self.key[..])
                .map_err(|_| "invalid data key length".to_string())?
                .decrypt_in_place_detached(Nonce::<U12>::from_slice(&iv), aad_b, &mut buf, tag),
            n => return Err(format!("unsupported iv length {n} (expected 32)")),
        }
        .map_err(|_| {
            "authentication failed: wrong data key, or the ciphertext, tag or key path was altered"
                .to_string()
        })?;
        Ok((buf, kind, iv))
    }

    /// Decrypts one value; `""` decrypts to `""`. Stashes the IV for minimal re-encryption diffs.
    pub fn decrypt(&mut self, enc: &str, aad: &str) -> Result<Value, String> {
        if enc.is_empty() {
            return Ok(Value::Str(SecretBytes::default()));
        }
        let (plain, kind, iv) = self.decrypt_raw(enc, aad)?;
        let value = typed_value(plain, kind)?;
        if self.record
            && let Some((bytes, k)) = plain_bytes(&value)
        {
            self.stash.insert((aad.to_string(), k, bytes.to_vec()), iv);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_rendering() {
        assert_eq!(go_format_float(5.0), "5");
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(1e-7), "0.0000001");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(
            go_format_float(12345678901234567890.0),
            "12345678901234567000"
        );
        assert_eq!(go_format_float(-0.0), "-0");
        assert_eq!(go_format_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn roundtrip_and_stash() {
        let mut c = Cipher::with_stash(&[7u8; 32]);
        let enc = c.encrypt(&Value::str("hunter2"), "a:b:").unwrap();
        assert!(enc.starts_with("ENC[AES256_GCM,data:"));
        assert!(enc.ends_with(",type:str]"));
        assert_eq!(c.decrypt(&enc, "a:b:").unwrap(), Value::str("hunter2"));
        // Same plaintext and AAD: same IV, identical ciphertext.
        assert_eq!(c.encrypt(&Value::str("hunter2"), "a:b:").unwrap(), enc);
        // Different AAD fails authentication.
        assert!(c.decrypt(&enc, "a:c:").is_err());
        assert_eq!(c.encrypt(&Value::str(""), "x:").unwrap(), "");
        let b = c.encrypt(&Value::Bool(true), "x:").unwrap();
        assert_eq!(c.decrypt(&b, "x:").unwrap(), Value::Bool(true));
        let f = c.encrypt(&Value::Float(1.5), "x:").unwrap();
        assert_eq!(c.decrypt(&f, "x:").unwrap(), Value::Float(1.5));
        let i = c.encrypt(&Value::Int(-42), "x:").unwrap();
        assert_eq!(c.decrypt(&i, "x:").unwrap(), Value::Int(-42));
    }

    #[test]
    fn malformed_values_are_errors() {
        let mut c = Cipher::new(&[7u8; 32]);
        for bad in [
            "ENC[",
            "ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]",
            "hello",
            "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
        ] {
            let err = c.decrypt(bad, "a:").unwrap_err();
            assert!(!err.contains("hello"));
        }
    }

    #[test]
    fn go_time() {
        assert_eq!(
            go_time_text("2001-12-14T21:59:43.10-05:00"),
            "2001-12-14T21:59:43.1-05:00"
        );
        assert_eq!(
            go_time_text("2001-12-14T21:59:43+00:00"),
            "2001-12-14T21:59:43Z"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Arbitrary text never panics the parser or the decryptor.
            #[test]
            fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
                let _ = EncValue::parse(&s);
                let mut c = Cipher::new(&[3u8; 32]);
                let _ = c.decrypt(&s, "a:");
            }

            /// Near-valid ENC strings (fields drawn from base64 and delimiter characters) never
            /// panic, whatever their lengths.
            #[test]
            fn near_valid_values_never_panic(
                d in "[A-Za-z0-9+/=,:\\]]{0,64}",
                iv in "[A-Za-z0-9+/=]{0,64}",
                tag in "[A-Za-z0-9+/=]{0,32}",
                kind in "[a-z\\]]{0,8}",
            ) {
                let s = format!("ENC[AES256_GCM,data:{d},iv:{iv},tag:{tag},type:{kind}]");
                let mut c = Cipher::new(&[3u8; 32]);
                let _ = c.decrypt(&s, "a:");
            }

            /// The hand-written splitter captures exactly what sops' regex captures.
            #[test]
            fn splitter_matches_sops_regex(
                parts in proptest::collection::vec("[a-zé=\\]\\n]{0,3}|,iv:|,tag:|,type:|\\]", 0..14),
            ) {
                let s = format!("ENC[AES256_GCM,data:{}", parts.concat());
                let expected = ENC_RE.captures(&s).map(|c| {
                    [1, 2, 3, 4].map(|i| c.get(i).map_or("", |m| m.as_str()).to_string())
                });
                let got = split_fields(&s).map(|a| a.map(str::to_string));
                prop_assert_eq!(got, expected, "{:?}", s);
            }

            /// format → parse is the identity.
            #[test]
            fn format_parse_roundtrip(
                data in proptest::collection::vec(any::<u8>(), 1..64),
                iv in proptest::collection::vec(any::<u8>(), 32),
                tag in proptest::collection::vec(any::<u8>(), 16),
                kind in "(str|int|float|bool|time|comment|bytes)",
            ) {
                let v = EncValue { data, iv, tag, kind };
                prop_assert_eq!(EncValue::parse(&v.format()).unwrap(), v);
            }

            /// Any scalar survives encrypt → decrypt with the same AAD, and fails with another.
            #[test]
            fn scalars_roundtrip(s in "\\PC{1,40}", i in any::<i64>(), f in any::<f64>().prop_filter("finite", |f| f.is_finite()), b in any::<bool>()) {
                let mut c = Cipher::new(&[9u8; 32]);
                for v in [Value::str(&s), Value::Int(i), Value::Float(f), Value::Bool(b)] {
                    let enc = c.encrypt(&v, "x:y:").unwrap();
                    prop_assert_eq!(&c.decrypt(&enc, "x:y:").unwrap(), &v);
                    prop_assert!(c.decrypt(&enc, "x:z:").is_err());
                }
            }
        }
    }
}
