//! The JSON store, byte-compatible with sops 3.11: key order and duplicate keys kept, every
//! number read as a float (sops 3.11 decodes JSON numbers into Go `float64`), output rendered
//! like Go's `encoding/json` (HTML-safe string escapes, `1e+21` style exponents) re-indented with
//! one tab per level, with a trailing newline for whole files.
//!
//! The parser is iterative-bounded: nesting deeper than `MAX_DEPTH` is an error, never a stack
//! overflow, and it never panics on any input.

use super::{Store, split_sops_key};
use crate::secret::SecretBytes;
use crate::sops::cipher::go_time_text;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Tree, Value};

/// Deepest nesting accepted (sops' Go decoder allows 10000; real files use a handful).
pub const MAX_DEPTH: usize = 512;

/// The sops JSON store.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonStore;

impl Store for JsonStore {
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError> {
        let map = parse_document(bytes)?;
        Ok(Tree {
            documents: vec![map],
        })
    }

    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError> {
        let map = parse_document(bytes)?;
        let (map, meta) = split_sops_key(map)?;
        Ok((
            Tree {
                documents: vec![map],
            },
            meta,
        ))
    }

    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError> {
        let doc = tree.documents.first().cloned().unwrap_or_default();
        let mut out = Vec::new();
        write_map(&mut out, &doc, 0)?;
        out.push(b'\n');
        Ok(out)
    }

    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError> {
        let mut doc = tree.documents.first().cloned().unwrap_or_default();
        doc.0.push(MapItem::Pair(
            "sops".to_string(),
            Value::Map(metadata.clone()),
        ));
        let mut out = Vec::new();
        write_map(&mut out, &doc, 0)?;
        out.push(b'\n');
        Ok(out)
    }

    fn emit_value(&self, value: &Value) -> Result<Vec<u8>, SopsError> {
        let mut out = Vec::new();
        write_value(&mut out, value, 0)?;
        Ok(out)
    }
}

fn perr(detail: impl Into<String>) -> SopsError {
    SopsError::parse("json", detail)
}

/// Parses a whole JSON document whose top level must be an object.
pub fn parse_document(bytes: &[u8]) -> Result<Map, SopsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        perr(format!(
            "input is not valid UTF-8 (byte offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(perr(format!(
            "{}: the top level must be a JSON object",
            p.where_()
        )));
    }
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(perr(format!(
            "{}: unexpected data after the top-level object",
            p.where_()
        )));
    }
    match value {
        Value::Map(m) => Ok(m),
        _ => Err(perr("the top level must be a JSON object")),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn where_(&self) -> String {
        let upto = &self.s[..self.pos.min(self.s.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = upto.len() - upto.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {col}")
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), SopsError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(perr(format!("{}: expected '{}'", self.where_(), c as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SopsError> {
        if depth > MAX_DEPTH {
            return Err(perr(format!(
                "{}: nesting deeper than {MAX_DEPTH} levels",
                self.where_()
            )));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut map = Map::default();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Map(map));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(perr(format!(
                            "{}: expected an object key string",
                            self.where_()
                        )));
                    }
                    let key = self.string()?;
                    let key =
                        String::from_utf8(key).map_err(|_| perr("object key is not UTF-8"))?;
                    self.expect(b':')?;
                    let v = self.value(depth + 1)?;
                    map.0.push(MapItem::Pair(key, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Map(map));
                        }
                        _ => {
                            return Err(perr(format!(
                                "{}: expected ',' or '}}' in object",
                                self.where_()
                            )));
                        }
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut list = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Value::List(list));
                }
                loop {
                    list.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(list));
                        }
                        _ => {
                            return Err(perr(format!(
                                "{}: expected ',' or ']' in array",
                                self.where_()
                            )));
                        }
                    }
                }
            }
            Some(b'"') => Ok(Value::Str(SecretBytes::new(self.string()?))),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(perr(format!("{}: unexpected character", self.where_()))),
            None => Err(perr(format!("{}: unexpected end of input", self.where_()))),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, SopsError> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(perr(format!("{}: invalid literal", self.where_())))
        }
    }

    fn number(&mut self) -> Result<Value, SopsError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while let Some(b'0'..=b'9') = p.peek() {
                p.pos += 1;
            }
            p.pos - s
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(perr(format!("{}: invalid number", self.where_())));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(perr(format!("{}: invalid number", self.where_())));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(perr(format!("{}: invalid number", self.where_())));
            }
        }
        let text =
            std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| perr("invalid number"))?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(perr(format!(
                "{}: number out of range for a 64-bit float",
                self.where_()
            ))),
        }
    }

    /// Parses a string literal (cursor on the opening quote) into its bytes.
    fn string(&mut self) -> Result<Vec<u8>, SopsError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.s[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| perr(format!("{}: unterminated string", self.where_())))?;
                    self.pos += 1;
                    match c {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair, or U+FFFD for a lone surrogate (as Go does).
                                if self.s[self.pos..].starts_with(b"\\u") {
                                    let save = self.pos;
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        char::from_u32(
                                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                                        )
                                    } else {
                                        self.pos = save;
                                        None
                                    }
                                } else {
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            let ch = ch.unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return Err(perr(format!(
                                "{}: invalid escape in string",
                                self.where_()
                            )));
                        }
                    }
                }
                Some(_) => {
                    return Err(perr(format!(
                        "{}: control character in string",
                        self.where_()
                    )));
                }
                None => return Err(perr(format!("{}: unterminated string", self.where_()))),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SopsError> {
        let h = self
            .s
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| perr("truncated \\u escape"))?;
        let h = std::str::from_utf8(h).map_err(|_| perr("invalid \\u escape"))?;
        let v = u32::from_str_radix(h, 16)
            .map_err(|_| perr(format!("{}: invalid \\u escape", self.where_())))?;
        self.pos += 4;
        Ok(v)
    }
}

/// Writes `s` as a Go `encoding/json` string literal (HTML-safe escaping, invalid UTF-8 as U+FFFD).
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                    let b = ch as u8;
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
                '\u{2028}' => out.extend_from_slice(b"\\u2028"),
                '\u{2029}' => out.extend_from_slice(b"\\u2029"),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Go `encoding/json` float text: 'f' format, or 'e' below 1e-6 / from 1e21 on (`1e+21`, `1e-7`).
pub fn go_json_float(f: f64) -> Result<String, SopsError> {
    if !f.is_finite() {
        return Err(SopsError::Encrypt(format!(
            "json: unsupported value {f} (NaN and infinities have no JSON form)"
        )));
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = format!("{f:e}");
        let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        Ok(if exp < 0 {
            format!("{mant}e-{}", -exp)
        } else {
            format!("{mant}e+{exp}")
        })
    } else {
        Ok(crate::sops::cipher::go_format_float(f))
    }
}

fn indent(out: &mut Vec<u8>, level: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b'\t', level));
}

fn write_map(out: &mut Vec<u8>, map: &Map, level: usize) -> Result<(), SopsError> {
    out.push(b'{');
    let mut empty = true;
    for item in &map.0 {
        let MapItem::Pair(k, v) = item else { continue };
        if !empty {
            out.push(b',');
        }
        indent(out, level + 1);
        write_string(out, k.as_bytes());
        out.extend_from_slice(b": ");
        write_value(out, v, level + 1)?;
        empty = false;
    }
    if !empty {
        indent(out, level);
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, v: &Value, level: usize) -> Result<(), SopsError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => out.extend_from_slice(go_json_float(*f)?.as_bytes()),
        Value::Str(s) => write_string(out, s.expose()),
        Value::Time(t) => write_string(out, go_time_text(t).as_bytes()),
        // Comments have no JSON form: sops drops them.
        Value::Comment(c) => write_string(out, c.as_bytes()),
        Value::Map(m) => write_map(out, m, level)?,
        Value::List(items) => {
            out.push(b'[');
            let mut empty = true;
            for item in items {
                if matches!(item, Value::Comment(_)) {
                    continue;
                }
                if !empty {
                    out.push(b',');
                }
                indent(out, level + 1);
                write_value(out, item, level + 1)?;
                empty = false;
            }
            if !empty {
                indent(out, level);
            }
            out.push(b']');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_order_and_renders_like_go() {
        let input = br#"{"b": 1, "a": [1.50, "x", {}, []], "s": "<a>&\u2028\u0001", "t": 1e-7, "u": 1e21, "n": null}"#;
        let tree = JsonStore.load_plain(input).unwrap();
        let out = String::from_utf8(JsonStore.emit_plain(&tree).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\n\t\"b\": 1,\n\t\"a\": [\n\t\t1.5,\n\t\t\"x\",\n\t\t{},\n\t\t[]\n\t],\n\t\"s\": \"\\u003ca\\u003e\\u0026\\u2028\\u0001\",\n\t\"t\": 1e-7,\n\t\"u\": 1e+21,\n\t\"n\": null\n}\n"
        );
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"a\":}",
            b"{\"a\":1}x",
            b"{\"a\":01}",
            b"\xff",
            b"{\"a\":1e999}",
        ] {
            assert!(JsonStore.load_plain(bad).is_err());
        }
        let deep = "[".repeat(10_000);
        assert!(
            JsonStore
                .load_plain(format!("{{\"a\":{deep}").as_bytes())
                .is_err()
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::Float),
                "\\PC{0,20}".prop_map(|s| Value::str(&s)),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(4, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                    proptest::collection::vec(("\\PC{0,8}", inner), 0..6).prop_map(|kv| {
                        Value::Map(Map(kv
                            .into_iter()
                            .map(|(k, v)| MapItem::Pair(k, v))
                            .collect()))
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Arbitrary bytes never panic the parser.
            #[test]
            fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = JsonStore.load_plain(&b);
                let _ = JsonStore.load_encrypted(&b);
            }

            /// Arbitrary JSON-ish text never panics the parser.
            #[test]
            fn jsonish_text_never_panics(s in "[{}\\[\\],:\"0-9eE.+\\-a-z \\\\]{0,200}") {
                let _ = JsonStore.load_plain(s.as_bytes());
            }

            /// emit → parse → emit is stable and keeps the tree (order, duplicates, types).
            #[test]
            fn emit_parse_roundtrip(kv in proptest::collection::vec(("\\PC{0,8}", value()), 0..8)) {
                let map = Map(kv.into_iter().map(|(k, v)| MapItem::Pair(k, v)).collect());
                let tree = Tree { documents: vec![map] };
                let out = JsonStore.emit_plain(&tree).unwrap();
                let back = JsonStore.load_plain(&out).unwrap();
                prop_assert_eq!(&back, &tree);
                prop_assert_eq!(JsonStore.emit_plain(&back).unwrap(), out);
            }
        }
    }
}
