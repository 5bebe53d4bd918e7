//! The tree walk shared by encryption, decryption and the MAC, mirroring sops' `walkBranch`:
//! depth-first in file order, the AAD path is the map keys only (list indices are not part of it),
//! comments feed the comment-regex rules, nulls are skipped, and every leaf (encrypted or not,
//! unless `mac_only_encrypted`) is hashed into the SHA-512 MAC in its typed text form.
//!
//! Errors name the key path (with list indices for humans) and never contain a value.

use regex::Regex;
use sha2::{Digest, Sha512};

use super::cipher::{Cipher, plain_bytes};
use super::error::SopsError;
use super::tree::{Map, MapItem, Tree, Value};

/// Which values get encrypted (sops' rules; at most one per file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EncryptionRule {
    /// No rule given: `unencrypted_suffix` `_unencrypted`.
    #[default]
    Default,
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(String),
    EncryptedRegex(String),
    UnencryptedCommentRegex(String),
    EncryptedCommentRegex(String),
}

/// sops' default `unencrypted_suffix`.
pub const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The 32 bytes SHA-256("sops") that start the MAC when `mac_only_encrypted` is set.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

impl EncryptionRule {
    /// The rule stored under metadata field `field` with value `text`.
    pub fn from_field(field: &str, text: String) -> EncryptionRule {
        match field {
            "unencrypted_suffix" => EncryptionRule::UnencryptedSuffix(text),
            "encrypted_suffix" => EncryptionRule::EncryptedSuffix(text),
            "unencrypted_regex" => EncryptionRule::UnencryptedRegex(text),
            "encrypted_regex" => EncryptionRule::EncryptedRegex(text),
            "unencrypted_comment_regex" => EncryptionRule::UnencryptedCommentRegex(text),
            _ => EncryptionRule::EncryptedCommentRegex(text),
        }
    }

    /// The metadata field and value sops writes for this rule.
    pub fn field(&self) -> (&'static str, String) {
        match self {
            EncryptionRule::Default => {
                ("unencrypted_suffix", DEFAULT_UNENCRYPTED_SUFFIX.to_string())
            }
            EncryptionRule::UnencryptedSuffix(s) => ("unencrypted_suffix", s.clone()),
            EncryptionRule::EncryptedSuffix(s) => ("encrypted_suffix", s.clone()),
            EncryptionRule::UnencryptedRegex(s) => ("unencrypted_regex", s.clone()),
            EncryptionRule::EncryptedRegex(s) => ("encrypted_regex", s.clone()),
            EncryptionRule::UnencryptedCommentRegex(s) => ("unencrypted_comment_regex", s.clone()),
            EncryptionRule::EncryptedCommentRegex(s) => ("encrypted_comment_regex", s.clone()),
        }
    }

    /// Checks that a regex rule compiles (RE2 syntax is close to Rust's `regex`).
    pub fn validate(&self) -> Result<(), SopsError> {
        Compiled::new(self).map(|_| ())
    }

    /// An empty rule value means "no rule" (the default), as in sops.
    pub fn normalized(self) -> EncryptionRule {
        let (_, text) = self.field();
        if text.is_empty() {
            EncryptionRule::Default
        } else {
            self
        }
    }
}

enum Compiled {
    UnencSuffix(String),
    EncSuffix(String),
    UnencRegex(Regex),
    EncRegex(Regex),
    UnencComment(Regex),
    EncComment(Regex),
}

impl Compiled {
    fn new(rule: &EncryptionRule) -> Result<Compiled, SopsError> {
        let re = |s: &str| {
            Regex::new(s).map_err(|e| {
                SopsError::Metadata(format!("invalid encryption rule regex '{s}': {e}"))
            })
        };
        Ok(match rule {
            EncryptionRule::Default => {
                Compiled::UnencSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_string())
            }
            EncryptionRule::UnencryptedSuffix(s) => Compiled::UnencSuffix(s.clone()),
            EncryptionRule::EncryptedSuffix(s) => Compiled::EncSuffix(s.clone()),
            EncryptionRule::UnencryptedRegex(s) => Compiled::UnencRegex(re(s)?),
            EncryptionRule::EncryptedRegex(s) => Compiled::EncRegex(re(s)?),
            EncryptionRule::UnencryptedCommentRegex(s) => Compiled::UnencComment(re(s)?),
            EncryptionRule::EncryptedCommentRegex(s) => Compiled::EncComment(re(s)?),
        })
    }

    /// sops' `shouldBeEncrypted`.
    fn should_encrypt(&self, path: &[&str], comments: &[Vec<&str>], is_comment: bool) -> bool {
        match self {
            Compiled::UnencSuffix(s) => !path.iter().any(|p| p.ends_with(s.as_str())),
            Compiled::EncSuffix(s) => path.iter().any(|p| p.ends_with(s.as_str())),
            Compiled::UnencRegex(r) => !path.iter().any(|p| r.is_match(p)),
            Compiled::EncRegex(r) => path.iter().any(|p| r.is_match(p)),
            Compiled::UnencComment(r) => !comments.iter().flatten().any(|c| r.is_match(c)),
            Compiled::EncComment(r) => {
                let last_set = comments.len().saturating_sub(1);
                let last_len = comments.last().map_or(0, |c| c.len());
                comments.iter().enumerate().any(|(i, cs)| {
                    cs.iter().enumerate().any(|(j, c)| {
                        // The comment line that matches does not encrypt itself.
                        let itself = is_comment && i == last_set && j + 1 == last_len;
                        !itself && r.is_match(c)
                    })
                })
            }
        }
    }

    fn unenc_comment_regex(&self) -> Option<&Regex> {
        match self {
            Compiled::UnencComment(r) => Some(r),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Encrypt,
    Decrypt,
}

struct Walker<'a, 't> {
    mode: Mode,
    rule: Compiled,
    mac_only: bool,
    cipher: &'a mut Cipher,
    hash: Sha512,
    /// Map keys from the root (sops' path: list indices are not part of it).
    path: Vec<&'t str>,
    /// `path` joined by `:`, each key followed by `:` (the AAD, kept incrementally).
    aad: String,
    /// Human path with list indices, for error messages.
    shown: Vec<Shown<'t>>,
    comments: Vec<Vec<&'t str>>,
}

#[derive(Clone, Copy)]
enum Shown<'t> {
    Key(&'t str),
    Index(usize),
}

fn render_shown(parts: &[Shown<'_>]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|p| match p {
            Shown::Key(k) => k.to_string(),
            Shown::Index(i) => format!("[{i}]"),
        })
        .collect();
    show_path(&parts)
}

/// Result of walking a tree: the transformed tree and the MAC as upper-case hex.
pub struct Walked {
    pub tree: Tree,
    pub mac: String,
}

/// Encrypts every value the rule selects and computes the MAC over the plaintext leaves.
pub fn encrypt_tree(
    tree: &Tree,
    rule: &EncryptionRule,
    mac_only: bool,
    cipher: &mut Cipher,
) -> Result<Walked, SopsError> {
    Walker::new(Mode::Encrypt, rule, mac_only, cipher)?.run(tree)
}

/// Decrypts every value the rule selects and computes the MAC over the plaintext leaves.
pub fn decrypt_tree(
    tree: &Tree,
    rule: &EncryptionRule,
    mac_only: bool,
    cipher: &mut Cipher,
) -> Result<Walked, SopsError> {
    Walker::new(Mode::Decrypt, rule, mac_only, cipher)?.run(tree)
}

/// Feeds one leaf's `ToBytes` form into the MAC (strings without a copy).
fn hash_leaf(hash: &mut Sha512, v: &Value) {
    match v {
        Value::Str(s) => hash.update(s.expose()),
        other => {
            if let Some((bytes, _)) = plain_bytes(other) {
                hash.update(&bytes);
            }
        }
    }
}

/// Renders a key path for messages: `a.b[2].c`.
pub fn show_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if p.starts_with('[') {
            out.push_str(p);
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    if out.is_empty() {
        "(top level)".to_string()
    } else {
        out
    }
}

impl<'a, 't> Walker<'a, 't> {
    fn new(
        mode: Mode,
        rule: &EncryptionRule,
        mac_only: bool,
        cipher: &'a mut Cipher,
    ) -> Result<Self, SopsError> {
        let mut hash = Sha512::new();
        if mac_only {
            hash.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Ok(Walker {
            mode,
            rule: Compiled::new(rule)?,
            mac_only,
            cipher,
            hash,
            path: Vec::new(),
            aad: String::new(),
            shown: Vec::new(),
            comments: Vec::new(),
        })
    }

    fn run(mut self, tree: &'t Tree) -> Result<Walked, SopsError> {
        let mut docs = Vec::with_capacity(tree.documents.len());
        for doc in &tree.documents {
            docs.push(self.map(doc)?);
        }
        let digest = self.hash.finalize();
        Ok(Walked {
            tree: Tree { documents: docs },
            mac: hex::encode_upper(digest),
        })
    }

    fn err(&self, detail: impl Into<String>) -> SopsError {
        SopsError::Decrypt {
            path: render_shown(&self.shown),
            detail: detail.into(),
        }
    }

    fn map(&mut self, map: &'t Map) -> Result<Map, SopsError> {
        self.comments.push(Vec::new());
        let mut out = Vec::with_capacity(map.0.len());
        for item in &map.0 {
            match item {
                MapItem::Comment(c) => {
                    self.comments.last_mut().expect("pushed above").push(c);
                    let v = self.leaf(&Value::Comment(c.clone()))?;
                    out.push(MapItem::Comment(match v {
                        Value::Comment(c) => c,
                        Value::Str(s) => String::from_utf8_lossy(s.expose()).into_owned(),
                        _ => {
                            return Err(
                                self.err("an encrypted comment decrypted to a non-text value")
                            );
                        }
                    }));
                }
                MapItem::Pair(k, v) => {
                    let saved = self.aad.len();
                    self.aad.push_str(k);
                    self.aad.push(':');
                    self.path.push(k);
                    self.shown.push(Shown::Key(k));
                    let nv = self.value(v);
                    self.path.pop();
                    self.shown.pop();
                    self.aad.truncate(saved);
                    out.push(MapItem::Pair(k.clone(), nv?));
                    self.comments.last_mut().expect("pushed above").clear();
                }
            }
        }
        self.comments.pop();
        Ok(Map(out))
    }

    fn value(&mut self, v: &'t Value) -> Result<Value, SopsError> {
        match v {
            Value::Null => Ok(Value::Null),
            Value::Map(m) => Ok(Value::Map(self.map(m)?)),
            Value::List(items) => {
                self.comments.push(Vec::new());
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let is_comment = matches!(item, Value::Comment(_));
                    if let Value::Comment(c) = item {
                        self.comments.last_mut().expect("pushed above").push(c);
                    }
                    self.shown.push(Shown::Index(i));
                    let r = self.value(item);
                    self.shown.pop();
                    let nv = r?;
                    // sops keeps what the leaf callback returns in lists: an encrypted comment
                    // becomes a plain `ENC[…type:comment]` string element (it decrypts back to a
                    // comment), unlike comments in maps.
                    out.push(match nv {
                        Value::Comment(c)
                            if self.mode == Mode::Encrypt
                                && is_comment
                                && c.starts_with("ENC[") =>
                        {
                            Value::str(&c)
                        }
                        nv => nv,
                    });
                    if !is_comment {
                        self.comments.last_mut().expect("pushed above").clear();
                    }
                }
                self.comments.pop();
                Ok(Value::List(out))
            }
            scalar => self.leaf(scalar),
        }
    }

    fn leaf(&mut self, v: &Value) -> Result<Value, SopsError> {
        let is_comment = matches!(v, Value::Comment(_));
        let encrypted = self
            .rule
            .should_encrypt(&self.path, &self.comments, is_comment);
        // sops: strings.Join(path, ":") + ":" — a top-level comment gets ":".
        let aad = || {
            if self.aad.is_empty() {
                ":".to_string()
            } else {
                self.aad.clone()
            }
        };
        match self.mode {
            Mode::Encrypt => {
                if (!self.mac_only || encrypted) && !is_comment {
                    hash_leaf(&mut self.hash, v);
                }
                if !encrypted {
                    return Ok(v.clone());
                }
                let aad = aad();
                let enc = self.cipher.encrypt(v, &aad).map_err(|e| {
                    SopsError::Encrypt(format!("{}: {e}", render_shown(&self.shown)))
                })?;
                if is_comment {
                    if let Some(r) = self.rule.unenc_comment_regex()
                        && r.is_match(&enc)
                    {
                        return Err(SopsError::Encrypt(format!(
                            "an encrypted comment at {} matches unencrypted_comment_regex; choose a regex that cannot match encrypted comments",
                            render_shown(&self.shown)
                        )));
                    }
                    return Ok(Value::Comment(enc));
                }
                Ok(Value::str(&enc))
            }
            Mode::Decrypt => {
                let plain = if !encrypted {
                    v.clone()
                } else {
                    let aad = aad();
                    match v {
                        Value::Comment(c) => match self.cipher.decrypt(c, &aad) {
                            Ok(p) => p,
                            // Not encrypted in the first place (older sops): keep it.
                            Err(_) => v.clone(),
                        },
                        Value::Str(s) => {
                            let text = std::str::from_utf8(s.expose()).map_err(|_| {
                                self.err("expected an ENC[...] value, found non-UTF-8 data")
                            })?;
                            self.cipher.decrypt(text, &aad).map_err(|e| self.err(e))?
                        }
                        _ => {
                            return Err(
                                self.err("expected an ENC[...] string, found a plain value")
                            );
                        }
                    }
                };
                if (!self.mac_only || encrypted) && !matches!(plain, Value::Comment(_)) {
                    hash_leaf(&mut self.hash, &plain);
                }
                Ok(plain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    #[test]
    fn mac_only_init_is_sha256_of_sops() {
        assert_eq!(Sha256::digest(b"sops")[..], MAC_ONLY_ENCRYPTED_INIT[..]);
    }

    fn sample() -> Tree {
        let inner = Map(vec![
            MapItem::Pair("pw".into(), Value::str("secret")),
            MapItem::Pair("port_unencrypted".into(), Value::Int(5432)),
        ]);
        Tree {
            documents: vec![Map(vec![
                MapItem::Comment(" top".into()),
                MapItem::Pair("db".into(), Value::Map(inner)),
                MapItem::Pair(
                    "list".into(),
                    Value::List(vec![Value::Bool(true), Value::Null, Value::Float(1.5)]),
                ),
                MapItem::Pair("empty".into(), Value::str("")),
            ])],
        }
    }

    #[test]
    fn encrypt_then_decrypt_gives_same_tree_and_mac() {
        let mut c = Cipher::new(&[1u8; 32]);
        let enc = encrypt_tree(&sample(), &EncryptionRule::Default, false, &mut c).unwrap();
        let doc = &enc.tree.documents[0];
        let Some(Value::Map(db)) = doc.get("db") else {
            panic!()
        };
        assert_eq!(db.get("port_unencrypted"), Some(&Value::Int(5432)));
        assert!(matches!(db.get("pw"), Some(Value::Str(s)) if s.expose().starts_with(b"ENC[")));
        assert_eq!(doc.get("empty"), Some(&Value::str("")));
        let dec = decrypt_tree(&enc.tree, &EncryptionRule::Default, false, &mut c).unwrap();
        assert_eq!(dec.tree, sample());
        assert_eq!(dec.mac, enc.mac);
        let mut h = Sha512::new();
        // The comment is not hashed; the null is skipped; the empty string adds nothing.
        h.update(b"secret5432True1.5");
        assert_eq!(enc.mac, hex::encode_upper(h.finalize()));
    }

    #[test]
    fn regex_rules_search_each_component() {
        let r = Compiled::new(&EncryptionRule::EncryptedRegex("^pw$".into())).unwrap();
        assert!(r.should_encrypt(&["db", "pw"], &[], false));
        assert!(!r.should_encrypt(&["db", "pw2"], &[], false));
        let r = Compiled::new(&EncryptionRule::UnencryptedRegex("port".into())).unwrap();
        assert!(!r.should_encrypt(&["db", "the_port_x"], &[], false));
    }

    #[test]
    fn decrypt_errors_name_the_path() {
        let mut c = Cipher::new(&[1u8; 32]);
        let mut enc = encrypt_tree(&sample(), &EncryptionRule::Default, false, &mut c)
            .unwrap()
            .tree;
        let Some(Value::Map(db)) = enc.documents[0].get_mut("db") else {
            panic!()
        };
        db.insert("pw", Value::str("plain"));
        let err = decrypt_tree(&enc, &EncryptionRule::Default, false, &mut c)
            .err()
            .unwrap();
        assert_eq!(err.kind(), "decrypt");
        assert!(err.to_string().contains("db.pw"));
        assert!(!err.to_string().contains("plain"));
    }
}
