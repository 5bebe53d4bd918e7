//! The INI store, byte-compatible with sops 3.11's, which reads and writes through go-ini
//! (gopkg.in/ini.v1 1.67) with its default options plus non-unique sections.
//!
//! The tree is one document whose top-level keys are sections (the implicit `DEFAULT` section
//! first, even when empty) and whose values are maps of string values. go-ini attaches comments
//! to sections and keys; sops turns a section comment into the section's first item and a key's
//! comment (the lines before it plus its inline comment) into an item just after the key.
//! Writing reverses that: go-ini aligns `=` signs, quotes values that need it, and separates
//! sections with a blank line. Metadata lives in a `[sops]` section of flattened keys (see
//! `flatten`); values with newlines are accepted both `\n`-escaped (sops ≤ 3.12, ≥ 3.13.2) and as
//! go-ini `"""` multi-line values (3.13.0/3.13.1).
//!
//! Must not: put values into errors.

use super::Store;
use super::dotenv::val_to_string;
use super::flatten::{flatten_metadata, unflatten_metadata};
use crate::secret::SecretBytes;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Tree, Value};

const DEFAULT_SECTION: &str = "DEFAULT";
const SOPS_SECTION: &str = "sops";
const DELIMITERS: &[char] = &['=', ':'];

/// INI (`.ini`) files.
#[derive(Debug, Clone, Copy, Default)]
pub struct IniStore;

fn perr(line: usize, detail: &str) -> SopsError {
    SopsError::parse("ini", format!("line {line}: {detail}"))
}

/// One go-ini section as parsed.
#[derive(Debug, Default)]
struct Section {
    name: String,
    comment: String,
    /// Keys in first-definition order: (name, value, comment).
    keys: Vec<(String, String, String)>,
}

impl Section {
    /// go-ini `NewKey`: a repeated key keeps its position and takes the new value.
    fn set(&mut self, name: String, value: String) -> usize {
        if let Some(i) = self.keys.iter().position(|k| k.0 == name) {
            self.keys[i].1 = value;
            i
        } else {
            self.keys.push((name, value, String::new()));
            self.keys.len() - 1
        }
    }
}

/// Go's `strings.TrimSpace`.
fn trim(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// A line reader that yields lines with their `\n`, like bufio's `ReadBytes('\n')`.
struct Lines<'a> {
    rest: &'a str,
    number: usize,
    eof: bool,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> &'a str {
        self.number += 1;
        match self.rest.find('\n') {
            Some(i) => {
                let (line, rest) = self.rest.split_at(i + 1);
                self.rest = rest;
                line
            }
            None => {
                self.eof = true;
                std::mem::take(&mut self.rest)
            }
        }
    }
}

fn parse_ini(bytes: &[u8]) -> Result<Vec<Section>, SopsError> {
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        SopsError::parse(
            "ini",
            format!("input is not valid UTF-8 (byte offset {})", e.valid_up_to()),
        )
    })?;
    let mut sections = vec![Section {
        name: DEFAULT_SECTION.into(),
        ..Section::default()
    }];
    let mut comment = String::new();
    let mut count = 1usize;
    let mut lines = Lines {
        rest: text,
        number: 0,
        eof: false,
    };
    while !lines.eof {
        let raw = lines.next_line();
        let n = lines.number;
        let line = raw.trim_start_matches(char::is_whitespace);
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') || line.starts_with(';') {
            comment.push_str(line);
            continue;
        }
        if line.starts_with('[') {
            let close = line
                .rfind(']')
                .ok_or_else(|| perr(n, "unclosed section header"))?;
            let name = &line[1..close];
            if name.is_empty() {
                return Err(perr(n, "empty section name"));
            }
            if let Some(i) = line[close + 1..].find(['#', ';']) {
                comment.push_str(&line[close + 1 + i..]);
            }
            sections.push(Section {
                name: name.to_string(),
                comment: trim(&comment).to_string(),
                keys: Vec::new(),
            });
            comment.clear();
            count = 1;
            continue;
        }
        let (mut name, offset) = read_key_name(line).map_err(|d| perr(n, d))?;
        if name == "-" {
            name = format!("#{count}");
            count += 1;
        }
        let value =
            read_value(&line[offset..], &mut lines, &mut comment).map_err(|d| perr(n, d))?;
        let section = sections.last_mut().expect("default section");
        let idx = section.set(name, value);
        section.keys[idx].2 = trim(&comment).to_string();
        comment.clear();
    }
    Ok(sections)
}

/// go-ini `readKeyName`: returns the key and the offset just past the delimiter.
fn read_key_name(line: &str) -> Result<(String, usize), &'static str> {
    let quote = if line.starts_with('"') {
        if line.len() > 6 && line.starts_with("\"\"\"") {
            "\"\"\""
        } else {
            "\""
        }
    } else if line.starts_with('`') {
        "`"
    } else {
        ""
    };
    if !quote.is_empty() {
        let start = quote.len();
        let pos = line[start..]
            .find(quote)
            .ok_or("missing closing key quote")?
            + start;
        let after = pos + start;
        let i = line
            .get(after..)
            .and_then(|r| r.find(DELIMITERS))
            .ok_or("key-value delimiter not found")?;
        let end = pos + i;
        return Ok((trim(&line[start..pos]).to_string(), end + start + 1));
    }
    match line.find(DELIMITERS) {
        None => Err("key-value delimiter not found"),
        Some(0) => Err("empty key name"),
        Some(end) => Ok((trim(&line[..end]).to_string(), end + 1)),
    }
}

fn has_surrounded_quote(s: &str, q: char) -> bool {
    s.len() >= 2 && s.starts_with(q) && s.ends_with(q) && s[1..].find(q) == Some(s.len() - 2)
}

/// go-ini `readValue` with sops' options (inline comments on, continuation lines on).
fn read_value(
    input: &str,
    lines: &mut Lines<'_>,
    comment: &mut String,
) -> Result<String, &'static str> {
    let line = input.trim_start_matches(char::is_whitespace);
    if line.is_empty() {
        return Ok(String::new());
    }
    let quote = if line.len() > 3 && line.starts_with("\"\"\"") {
        "\"\"\""
    } else if line.starts_with('`') {
        "`"
    } else {
        ""
    };
    if !quote.is_empty() {
        let start = quote.len();
        return match line[start..].rfind(quote) {
            Some(pos) => Ok(line[start..start + pos].to_string()),
            None => {
                let mut val = line[start..].to_string();
                loop {
                    let next = lines.next_line();
                    if let Some(pos) = next.rfind(quote) {
                        val.push_str(&next[..pos]);
                        if let Some(i) = next[pos..].find(['#', ';']) {
                            comment.push_str(trim(&next[pos + i..]));
                        }
                        break;
                    }
                    val.push_str(next);
                    if lines.eof {
                        return Err("missing closing value quote");
                    }
                }
                Ok(val)
            }
        };
    }
    let mut line = trim(line).to_string();
    if line.ends_with('\\') {
        line.pop();
        loop {
            let next = trim(lines.next_line());
            if next.is_empty() {
                break;
            }
            line.push_str(next);
            if !line.ends_with('\\') {
                break;
            }
            line.pop();
        }
        return Ok(line);
    }
    if let Some(i) = line.find(['#', ';']) {
        comment.push_str(&line[i..]);
        line = trim(&line[..i]).to_string();
    }
    if has_surrounded_quote(&line, '\'') || has_surrounded_quote(&line, '"') {
        line = line[1..line.len() - 1].to_string();
    }
    Ok(line)
}

/// sops' `stripCommentChar`.
fn strip_comment_char(c: &str) -> String {
    if c.starts_with(';') {
        c.trim_start_matches([';', ' ']).to_string()
    } else if c.starts_with('#') {
        c.trim_start_matches(['#', ' ']).to_string()
    } else {
        c.to_string()
    }
}

fn section_to_value(s: &Section) -> Value {
    let mut items = Map::default();
    if !s.comment.is_empty() {
        items
            .0
            .push(MapItem::Comment(strip_comment_char(&s.comment)));
    }
    for (k, v, c) in &s.keys {
        items.0.push(MapItem::Pair(
            k.clone(),
            Value::Str(SecretBytes::from(v.as_bytes().to_vec())),
        ));
        if !c.is_empty() {
            items.0.push(MapItem::Comment(strip_comment_char(c)));
        }
    }
    Value::Map(items)
}

fn sections_to_tree(sections: &[Section], skip_sops: bool) -> Tree {
    let mut doc = Map::default();
    for s in sections {
        if skip_sops && s.name == SOPS_SECTION {
            continue;
        }
        doc.0
            .push(MapItem::Pair(s.name.clone(), section_to_value(s)));
    }
    Tree {
        documents: vec![doc],
    }
}

fn eerr(detail: String) -> SopsError {
    SopsError::parse("ini", detail)
}

/// sops' `encodeTree`: tree → go-ini sections.
fn tree_to_sections(doc: &Map, out: &mut Vec<Section>) -> Result<(), SopsError> {
    for item in &doc.0 {
        let MapItem::Pair(name, value) = item else {
            continue;
        };
        if name.is_empty() {
            return Err(eerr("cannot encode section: empty section name".into()));
        }
        let Value::Map(items) = value else {
            return Err(eerr(format!(
                "cannot encode section {name}: section values must be mappings"
            )));
        };
        let mut section = Section {
            name: name.clone(),
            ..Section::default()
        };
        let mut first = 0;
        if let Some(MapItem::Comment(c)) = items.0.first() {
            section.comment = c.clone();
            first = 1;
        }
        let mut last: Option<usize> = None;
        for item in &items.0[first..] {
            match item {
                MapItem::Comment(c) => {
                    if let Some(i) = last {
                        section.keys[i].2 = c.clone();
                    }
                }
                MapItem::Pair(k, v) => {
                    if k.is_empty() {
                        return Err(eerr(format!(
                            "cannot encode key in section {name}: empty key name"
                        )));
                    }
                    let bytes = val_to_string(v).ok_or_else(|| {
                        eerr(format!("cannot encode key {k} in section {name}: nested values are not supported"))
                    })?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        eerr(format!(
                            "cannot encode key {k} in section {name}: value is not UTF-8"
                        ))
                    })?;
                    last = Some(section.set(k.clone(), text));
                }
            }
        }
        out.push(section);
    }
    Ok(())
}

fn write_comment_lines(out: &mut String, comment: &str, trim_plain: bool) {
    for line in comment.split('\n') {
        match line.chars().next() {
            Some(c @ ('#' | ';')) => {
                out.push(c);
                out.push(' ');
                out.push_str(trim(&line[1..]));
            }
            _ => {
                out.push_str("; ");
                out.push_str(if trim_plain { trim(line) } else { line });
            }
        }
        out.push('\n');
    }
}

fn quote_key(k: &str) -> String {
    if k.contains('"') || k.contains(DELIMITERS) {
        format!("`{k}`")
    } else if k.contains('`') {
        format!("\"\"\"{k}\"\"\"")
    } else {
        k.to_string()
    }
}

/// go-ini `writeToBuffer` with its default pretty format.
fn write_sections(sections: &[Section]) -> String {
    let mut out = String::new();
    let last = sections.len().saturating_sub(1);
    for (i, sec) in sections.iter().enumerate() {
        if !sec.comment.is_empty() {
            write_comment_lines(&mut out, &sec.comment, false);
        }
        if i > 0 || sec.name.to_uppercase() != DEFAULT_SECTION {
            out.push('[');
            out.push_str(&sec.name);
            out.push_str("]\n");
        } else if sec.keys.is_empty() {
            continue;
        }
        let align = sec
            .keys
            .iter()
            .map(|(k, _, _)| quote_key(k).len())
            .max()
            .unwrap_or(0);
        for (k, v, c) in &sec.keys {
            if !c.is_empty() {
                write_comment_lines(&mut out, c, true);
            }
            let name = quote_key(k);
            out.push_str(&name);
            out.push_str(&" ".repeat(align - name.len()));
            out.push_str(" = ");
            if v.contains(['\n', '`']) {
                out.push_str(&format!("\"\"\"{v}\"\"\""));
            } else if v.contains(['#', ';']) {
                out.push_str(&format!("`{v}`"));
            } else if trim(v).len() != v.len() {
                out.push_str(&format!("\"{v}\""));
            } else {
                out.push_str(v);
            }
            out.push('\n');
        }
        if i != last {
            out.push('\n');
        }
    }
    out
}

impl Store for IniStore {
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError> {
        Ok(sections_to_tree(&parse_ini(bytes)?, false))
    }

    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError> {
        let sections = parse_ini(bytes)?;
        let sops = sections
            .iter()
            .find(|s| s.name == SOPS_SECTION)
            .ok_or(SopsError::NotSops)?;
        let flat: Vec<(String, String)> = sops
            .keys
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let metadata = unflatten_metadata(&flat)?;
        Ok((sections_to_tree(&sections, true), metadata))
    }

    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError> {
        let mut sections = Vec::new();
        for doc in &tree.documents {
            tree_to_sections(doc, &mut sections)?;
        }
        Ok(write_sections(&sections).into_bytes())
    }

    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError> {
        let mut sections = Vec::new();
        for doc in &tree.documents {
            tree_to_sections(doc, &mut sections)?;
        }
        let mut sops = Section {
            name: SOPS_SECTION.into(),
            ..Section::default()
        };
        for (k, v) in flatten_metadata(metadata)? {
            sops.set(k, v);
        }
        sections.push(sops);
        Ok(write_sections(&sections).into_bytes())
    }

    fn emit_value(&self, value: &Value) -> Result<Vec<u8>, SopsError> {
        // `sops -d --extract` prints strings raw and whole subtrees in the format; sops' INI
        // EmitValue JSON-encodes the other scalars.
        match value {
            Value::Map(m) => self.emit_plain(&Tree {
                documents: vec![m.clone()],
            }),
            Value::Str(s) => Ok(s.expose().to_vec()),
            Value::Int(i) => Ok(i.to_string().into_bytes()),
            Value::Bool(b) => Ok(b.to_string().into_bytes()),
            Value::Null => Ok(b"null".to_vec()),
            other => val_to_string(other)
                .ok_or_else(|| eerr("cannot emit a list as an INI value".into())),
        }
    }
}

#[cfg(test)]
mod tests;
