//! sops' flattening of the metadata block for formats without nesting (dotenv, INI).
//!
//! A nested key path becomes one key: map steps are joined with `__map_`, list steps with
//! `__list_<index>` (`age__list_0__map_enc`). Values are strings on disk: newlines are written
//! as the two characters `\n`, `mac_only_encrypted` as `true`/`false` and `shamir_threshold` as
//! a decimal. Reading reverses all of it.
//!
//! Must not: interpret the metadata (that is the metadata layer's job) or log values.

use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Value};

const MAP_SEPARATOR: &str = "__map_";
const LIST_SEPARATOR: &str = "__list_";

/// Most list slots a flattened key may address (bounds memory on hostile input).
const MAX_LIST_INDEX: usize = 4096;

/// Flattens the metadata map into `(key, value)` pairs sorted by key, with values already
/// encoded as sops writes them (newlines escaped, bools and numbers as text). Nulls and empty
/// lists/maps produce no key, as in sops.
pub fn flatten_metadata(metadata: &Map) -> Result<Vec<(String, String)>, SopsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in &metadata.0 {
        if let MapItem::Pair(k, v) = item {
            flatten_value(k.clone(), v, &mut out)?;
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn flatten_value(
    prefix: String,
    value: &Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), SopsError> {
    match value {
        Value::Map(m) => {
            for item in &m.0 {
                if let MapItem::Pair(k, v) = item {
                    flatten_value(format!("{prefix}{MAP_SEPARATOR}{k}"), v, out)?;
                }
            }
        }
        Value::List(items) => {
            let items = items.iter().filter(|v| !matches!(v, Value::Comment(_)));
            for (i, v) in items.enumerate() {
                flatten_value(format!("{prefix}{LIST_SEPARATOR}{i}"), v, out)?;
            }
        }
        Value::Null => {}
        Value::Str(s) => {
            let text = std::str::from_utf8(s.expose()).map_err(|_| {
                SopsError::Metadata(format!("metadata value {prefix} is not valid UTF-8"))
            })?;
            out.push((prefix, text.replace('\n', "\\n")));
        }
        Value::Bool(b) => out.push((prefix, b.to_string())),
        Value::Int(i) => out.push((prefix, i.to_string())),
        // JSON numbers: sops prints shamir_threshold with "%.0f".
        Value::Float(f) => out.push((prefix, format!("{f:.0}"))),
        Value::Time(t) => out.push((prefix, t.clone())),
        Value::Comment(_) => {}
    }
    Ok(())
}

#[derive(Debug)]
enum Token {
    Key(String),
    Index(usize),
}

/// sops' `tokenize`: splits a flattened key at every separator.
fn tokenize(path: &str) -> Result<Vec<Token>, SopsError> {
    let mut tokens = Vec::new();
    let mut rest = path;
    let mut state_list = false;
    loop {
        let next_map = rest.find(MAP_SEPARATOR);
        let next_list = rest.find(LIST_SEPARATOR);
        let (end, sep_is_list, sep_len) = match (next_map, next_list) {
            (Some(m), Some(l)) if l < m => (l, true, LIST_SEPARATOR.len()),
            (Some(m), _) => (m, false, MAP_SEPARATOR.len()),
            (None, Some(l)) => (l, true, LIST_SEPARATOR.len()),
            (None, None) => (rest.len(), false, 0),
        };
        let piece = &rest[..end];
        tokens.push(if state_list {
            // Go's Atoi error is ignored by sops (position 0); reject instead of guessing.
            let idx: usize = piece.parse().map_err(|_| {
                SopsError::Metadata(format!("invalid list index in metadata key {path}"))
            })?;
            if idx > MAX_LIST_INDEX {
                return Err(SopsError::Metadata(format!(
                    "list index too large in metadata key {path}"
                )));
            }
            Token::Index(idx)
        } else {
            Token::Key(piece.to_string())
        });
        if sep_len == 0 {
            break;
        }
        rest = &rest[end + sep_len..];
        state_list = sep_is_list;
    }
    Ok(tokens)
}

/// Unflattens `(key, raw value)` pairs (as read from the file, prefix already removed) into the
/// metadata map: `\n` sequences become newlines, `mac_only_encrypted` a bool and
/// `shamir_threshold` an integer. Keys keep their first-appearance order.
pub fn unflatten_metadata(pairs: &[(String, String)]) -> Result<Map, SopsError> {
    let mut root = Value::Map(Map::default());
    for (key, raw) in pairs {
        let value = decode_value(key, raw)?;
        let tokens = tokenize(key)?;
        insert_path(&mut root, &tokens, value, key)?;
    }
    match root {
        Value::Map(m) => Ok(m),
        _ => Err(SopsError::Metadata("metadata is not a mapping".into())),
    }
}

fn decode_value(key: &str, raw: &str) -> Result<Value, SopsError> {
    let text = raw.replace("\\n", "\n");
    match key {
        "mac_only_encrypted" => Ok(Value::Bool(text == "true")),
        "shamir_threshold" => {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Int(i));
            }
            match text.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Value::Int(f as i64)),
                _ => Err(SopsError::Metadata(
                    "shamir_threshold is not an integer".into(),
                )),
            }
        }
        _ => Ok(Value::str(&text)),
    }
}

fn conflict(key: &str) -> SopsError {
    SopsError::Metadata(format!("conflicting flattened metadata key {key}"))
}

fn insert_path(
    node: &mut Value,
    tokens: &[Token],
    value: Value,
    key: &str,
) -> Result<(), SopsError> {
    let Some((first, rest)) = tokens.split_first() else {
        *node = value;
        return Ok(());
    };
    let child: &mut Value = match first {
        Token::Key(k) => {
            let Value::Map(m) = node else {
                return Err(conflict(key));
            };
            if m.get(k).is_none() {
                let fresh = match rest.first() {
                    Some(Token::Index(_)) => Value::List(Vec::new()),
                    Some(Token::Key(_)) => Value::Map(Map::default()),
                    None => Value::Null,
                };
                m.0.push(MapItem::Pair(k.clone(), fresh));
            }
            m.get_mut(k).ok_or_else(|| conflict(key))?
        }
        Token::Index(i) => {
            let Value::List(l) = node else {
                return Err(conflict(key));
            };
            if l.len() <= *i {
                l.resize(*i + 1, Value::Null);
            }
            let slot = &mut l[*i];
            if matches!(slot, Value::Null) {
                *slot = match rest.first() {
                    Some(Token::Index(_)) => Value::List(Vec::new()),
                    Some(Token::Key(_)) => Value::Map(Map::default()),
                    None => Value::Null,
                };
            }
            slot
        }
    };
    if rest.is_empty() {
        *child = value;
        return Ok(());
    }
    match (rest.first(), &*child) {
        (Some(Token::Index(_)), Value::List(_)) | (Some(Token::Key(_)), Value::Map(_)) => {}
        _ => return Err(conflict(key)),
    }
    insert_path(child, rest, value, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Map {
        let mut age = Map::default();
        age.insert("recipient", Value::str("age1xyz"));
        age.insert(
            "enc",
            Value::str(
                "-----BEGIN AGE ENCRYPTED FILE-----\nabc\n-----END AGE ENCRYPTED FILE-----\n",
            ),
        );
        let mut group = Map::default();
        group.insert("age", Value::List(vec![Value::Map(age.clone())]));
        let mut m = Map::default();
        m.insert("key_groups", Value::List(vec![Value::Map(group)]));
        m.insert("age", Value::List(vec![Value::Map(age)]));
        m.insert("kms", Value::Null);
        m.insert("lastmodified", Value::str("2024-01-01T00:00:00Z"));
        m.insert("mac_only_encrypted", Value::Bool(true));
        m.insert("shamir_threshold", Value::Int(2));
        m
    }

    #[test]
    fn flattens_like_sops() {
        let flat = flatten_metadata(&sample()).unwrap();
        let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "age__list_0__map_enc",
                "age__list_0__map_recipient",
                "key_groups__list_0__map_age__list_0__map_enc",
                "key_groups__list_0__map_age__list_0__map_recipient",
                "lastmodified",
                "mac_only_encrypted",
                "shamir_threshold",
            ]
        );
        assert_eq!(
            flat[0].1,
            "-----BEGIN AGE ENCRYPTED FILE-----\\nabc\\n-----END AGE ENCRYPTED FILE-----\\n"
        );
        assert_eq!(flat[5].1, "true");
        assert_eq!(flat[6].1, "2");
    }

    #[test]
    fn unflatten_reverses_flatten() {
        let flat = flatten_metadata(&sample()).unwrap();
        let m = unflatten_metadata(&flat).unwrap();
        let Some(Value::List(groups)) = m.get("key_groups") else {
            panic!("key_groups")
        };
        let Value::Map(g) = &groups[0] else {
            panic!("group")
        };
        let Some(Value::List(ages)) = g.get("age") else {
            panic!("age")
        };
        let Value::Map(a) = &ages[0] else {
            panic!("age entry")
        };
        assert_eq!(a.get("recipient"), Some(&Value::str("age1xyz")));
        assert_eq!(
            a.get("enc"),
            Some(&Value::str(
                "-----BEGIN AGE ENCRYPTED FILE-----\nabc\n-----END AGE ENCRYPTED FILE-----\n"
            ))
        );
        assert_eq!(m.get("mac_only_encrypted"), Some(&Value::Bool(true)));
        assert_eq!(m.get("shamir_threshold"), Some(&Value::Int(2)));
        assert_eq!(m.get("kms"), None);
    }

    #[test]
    fn rejects_conflicts_and_huge_indexes() {
        let pairs = vec![
            ("age".to_string(), "x".to_string()),
            ("age__list_0__map_enc".to_string(), "y".to_string()),
        ];
        assert_eq!(unflatten_metadata(&pairs).unwrap_err().kind(), "metadata");
        let pairs = vec![("age__list_99999999".to_string(), "y".to_string())];
        assert_eq!(unflatten_metadata(&pairs).unwrap_err().kind(), "metadata");
        let pairs = vec![("age__list_x".to_string(), "y".to_string())];
        assert_eq!(unflatten_metadata(&pairs).unwrap_err().kind(), "metadata");
    }

    #[test]
    fn float_shamir_threshold_from_old_files() {
        let pairs = vec![("shamir_threshold".to_string(), "2.0".to_string())];
        assert_eq!(
            unflatten_metadata(&pairs).unwrap().get("shamir_threshold"),
            Some(&Value::Int(2))
        );
    }
}
