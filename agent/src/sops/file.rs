//! The public face of the engine: `EncryptedFile` (parse, decrypt with MAC check, encrypt,
//! update keys, rotate, re-encrypt with minimal diffs, serialize) and the `Tree`/`Value` helpers
//! other concerns use. Plaintext only ever lives in `Tree`/`SecretBytes`; errors name paths.

use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

use super::cipher::Cipher;
use super::error::SopsError;
use super::keys::Keyring;
use super::keys::age_key::{self, Unwrap};
use super::metadata::{AgeKey, KeyGroup, Metadata, SOPS_FORMAT_VERSION, mac_aad, now_rfc3339};
use super::shamir;
use super::store::{Format, store_for};
use super::tree::{Map, MapItem, Tree, Value};
use super::walk::{self, EncryptionRule, show_path};
use crate::secret::SecretBytes;

/// Age recipients per key group (one group = a plain `age:` list in the metadata).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyGroups(pub Vec<Vec<String>>);

impl KeyGroups {
    /// One group with these recipients.
    pub fn single(recipients: Vec<String>) -> KeyGroups {
        KeyGroups(vec![recipients])
    }

    /// Every recipient, all groups.
    pub fn all(&self) -> Vec<String> {
        self.0.iter().flatten().cloned().collect()
    }
}

/// How to encrypt a new file.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    pub key_groups: KeyGroups,
    pub rule: EncryptionRule,
    pub mac_only_encrypted: bool,
    pub shamir_threshold: Option<usize>,
}

/// An encrypted SOPS file: keys in plaintext, values `ENC[...]`, plus metadata.
#[derive(Debug, Clone)]
pub struct EncryptedFile {
    format: Format,
    tree: Tree,
    metadata: Metadata,
}

/// The data key, zeroized on drop.
type DataKey = Zeroizing<[u8; 32]>;

fn new_data_key() -> DataKey {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut k[..]);
    k
}

impl EncryptedFile {
    /// Parses an encrypted file (no key needed). `NotSops` when there is no metadata.
    pub fn parse(bytes: &[u8], format: Format) -> Result<EncryptedFile, SopsError> {
        let store = store_for(format)?;
        let (tree, meta) = store.load_encrypted(bytes)?;
        let metadata = Metadata::from_map(&meta)?;
        Ok(EncryptedFile {
            format,
            tree,
            metadata,
        })
    }

    /// Reads and parses `path`; errors name the path.
    pub fn read(path: impl AsRef<Path>, format: Format) -> Result<EncryptedFile, SopsError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| SopsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        EncryptedFile::parse(&bytes, format).map_err(|e| with_file(e, path))
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The typed metadata block.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The encrypted tree (values are `ENC[...]` strings where the rule encrypts them).
    pub fn encrypted_tree(&self) -> &Tree {
        &self.tree
    }

    /// Key existence without decrypting. Path components are map keys; a decimal component
    /// indexes a list.
    pub fn contains_key(&self, path: &[&str]) -> bool {
        lookup(&self.tree, path).is_ok()
    }

    pub fn top_level_keys(&self) -> Vec<String> {
        top_keys(&self.tree)
    }

    /// Every age recipient, all key groups.
    pub fn age_recipients(&self) -> Vec<String> {
        self.metadata.age_recipients()
    }

    pub fn key_groups(&self) -> KeyGroups {
        KeyGroups(
            self.metadata
                .key_groups
                .iter()
                .map(|g| g.age.iter().map(|k| k.recipient.clone()).collect())
                .collect(),
        )
    }

    /// Recovers the data key with the keyring: every group is tried; with several groups the
    /// Shamir shares of at least `shamir_threshold` groups are combined.
    fn data_key(&self, keys: &Keyring) -> Result<DataKey, SopsError> {
        let groups = &self.metadata.key_groups;
        let mut parts = Vec::new();
        let mut invalid = None;
        for (gi, group) in groups.iter().enumerate() {
            for (ki, key) in group.age.iter().enumerate() {
                match age_key::unwrap(&key.enc, &key.recipient, keys) {
                    Unwrap::Key(k) => {
                        parts.push(k);
                        break;
                    }
                    Unwrap::NoMatch => {}
                    Unwrap::Invalid(detail) => {
                        let path = if groups.len() == 1 {
                            format!("sops.age[{ki}].enc")
                        } else {
                            format!("sops.key_groups[{gi}].age[{ki}].enc")
                        };
                        tracing::warn!(event = "sops_data_key_invalid", path = %path, "{detail}");
                        invalid.get_or_insert(SopsError::Decrypt { path, detail });
                    }
                }
            }
        }
        let key = if groups.len() > 1 {
            let need = if self.metadata.shamir_threshold == 0 {
                groups.len()
            } else {
                self.metadata.shamir_threshold
            };
            if parts.len() < need.max(2) {
                return Err(invalid
                    .or_else(|| keys.protected_failure())
                    .unwrap_or_else(|| self.no_key()));
            }
            shamir::combine(&parts)
                .map_err(|e| SopsError::Metadata(format!("cannot combine key shares: {e}")))?
        } else {
            match parts.pop() {
                Some(k) => k,
                None => {
                    return Err(invalid
                        .or_else(|| keys.protected_failure())
                        .unwrap_or_else(|| self.no_key()));
                }
            }
        };
        let arr: [u8; 32] = key[..].try_into().map_err(|_| {
            SopsError::Metadata(format!("the data key is {} bytes, expected 32", key.len()))
        })?;
        Ok(Zeroizing::new(arr))
    }

    fn no_key(&self) -> SopsError {
        let r = self.age_recipients();
        let others: Vec<&str> = self
            .metadata
            .key_groups
            .iter()
            .flat_map(|g| g.other.iter().map(|(n, _)| n.as_str()))
            .collect();
        let mut recipients = if r.is_empty() {
            "none of age".to_string()
        } else {
            r.join(", ")
        };
        if !others.is_empty() {
            recipients.push_str(&format!("; unsupported key sources: {}", others.join(", ")));
        }
        SopsError::NoKey { recipients }
    }

    /// Decrypts and verifies; returns the cipher (with its IV stash) for minimal re-encryption.
    fn open(&self, keys: &Keyring, stash: bool) -> Result<(Tree, Cipher), SopsError> {
        let key = self.data_key(keys)?;
        let mut cipher = if stash {
            Cipher::with_stash(&key)
        } else {
            Cipher::new(&key)
        };
        let walked = walk::decrypt_tree(
            &self.tree,
            &self.metadata.rule,
            self.metadata.mac_only_encrypted,
            &mut cipher,
        )?;
        let aad = mac_aad(&self.metadata.lastmodified)?;
        let (stored, kind, _) =
            cipher
                .decrypt_raw(&self.metadata.mac, &aad)
                .map_err(|e| SopsError::Decrypt {
                    path: "sops.mac".to_string(),
                    detail: e,
                })?;
        if kind != "str" || !crate::secret::ct_eq(&stored, walked.mac.as_bytes()) {
            tracing::warn!(event = "sops_mac_mismatch", "MAC mismatch");
            return Err(SopsError::MacMismatch);
        }
        Ok((walked.tree, cipher))
    }

    /// Decrypts every value. The MAC is always verified.
    pub fn decrypt(&self, keys: &Keyring) -> Result<Tree, SopsError> {
        self.open(keys, false).map(|(t, _)| t)
    }

    /// Encrypts a plaintext tree for new key groups with a fresh data key.
    pub fn encrypt(
        tree: &Tree,
        format: Format,
        opts: &EncryptOptions,
    ) -> Result<EncryptedFile, SopsError> {
        EncryptedFile::encrypt_from(tree, format, format, opts)
    }

    /// `encrypt` for a tree read in `input` format and written in `output` format. Binary input
    /// is sops' single-value store: rules and `mac_only_encrypted` are ignored (the one value is
    /// always encrypted) and no rule is written, exactly like sops.
    pub fn encrypt_from(
        tree: &Tree,
        input: Format,
        output: Format,
        opts: &EncryptOptions,
    ) -> Result<EncryptedFile, SopsError> {
        if tree.documents.iter().any(|d| d.get("sops").is_some()) {
            return Err(SopsError::Encrypt(
                "the input already has a top-level 'sops' key: it is already encrypted".into(),
            ));
        }
        let single_value = input == Format::Binary;
        let mut rule = opts.rule.clone().normalized();
        if single_value {
            if rule != EncryptionRule::Default {
                tracing::warn!("encryption rules do not apply to binary input; ignored");
            }
            rule = EncryptionRule::Default;
        } else if rule == EncryptionRule::Default {
            rule = EncryptionRule::UnencryptedSuffix(walk::DEFAULT_UNENCRYPTED_SUFFIX.into());
        }
        rule.validate()?;
        let mac_only_encrypted = opts.mac_only_encrypted && !single_value;
        let threshold = opts.shamir_threshold.unwrap_or(0);
        let key = new_data_key();
        let groups = wrap_groups(&key, &opts.key_groups, threshold, &[])?;
        let mut file = EncryptedFile {
            format: output,
            tree: Tree::default(),
            metadata: Metadata {
                shamir_threshold: if groups.len() > 1 && threshold == 0 {
                    groups.len()
                } else {
                    threshold
                },
                key_groups: groups,
                lastmodified: String::new(),
                mac: String::new(),
                rule,
                mac_only_encrypted,
                version: SOPS_FORMAT_VERSION.to_string(),
            },
        };
        let mut cipher = Cipher::new(&key);
        file.seal(tree, &mut cipher)?;
        Ok(file)
    }

    /// Encrypts `plain` into this file with `cipher`, setting lastmodified and the MAC.
    fn seal(&mut self, plain: &Tree, cipher: &mut Cipher) -> Result<(), SopsError> {
        let walked = walk::encrypt_tree(
            plain,
            &self.metadata.rule,
            self.metadata.mac_only_encrypted,
            cipher,
        )?;
        let lastmodified = now_rfc3339();
        let aad = mac_aad(&lastmodified)?;
        let mac = cipher
            .encrypt(&Value::str(&walked.mac), &aad)
            .map_err(|e| SopsError::Encrypt(format!("sops.mac: {e}")))?;
        self.tree = walked.tree;
        self.metadata.lastmodified = lastmodified;
        self.metadata.mac = mac;
        self.metadata.version = SOPS_FORMAT_VERSION.to_string();
        Ok(())
    }

    /// Replaces the plaintext with `tree`, keeping the data key, recipients and rule; values
    /// whose plaintext and key path did not change keep their exact ciphertext (sops' stash), so
    /// diffs stay minimal. Needs a key that opens the file now.
    pub fn set_tree(&mut self, keys: &Keyring, tree: &Tree) -> Result<(), SopsError> {
        let (_, mut cipher) = self.open(keys, true)?;
        self.seal(tree, &mut cipher)
    }

    /// Decrypts once (MAC verified), lets `change` edit the plaintext, and re-seals only when
    /// it reports a change; as with `set_tree`, values whose plaintext and key path stayed keep
    /// their exact ciphertext. Returns what `change` returned.
    pub fn modify<E: From<SopsError>>(
        &mut self,
        keys: &Keyring,
        change: impl FnOnce(&mut Tree) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let (mut tree, mut cipher) = self.open(keys, true)?;
        let changed = change(&mut tree)?;
        if changed {
            self.seal(&tree, &mut cipher)?;
        }
        Ok(changed)
    }

    /// Re-wraps the same data key for new key groups (values untouched).
    pub fn update_keys(&mut self, keys: &Keyring, groups: KeyGroups) -> Result<(), SopsError> {
        self.update_keys_with_threshold(keys, groups, None)
    }

    /// `update_keys` with an explicit Shamir threshold (None keeps the file's).
    pub fn update_keys_with_threshold(
        &mut self,
        keys: &Keyring,
        groups: KeyGroups,
        threshold: Option<usize>,
    ) -> Result<(), SopsError> {
        let key = self.data_key(keys)?;
        // Verify the MAC before trusting this file enough to re-key it.
        self.open(keys, false)?;
        let threshold = threshold.unwrap_or(self.metadata.shamir_threshold);
        let keep: &[KeyGroup] = if groups.0.len() == 1 && self.metadata.key_groups.len() == 1 {
            &self.metadata.key_groups
        } else {
            &[]
        };
        let mut new_groups = wrap_groups(&key, &groups, threshold, keep)?;
        // Keep the key sources we cannot manage (pgp, kms, …) when the layout is unchanged.
        if new_groups.len() == self.metadata.key_groups.len() {
            for (n, o) in new_groups.iter_mut().zip(&self.metadata.key_groups) {
                n.other = o.other.clone();
            }
        }
        self.metadata.shamir_threshold = if new_groups.len() > 1 {
            if threshold == 0 {
                new_groups.len()
            } else {
                threshold
            }
        } else {
            0
        };
        self.metadata.key_groups = new_groups;
        Ok(())
    }

    /// New data key, every value re-encrypted, same recipients.
    pub fn rotate(&mut self, keys: &Keyring) -> Result<(), SopsError> {
        let plain = self.decrypt(keys)?;
        if self.metadata.key_groups.iter().any(|g| !g.other.is_empty()) {
            return Err(SopsError::Encrypt(
                "the file also uses key sources other than age (pgp, kms, …), which clawdlets cannot re-wrap; rotate it with sops".into(),
            ));
        }
        let key = new_data_key();
        let groups = self.key_groups();
        self.metadata.key_groups = wrap_groups(&key, &groups, self.metadata.shamir_threshold, &[])?;
        let mut cipher = Cipher::new(&key);
        self.seal(&plain, &mut cipher)
    }

    /// The file in its format, as sops writes it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SopsError> {
        store_for(self.format)?.emit_encrypted(&self.tree, &self.metadata.to_map())
    }

    /// The same file in another format (sops `--output-type` on encrypt/rotate).
    pub fn with_format(mut self, format: Format) -> EncryptedFile {
        self.format = format;
        self
    }
}

/// Adds the file name to errors that do not carry it yet.
fn with_file(e: SopsError, path: &Path) -> SopsError {
    match e {
        SopsError::Parse { format, detail } => SopsError::Parse {
            format,
            detail: format!("{}: {detail}", path.display()),
        },
        SopsError::Metadata(d) => SopsError::Metadata(format!("{}: {d}", path.display())),
        SopsError::NotSops => SopsError::Metadata(format!(
            "{}: sops metadata not found: the file is not encrypted with sops",
            path.display()
        )),
        other => other,
    }
}

/// Wraps the data key (or its Shamir shares) for every recipient. Existing entries in `keep`
/// (same group index, same recipient) are reused so unchanged recipients produce no diff.
fn wrap_groups(
    key: &[u8; 32],
    groups: &KeyGroups,
    threshold: usize,
    keep: &[KeyGroup],
) -> Result<Vec<KeyGroup>, SopsError> {
    let groups: Vec<Vec<String>> = groups
        .0
        .iter()
        .map(|g| {
            g.iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect()
        })
        .collect();
    if groups.is_empty() || groups.iter().all(|g: &Vec<String>| g.is_empty()) {
        return Err(SopsError::Encrypt(
            "no recipients: pass --age or add a creation rule with age keys to .sops.yaml".into(),
        ));
    }
    if groups.iter().any(|g| g.is_empty()) {
        return Err(SopsError::Encrypt("empty key group provided".into()));
    }
    let parts: Vec<Zeroizing<Vec<u8>>> = if groups.len() == 1 {
        vec![Zeroizing::new(key.to_vec())]
    } else {
        let t = if threshold == 0 {
            groups.len()
        } else {
            threshold
        };
        shamir::split(key, groups.len(), t)
            .map_err(|e| SopsError::Encrypt(format!("shamir: {e}")))?
    };
    let mut out = Vec::with_capacity(groups.len());
    for (gi, (group, part)) in groups.iter().zip(&parts).enumerate() {
        let mut g = KeyGroup::default();
        for r in group {
            if g.age.iter().any(|k| k.recipient == *r) {
                continue;
            }
            let existing = keep
                .get(gi)
                .and_then(|kg| kg.age.iter().find(|k| k.recipient == *r));
            let enc = match existing {
                Some(k) => k.enc.clone(),
                None => age_key::wrap(r, part).map_err(SopsError::Encrypt)?,
            };
            g.age.push(AgeKey {
                recipient: r.clone(),
                enc,
            });
        }
        out.push(g);
    }
    Ok(out)
}

fn top_keys(tree: &Tree) -> Vec<String> {
    tree.documents
        .first()
        .map(|d| d.keys().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Follows `path` (map keys; decimal components index lists) in the first document.
fn lookup<'a>(tree: &'a Tree, path: &[&str]) -> Result<&'a Value, SopsError> {
    let not_found = || SopsError::KeyNotFound {
        path: show_path(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
    };
    let doc = tree.documents.first().ok_or_else(not_found)?;
    let (first, rest) = path.split_first().ok_or_else(not_found)?;
    let mut cur = doc.get(first).ok_or_else(not_found)?;
    for comp in rest {
        cur = match cur {
            Value::Map(m) => m.get(comp).ok_or_else(not_found)?,
            Value::List(l) => {
                let i: usize = comp.parse().map_err(|_| not_found())?;
                l.iter()
                    .filter(|v| !matches!(v, Value::Comment(_)))
                    .nth(i)
                    .ok_or_else(not_found)?
            }
            _ => return Err(not_found()),
        };
    }
    Ok(cur)
}

impl Tree {
    /// Parses a plaintext file (the input of encryption).
    pub fn parse(plaintext: &[u8], format: Format) -> Result<Tree, SopsError> {
        store_for(format)?.load_plain(plaintext)
    }

    /// An empty single-map document.
    pub fn new_map() -> Tree {
        Tree {
            documents: vec![Map::default()],
        }
    }

    /// Sets a top-level key of the first document (order kept, replaced when present).
    pub fn insert(&mut self, key: &str, value: Value) {
        if self.documents.is_empty() {
            self.documents.push(Map::default());
        }
        self.documents[0].insert(key, value);
    }

    /// The value at `path` in the first document; `KeyNotFound` names the path.
    pub fn get(&self, path: &[&str]) -> Result<&Value, SopsError> {
        lookup(self, path)
    }

    pub fn top_level_keys(&self) -> Vec<String> {
        top_keys(self)
    }

    /// The tree exactly as `sops -d` prints it in `format`.
    pub fn emit(&self, format: Format) -> Result<SecretBytes, SopsError> {
        store_for(format)?.emit_plain(self).map(SecretBytes::new)
    }
}

impl Value {
    /// The value as the bytes a secret file should hold: strings as-is; int/float/bool rendered
    /// as sops renders them (decimal, Go shortest float, true/false); None for maps/lists/null.
    pub fn to_secret_bytes(&self) -> Option<SecretBytes> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(SecretBytes::new(i.to_string().into_bytes())),
            Value::Float(f) => Some(SecretBytes::new(
                super::cipher::go_format_float(*f).into_bytes(),
            )),
            Value::Bool(b) => Some(SecretBytes::new(b.to_string().into_bytes())),
            Value::Time(t) => Some(SecretBytes::new(
                super::cipher::go_time_text(t).into_bytes(),
            )),
            Value::Null | Value::Map(_) | Value::List(_) | Value::Comment(_) => None,
        }
    }
}

/// Convenience used by installers: read + decrypt.
pub fn decrypt_file(
    path: impl AsRef<Path>,
    format: Format,
    keys: &Keyring,
) -> Result<Tree, SopsError> {
    let path = path.as_ref();
    EncryptedFile::read(path, format)?
        .decrypt(keys)
        .map_err(|e| match e {
            SopsError::NoKey { recipients } => SopsError::NoKey {
                recipients: format!("{recipients}; file {}", path.display()),
            },
            other => other,
        })
}

/// Items of a map that are key/value pairs (for callers iterating a decrypted document).
pub fn pairs(map: &Map) -> impl Iterator<Item = (&str, &Value)> {
    map.0.iter().filter_map(|i| match i {
        MapItem::Pair(k, v) => Some((k.as_str(), v)),
        MapItem::Comment(_) => None,
    })
}
