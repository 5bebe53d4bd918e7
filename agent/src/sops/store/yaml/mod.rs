//! The YAML store: byte-compatible with sops 3.11's yaml.v3-based store.
//!
//! - `parse`: text → `Tree` (saphyr-parser events + comments recovered from the source).
//! - `resolve`: yaml.v3's plain-scalar typing and Go number rendering.
//! - `emit`: a reimplementation of yaml.v3's emitter state machine, so output bytes match.
//! - this file: the sops mapping between the tree and yaml.v3 nodes (which comment becomes a head
//!   or foot comment of which node) and the `Store` implementation.
//!
//! Must not: know about encryption, log values, or put values into error messages.

mod emit;
mod parse;
pub(crate) mod resolve;

use emit::{Event, ScalarEvent, Style, emit_events};

use super::Store;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Tree, Value};

/// sops' default YAML indentation.
pub const INDENT: i64 = 4;

/// The key under which sops stores its metadata.
const SOPS_KEY: &str = "sops";

/// YAML (`.yaml`/`.yml`) files.
#[derive(Debug, Clone, Copy, Default)]
pub struct YamlStore;

/// A yaml.v3 node as sops builds it before encoding.
#[derive(Debug, Clone, Default)]
struct Node {
    kind: NodeKind,
    head: String,
    line: String,
    foot: String,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Scalar {
        value: Vec<u8>,
        tag: Option<&'static str>,
        style: Option<Style>,
    },
    Map(Vec<Node>),
    Seq(Vec<Node>),
}

impl Default for NodeKind {
    fn default() -> Self {
        NodeKind::Map(Vec::new())
    }
}

fn emit_err(e: emit::EmitError) -> SopsError {
    SopsError::parse("yaml", format!("cannot serialize: {}", e.0))
}

/// `addCommentsHead`: comments are prepended to an existing head comment.
fn add_head(node: &mut Node, comments: &mut Vec<String>) {
    if comments.is_empty() {
        return;
    }
    let c = format!("#{}", comments.join("\n#"));
    node.head = if node.head.is_empty() {
        c
    } else {
        format!("{c}\n{}", node.head)
    };
    comments.clear();
}

/// `addCommentsFoot`: comments are appended to an existing foot comment.
fn add_foot(node: &mut Node, comments: &mut Vec<String>) {
    if comments.is_empty() {
        return;
    }
    let c = format!("#{}", comments.join("\n#"));
    node.foot = if node.foot.is_empty() {
        c
    } else {
        format!("{}\n{c}", node.foot)
    };
    comments.clear();
}

/// A string scalar the way `Node.Encode(string)` builds it.
fn string_node(s: &[u8]) -> Node {
    let kind = match std::str::from_utf8(s) {
        Ok(text) => {
            let style = if text.contains('\n') {
                Some(Style::Literal)
            } else if resolve::string_can_be_plain(text) {
                None
            } else {
                Some(Style::DoubleQuoted)
            };
            NodeKind::Scalar {
                value: s.to_vec(),
                tag: None,
                style,
            }
        }
        Err(_) => {
            let b64 = encode_base64_lines(s);
            let style = if b64.contains('\n') {
                Some(Style::Literal)
            } else {
                None
            };
            NodeKind::Scalar {
                value: b64.into_bytes(),
                tag: Some("binary"),
                style,
            }
        }
    };
    Node {
        kind,
        ..Node::default()
    }
}

/// yaml.v3's `encodeBase64`: 70-column lines, each newline-terminated when there are several.
fn encode_base64_lines(s: &[u8]) -> String {
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode(s);
    let lines = enc.len() / 70 + 1;
    if lines <= 1 {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + lines);
    for chunk in enc.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn plain(text: String) -> Node {
    Node {
        kind: NodeKind::Scalar {
            value: text.into_bytes(),
            tag: None,
            style: None,
        },
        ..Node::default()
    }
}

/// `treeValueToNode`.
fn value_node(v: &Value) -> Node {
    match v {
        Value::Map(m) => map_node(m),
        Value::List(items) => seq_node(items),
        Value::Str(s) => string_node(s.expose()),
        Value::Null => plain("null".into()),
        Value::Bool(b) => plain(b.to_string()),
        Value::Int(i) => plain(i.to_string()),
        Value::Float(f) => plain(resolve::format_float_yaml(*f)),
        Value::Time(t) => plain(t.clone()),
        // A comment outside a list or map cannot be represented: sops encodes it as a string.
        Value::Comment(c) => string_node(c.as_bytes()),
    }
}

fn key_node(k: &str) -> Node {
    if k == "<<" {
        return Node {
            kind: NodeKind::Scalar {
                value: b"<<".to_vec(),
                tag: Some("merge"),
                style: None,
            },
            ..Node::default()
        };
    }
    string_node(k.as_bytes())
}

/// `appendTreeBranch`.
fn map_node(m: &Map) -> Node {
    let mut node = Node {
        kind: NodeKind::Map(Vec::new()),
        ..Node::default()
    };
    let mut content: Vec<Node> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut beginning = true;
    for item in &m.0 {
        match item {
            MapItem::Comment(c) => comments.push(c.clone()),
            MapItem::Pair(k, v) => {
                if beginning {
                    add_head(&mut node, &mut comments);
                    beginning = false;
                }
                let mut key = key_node(k);
                add_head(&mut key, &mut comments);
                content.push(key);
                content.push(value_node(v));
            }
        }
    }
    if !comments.is_empty() {
        if beginning {
            add_head(&mut node, &mut comments);
        } else {
            let idx = content.len() - 2;
            add_foot(&mut content[idx], &mut comments);
        }
    }
    node.kind = NodeKind::Map(content);
    node
}

/// `appendSequence`.
fn seq_node(items: &[Value]) -> Node {
    let mut node = Node {
        kind: NodeKind::Seq(Vec::new()),
        ..Node::default()
    };
    let mut content: Vec<Node> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut beginning = true;
    for item in items {
        match item {
            Value::Comment(c) => comments.push(c.clone()),
            other => {
                if beginning {
                    add_head(&mut node, &mut comments);
                    beginning = false;
                }
                let mut n = value_node(other);
                add_head(&mut n, &mut comments);
                content.push(n);
            }
        }
    }
    if !comments.is_empty() {
        if beginning {
            add_head(&mut node, &mut comments);
        } else if let Some(last) = content.last_mut() {
            add_foot(last, &mut comments);
        }
    }
    node.kind = NodeKind::Seq(content);
    node
}

/// yaml.v3's `encoder.node`: node → events (foot comments of keys travel as the next key's tail).
fn node_events(node: Node, tail: String, out: &mut Vec<Event>) {
    let (head, line, foot) = (
        node.head.into_bytes(),
        node.line.into_bytes(),
        node.foot.into_bytes(),
    );
    match node.kind {
        NodeKind::Seq(items) => {
            out.push(Event::SeqStart { head });
            for it in items {
                node_events(it, String::new(), out);
            }
            out.push(Event::SeqEnd { line, foot });
        }
        NodeKind::Map(content) => {
            out.push(Event::MapStart {
                head,
                tail: tail.into_bytes(),
            });
            let mut tail = String::new();
            let mut it = content.into_iter();
            while let Some(mut k) = it.next() {
                let foot = std::mem::take(&mut k.foot);
                node_events(k, std::mem::take(&mut tail), out);
                tail = foot;
                if let Some(v) = it.next() {
                    node_events(v, String::new(), out);
                }
            }
            out.push(Event::MapEnd {
                tail: tail.into_bytes(),
                line,
                foot,
            });
        }
        NodeKind::Scalar { value, tag, style } => out.push(Event::Scalar(ScalarEvent {
            value,
            tag,
            style,
            head,
            line,
            foot,
            tail: tail.into_bytes(),
        })),
    }
}

/// Encodes documents (each a root node) as one stream, like successive `Encoder.Encode` calls.
fn emit_documents(roots: Vec<Node>) -> Result<Vec<u8>, SopsError> {
    let mut events = vec![Event::StreamStart];
    for root in roots {
        events.push(Event::DocStart { implicit: true });
        node_events(root, String::new(), &mut events);
        events.push(Event::DocEnd);
    }
    events.push(Event::StreamEnd);
    emit_events(events, INDENT).map_err(emit_err)
}

/// Indents every line that holds only a flow closer (`}` or `]`, optionally followed by a
/// comment) deeper than any other line. Returns `None` when there is no such line.
fn reindent_flow_closers(text: &str) -> Option<String> {
    let is_closer = |l: &str| {
        let t = l.trim_start_matches([' ', '\t']);
        (t.starts_with('}') || t.starts_with(']'))
            && t[1..]
                .trim_start_matches([' ', '\t', ',', '}', ']'])
                .trim_end_matches(['\r'])
                .is_empty()
    };
    if !text.lines().any(is_closer) {
        return None;
    }
    let deepest = text
        .lines()
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .max()
        .unwrap_or(0);
    let pad = " ".repeat(deepest + 1);
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        if is_closer(line.trim_end_matches('\n')) {
            out.push_str(&pad);
            out.push_str(line.trim_start_matches([' ', '\t']));
        } else {
            out.push_str(line);
        }
    }
    Some(out)
}

impl YamlStore {
    fn parse(&self, bytes: &[u8]) -> Result<Vec<Map>, SopsError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            SopsError::parse(
                "yaml",
                format!("input is not valid UTF-8 (byte offset {})", e.valid_up_to()),
            )
        })?;
        match parse::parse_documents(text) {
            Err(e) => match reindent_flow_closers(text) {
                // yaml.v3 (and so sops) writes an empty flow collection with a comment as
                // `k: {` / `    # c` / `}` with the closer at the key's column, which strict
                // YAML (saphyr) rejects; yaml.v3 reads it. Retry with such closers indented.
                Some(fixed) => parse::parse_documents(&fixed).map_err(|_| e),
                None => Err(e),
            },
            ok => ok,
        }
    }
}

impl Store for YamlStore {
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError> {
        if bytes.is_empty() {
            return Ok(Tree {
                documents: Vec::new(),
            });
        }
        Ok(Tree {
            documents: self.parse(bytes)?,
        })
    }

    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError> {
        let mut docs = self.parse(bytes)?;
        let mut metadata: Option<Map> = None;
        for (i, doc) in docs.iter_mut().enumerate() {
            let found = doc.remove(SOPS_KEY);
            if i == 0 {
                match found {
                    Some(Value::Map(m)) => metadata = Some(m),
                    Some(Value::Null) | None => {}
                    Some(_) => {
                        return Err(SopsError::Metadata(
                            "the sops key must hold a mapping".into(),
                        ));
                    }
                }
            }
        }
        let metadata = metadata.ok_or(SopsError::NotSops)?;
        Ok((Tree { documents: docs }, metadata))
    }

    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError> {
        let roots: Vec<Node> = tree.documents.iter().map(map_node).collect();
        emit_documents(roots)
    }

    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError> {
        let roots: Vec<Node> = tree
            .documents
            .iter()
            .map(|doc| {
                let mut with_meta = doc.clone();
                with_meta.0.push(MapItem::Pair(
                    SOPS_KEY.to_string(),
                    Value::Map(metadata.clone()),
                ));
                map_node(&with_meta)
            })
            .collect();
        emit_documents(roots)
    }

    fn emit_value(&self, value: &Value) -> Result<Vec<u8>, SopsError> {
        match value {
            Value::Map(m) => emit_documents(vec![map_node(m)]),
            Value::Str(s) => Ok(s.expose().to_vec()),
            other => emit_documents(vec![value_node(other)]),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
