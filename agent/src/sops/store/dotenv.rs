//! The dotenv store, byte-compatible with sops 3.11's: one `KEY=VALUE` per line, split at the
//! first `=` with no quote, `export` or whitespace handling; `#` lines are comments; the two
//! characters `\n` in a value stand for a newline. Metadata is flattened into `sops_*` keys.
//!
//! Must not: put values into errors (a malformed line is reported by its number only).

use super::Store;
use super::flatten::{flatten_metadata, unflatten_metadata};
use crate::secret::SecretBytes;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Tree, Value};

/// Prefix of the flattened metadata keys.
const SOPS_PREFIX: &str = "sops_";

/// dotenv (`.env`) files.
#[derive(Debug, Clone, Copy, Default)]
pub struct DotenvStore;

fn perr(detail: String) -> SopsError {
    SopsError::parse("dotenv", detail)
}

/// sops' `ValToString`: how a non-string scalar is written into a dotenv or INI value.
pub(crate) fn val_to_string(v: &Value) -> Option<Vec<u8>> {
    Some(match v {
        Value::Str(s) => s.expose().to_vec(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Float(f) => {
            let r = if f.is_nan() {
                "NaN".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 {
                    "+Inf".into()
                } else {
                    "-Inf".into()
                }
            } else {
                let g = super::yaml::resolve::format_g(*f, 'E');
                if g.contains('.') || g.contains('E') {
                    g
                } else {
                    format!("{f:.1}")
                }
            };
            r.into_bytes()
        }
        // time.RFC3339: fractional seconds dropped.
        Value::Time(t) => match (t.find('.'), t.rfind(['Z', '+', '-'])) {
            (Some(dot), Some(zone)) if zone > dot => {
                format!("{}{}", &t[..dot], &t[zone..]).into_bytes()
            }
            _ => t.clone().into_bytes(),
        },
        Value::Null => b"<nil>".to_vec(),
        Value::Comment(c) => c.clone().into_bytes(),
        Value::Map(_) | Value::List(_) => return None,
    })
}

fn parse_lines(bytes: &[u8]) -> Result<Map, SopsError> {
    let mut map = Map::default();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if line[0] == b'#' {
            let text = std::str::from_utf8(&line[1..])
                .map_err(|_| perr(format!("line {}: comment is not valid UTF-8", n + 1)))?;
            map.0.push(MapItem::Comment(text.to_string()));
            continue;
        }
        let pos = line
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| perr(format!("line {}: expected KEY=VALUE (no '=' found)", n + 1)))?;
        let key = std::str::from_utf8(&line[..pos])
            .map_err(|_| perr(format!("line {}: key is not valid UTF-8", n + 1)))?;
        let value = replace_escaped_newlines(&line[pos + 1..]);
        map.0.push(MapItem::Pair(
            key.to_string(),
            Value::Str(SecretBytes::from(value)),
        ));
    }
    Ok(map)
}

/// `\n` (backslash, n) → newline, left to right like Go's `strings.Replace`.
fn replace_escaped_newlines(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && v.get(i + 1) == Some(&b'n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

fn write_items(map: &Map, out: &mut Vec<u8>) -> Result<(), SopsError> {
    for item in &map.0 {
        match item {
            MapItem::Comment(c) => {
                out.push(b'#');
                out.extend_from_slice(c.as_bytes());
                out.push(b'\n');
            }
            MapItem::Pair(k, v) => {
                let bytes = match v {
                    Value::Str(s) => {
                        let mut e = Vec::with_capacity(s.len());
                        for &b in s.expose() {
                            if b == b'\n' {
                                e.extend_from_slice(b"\\n");
                            } else {
                                e.push(b);
                            }
                        }
                        e
                    }
                    other => val_to_string(other).ok_or_else(|| {
                        SopsError::parse(
                            "dotenv",
                            format!("cannot use complex value in dotenv file; offending key {k}"),
                        )
                    })?,
                };
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                out.extend_from_slice(&bytes);
                out.push(b'\n');
            }
        }
    }
    Ok(())
}

impl Store for DotenvStore {
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError> {
        Ok(Tree {
            documents: vec![parse_lines(bytes)?],
        })
    }

    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError> {
        let all = parse_lines(bytes)?;
        let mut data = Map::default();
        let mut flat: Vec<(String, String)> = Vec::new();
        for item in all.0 {
            match item {
                MapItem::Pair(k, v) if k.starts_with(SOPS_PREFIX) => {
                    let Value::Str(s) = v else { continue };
                    // The value was un-escaped by the line parser; re-escape so the flattened
                    // decoder sees what sops' does (it decodes `\n` itself).
                    let text = String::from_utf8(s.expose().to_vec()).map_err(|_| {
                        SopsError::Metadata(format!("metadata value {k} is not valid UTF-8"))
                    })?;
                    flat.push((
                        k[SOPS_PREFIX.len()..].to_string(),
                        text.replace('\n', "\\n"),
                    ));
                }
                other => data.0.push(other),
            }
        }
        if flat.is_empty() {
            return Err(SopsError::NotSops);
        }
        let metadata = unflatten_metadata(&flat)?;
        Ok((
            Tree {
                documents: vec![data],
            },
            metadata,
        ))
    }

    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError> {
        let mut out = Vec::new();
        if let Some(doc) = tree.documents.first() {
            write_items(doc, &mut out)?;
        }
        Ok(out)
    }

    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError> {
        let mut doc = tree.documents.first().cloned().unwrap_or_default();
        for (k, v) in flatten_metadata(metadata)? {
            // Flattened values already carry `\n` escapes: store them unescaped so that
            // writing re-escapes them exactly once.
            doc.0.push(MapItem::Pair(
                format!("{SOPS_PREFIX}{k}"),
                Value::str(&v.replace("\\n", "\n")),
            ));
        }
        let mut out = Vec::new();
        write_items(&doc, &mut out)?;
        Ok(out)
    }

    fn emit_value(&self, value: &Value) -> Result<Vec<u8>, SopsError> {
        match value {
            Value::Str(s) => Ok(s.expose().to_vec()),
            _ => Err(SopsError::parse(
                "dotenv",
                "the dotenv store only supports emitting strings".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
