//! The `sops` metadata block: typed `Metadata` ⇄ the plain `Map` a store reads and writes.
//!
//! Reading is tolerant like sops (absent lists may be `null` or `[]`; values may arrive as strings
//! from dotenv/INI); writing emits the keys in the order sops 3.11 writes them (its metadata struct
//! order, empty fields omitted), so files we write diff cleanly against files sops writes. Key
//! sources other than age (pgp, kms, …) are kept verbatim so rewriting never drops them.

use super::cipher::go_offset;
use super::error::SopsError;
use super::tree::{Map, MapItem, Value};
use super::walk::EncryptionRule;

/// The sops version we claim in the metadata: the file format we write is sops 3.11's.
pub const SOPS_FORMAT_VERSION: &str = "3.11.0";

/// One age master key: recipient and the armored age file holding the (share of the) data key.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeKey {
    pub recipient: String,
    pub enc: String,
}

/// One key group: age keys, plus every other key source kept as read (name, value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyGroup {
    pub age: Vec<AgeKey>,
    pub other: Vec<(String, Value)>,
}

impl KeyGroup {
    /// Number of master keys of any kind in the group.
    pub fn len(&self) -> usize {
        self.age.len()
            + self
                .other
                .iter()
                .map(|(_, v)| match v {
                    Value::List(l) => l.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The typed metadata of a sops file.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub key_groups: Vec<KeyGroup>,
    /// 0 when unset.
    pub shamir_threshold: usize,
    /// As stored (RFC 3339).
    pub lastmodified: String,
    /// The encrypted MAC (`ENC[...]`).
    pub mac: String,
    pub rule: EncryptionRule,
    pub mac_only_encrypted: bool,
    pub version: String,
}

/// Key source names sops knows besides age, in the order sops 3.11 writes them at top level.
const FLAT_BEFORE_AGE: [&str; 4] = ["kms", "gcp_kms", "azure_kv", "hc_vault"];
const GROUP_ORDER: [&str; 4] = ["pgp", "kms", "gcp_kms", "azure_kv"];
const OTHER_SOURCES: [&str; 6] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"];

fn merr(detail: impl Into<String>) -> SopsError {
    SopsError::Metadata(detail.into())
}

fn as_string(v: &Value, field: &str) -> Result<Option<String>, SopsError> {
    match v {
        Value::Null => Ok(None),
        Value::Str(s) => String::from_utf8(s.expose().to_vec())
            .map(Some)
            .map_err(|_| merr(format!("'{field}' is not UTF-8"))),
        Value::Time(t) => Ok(Some(t.clone())),
        Value::Int(i) => Ok(Some(i.to_string())),
        Value::Float(f) => Ok(Some(super::cipher::go_format_float(*f))),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(merr(format!("'{field}' must be a string"))),
    }
}

fn as_list<'a>(v: &'a Value, field: &str) -> Result<&'a [Value], SopsError> {
    match v {
        Value::Null => Ok(&[]),
        Value::List(l) => Ok(l),
        Value::Str(s) if s.is_empty() => Ok(&[]),
        _ => Err(merr(format!("'{field}' must be a list"))),
    }
}

fn parse_age_keys(v: &Value, field: &str) -> Result<Vec<AgeKey>, SopsError> {
    let mut keys = Vec::new();
    for (i, entry) in as_list(v, field)?.iter().enumerate() {
        let Value::Map(m) = entry else {
            return Err(merr(format!(
                "'{field}[{i}]' must be a map with recipient and enc"
            )));
        };
        let get = |k: &str| -> Result<String, SopsError> {
            m.get(k)
                .map(|v| as_string(v, &format!("{field}[{i}].{k}")))
                .transpose()?
                .flatten()
                .ok_or_else(|| merr(format!("'{field}[{i}]' has no '{k}'")))
        };
        keys.push(AgeKey {
            recipient: get("recipient")?.trim().to_string(),
            enc: get("enc")?,
        });
    }
    Ok(keys)
}

fn parse_group(m: &Map, field: &str) -> Result<KeyGroup, SopsError> {
    let mut group = KeyGroup::default();
    for item in &m.0 {
        let MapItem::Pair(k, v) = item else { continue };
        if k == "age" {
            group.age = parse_age_keys(v, &format!("{field}.age"))?;
        } else if OTHER_SOURCES.contains(&k.as_str()) && !as_list(v, k)?.is_empty() {
            group.other.push((k.clone(), v.clone()));
        }
    }
    Ok(group)
}

fn parse_usize(v: &Value, field: &str) -> Result<usize, SopsError> {
    match v {
        Value::Null => Ok(0),
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 && *f < 1e9 => Ok(*f as usize),
        Value::Str(s) => std::str::from_utf8(s.expose())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| merr(format!("'{field}' must be a non-negative integer"))),
        _ => Err(merr(format!("'{field}' must be a non-negative integer"))),
    }
}

fn parse_bool(v: &Value, field: &str) -> Result<bool, SopsError> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::Str(s) => std::str::from_utf8(s.expose())
            .ok()
            .and_then(super::cipher::go_parse_bool)
            .ok_or_else(|| merr(format!("'{field}' must be true or false"))),
        _ => Err(merr(format!("'{field}' must be true or false"))),
    }
}

impl Metadata {
    /// Reads the metadata map of a file. Errors name the offending field.
    pub fn from_map(m: &Map) -> Result<Metadata, SopsError> {
        let mut flat = KeyGroup::default();
        let mut groups = None;
        let mut threshold = 0;
        let mut lastmodified = None;
        let mut mac = None;
        let mut version = String::new();
        let mut mac_only = false;
        let mut rules: Vec<EncryptionRule> = Vec::new();
        for item in &m.0 {
            let MapItem::Pair(k, v) = item else { continue };
            match k.as_str() {
                "key_groups" => {
                    let mut gs = Vec::new();
                    for (i, g) in as_list(v, "key_groups")?.iter().enumerate() {
                        match g {
                            Value::Map(gm) => {
                                gs.push(parse_group(gm, &format!("key_groups[{i}]"))?)
                            }
                            Value::Null => gs.push(KeyGroup::default()),
                            _ => return Err(merr(format!("'key_groups[{i}]' must be a map"))),
                        }
                    }
                    if !gs.is_empty() {
                        groups = Some(gs);
                    }
                }
                "age" => flat.age = parse_age_keys(v, "age")?,
                s if OTHER_SOURCES.contains(&s) && !as_list(v, s)?.is_empty() => {
                    flat.other.push((k.clone(), v.clone()));
                }
                "shamir_threshold" => threshold = parse_usize(v, k)?,
                "lastmodified" => lastmodified = as_string(v, k)?,
                "mac" => mac = as_string(v, k)?,
                "version" => version = as_string(v, k)?.unwrap_or_default(),
                "mac_only_encrypted" => mac_only = parse_bool(v, k)?,
                "unencrypted_suffix"
                | "encrypted_suffix"
                | "unencrypted_regex"
                | "encrypted_regex"
                | "unencrypted_comment_regex"
                | "encrypted_comment_regex" => {
                    let text = as_string(v, k)?.unwrap_or_default();
                    if !text.is_empty() {
                        rules.push(EncryptionRule::from_field(k, text));
                    }
                }
                _ => {}
            }
        }
        let key_groups = match groups {
            Some(g) => g,
            None => vec![flat],
        };
        if rules.len() > 1 {
            return Err(merr(
                "cannot use more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, or unencrypted_comment_regex in the same file",
            ));
        }
        // Like sops' ToInternal: no rule in the file means the default suffix, which is written
        // explicitly when the file is rewritten.
        let rule = rules.pop().unwrap_or_else(|| {
            EncryptionRule::UnencryptedSuffix(super::walk::DEFAULT_UNENCRYPTED_SUFFIX.into())
        });
        rule.validate()?;
        let lastmodified = lastmodified.ok_or_else(|| merr("'lastmodified' is missing"))?;
        mac_aad(&lastmodified)?;
        Ok(Metadata {
            key_groups,
            shamir_threshold: threshold,
            lastmodified,
            mac: mac.unwrap_or_default(),
            rule,
            mac_only_encrypted: mac_only,
            version,
        })
    }

    /// Every age recipient, all groups, in file order.
    pub fn age_recipients(&self) -> Vec<String> {
        self.key_groups
            .iter()
            .flat_map(|g| g.age.iter().map(|k| k.recipient.clone()))
            .collect()
    }

    /// The metadata map in sops 3.11's key order.
    pub fn to_map(&self) -> Map {
        let mut out = Vec::new();
        let pair = |k: &str, v: Value| MapItem::Pair(k.to_string(), v);
        if self.shamir_threshold != 0 {
            out.push(pair(
                "shamir_threshold",
                Value::Int(self.shamir_threshold as i64),
            ));
        }
        let single = self.key_groups.len() == 1;
        if !single && !self.key_groups.is_empty() {
            let groups = self
                .key_groups
                .iter()
                .map(|g| {
                    let mut gm = Vec::new();
                    for name in GROUP_ORDER {
                        if let Some((_, v)) = g.other.iter().find(|(n, _)| n == name) {
                            gm.push(pair(name, v.clone()));
                        }
                    }
                    let vault = g
                        .other
                        .iter()
                        .find(|(n, _)| n == "hc_vault")
                        .map_or(Value::Null, |(_, v)| v.clone());
                    gm.push(pair("hc_vault", vault));
                    gm.push(pair("age", age_list(&g.age)));
                    Value::Map(Map(gm))
                })
                .collect();
            out.push(pair("key_groups", Value::List(groups)));
        }
        if single {
            let g = &self.key_groups[0];
            for name in FLAT_BEFORE_AGE {
                if let Some((_, v)) = g.other.iter().find(|(n, _)| n == name) {
                    out.push(pair(name, v.clone()));
                }
            }
            if !g.age.is_empty() {
                out.push(pair("age", age_list(&g.age)));
            }
        }
        out.push(pair("lastmodified", Value::str(&self.lastmodified)));
        out.push(pair("mac", Value::str(&self.mac)));
        if single && let Some((_, v)) = self.key_groups[0].other.iter().find(|(n, _)| n == "pgp") {
            out.push(pair("pgp", v.clone()));
        }
        // `Default` means no rule field at all (sops' binary store); anything else is written.
        if self.rule != EncryptionRule::Default {
            let (name, text) = self.rule.field();
            out.push(pair(name, Value::str(&text)));
        }
        if self.mac_only_encrypted {
            out.push(pair("mac_only_encrypted", Value::Bool(true)));
        }
        out.push(pair("version", Value::str(&self.version)));
        Map(out)
    }
}

fn age_list(keys: &[AgeKey]) -> Value {
    if keys.is_empty() {
        return Value::Null;
    }
    Value::List(
        keys.iter()
            .map(|k| {
                Value::Map(Map(vec![
                    MapItem::Pair("recipient".into(), Value::str(&k.recipient)),
                    MapItem::Pair("enc".into(), Value::str(&k.enc)),
                ]))
            })
            .collect(),
    )
}

/// The MAC's AAD: `lastmodified` parsed as RFC 3339 and re-rendered like Go's `time.RFC3339`
/// (seconds precision, `Z` for UTC, `±hh:mm` otherwise).
pub fn mac_aad(lastmodified: &str) -> Result<String, SopsError> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(lastmodified.trim(), &Rfc3339)
        .map_err(|e| merr(format!("'lastmodified' is not an RFC 3339 time: {e}")))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        go_offset(t.offset())
    ))
}

/// Now, in UTC, as sops writes `lastmodified`.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_aad_like_go() {
        assert_eq!(
            mac_aad("2024-01-02T03:04:05Z").unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            mac_aad("2024-01-02T03:04:05.123+00:00").unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            mac_aad("2024-01-02T03:04:05-05:30").unwrap(),
            "2024-01-02T03:04:05-05:30"
        );
        assert!(mac_aad("yesterday").is_err());
    }

    #[test]
    fn roundtrip_keeps_order_and_other_sources() {
        let m = Metadata {
            key_groups: vec![KeyGroup {
                age: vec![AgeKey {
                    recipient: "age1x".into(),
                    enc: "E".into(),
                }],
                other: vec![("pgp".into(), Value::List(vec![Value::str("p")]))],
            }],
            shamir_threshold: 0,
            lastmodified: "2024-01-02T03:04:05Z".into(),
            mac: "ENC[...]".into(),
            rule: EncryptionRule::UnencryptedSuffix("_unencrypted".into()),
            mac_only_encrypted: true,
            version: "3.11.0".into(),
        };
        let map = m.to_map();
        let keys: Vec<_> = map.keys().collect();
        assert_eq!(
            keys,
            [
                "age",
                "lastmodified",
                "mac",
                "pgp",
                "unencrypted_suffix",
                "mac_only_encrypted",
                "version"
            ]
        );
        let back = Metadata::from_map(&map).unwrap();
        assert_eq!(
            back.rule,
            EncryptionRule::UnencryptedSuffix("_unencrypted".into())
        );
        assert_eq!(back.key_groups, m.key_groups);
        assert!(back.mac_only_encrypted);
    }

    #[test]
    fn tolerates_strings_and_nulls() {
        let map = Map(vec![
            MapItem::Pair("kms".into(), Value::Null),
            MapItem::Pair("age".into(), Value::List(vec![])),
            MapItem::Pair("lastmodified".into(), Value::str("2024-01-02T03:04:05Z")),
            MapItem::Pair("mac".into(), Value::str("x")),
            MapItem::Pair("shamir_threshold".into(), Value::str("2")),
            MapItem::Pair("mac_only_encrypted".into(), Value::str("true")),
        ]);
        let m = Metadata::from_map(&map).unwrap();
        assert_eq!(m.shamir_threshold, 2);
        assert!(m.mac_only_encrypted);
        assert_eq!(
            m.rule,
            EncryptionRule::UnencryptedSuffix("_unencrypted".into())
        );
    }
}
