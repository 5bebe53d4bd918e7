//! YAML text → `Tree`, with the comments sops keeps, placed where sops' yaml.v3-based store puts
//! them.
//!
//! saphyr-parser supplies the event stream with source spans; comments are not events, so they
//! are recovered from the source text between scalar spans and then attached by position:
//! - a comment on the same line as content (`key: v # c`, `- x # c`) becomes a comment item
//!   just before the item that starts on that line, in that item's container;
//! - a whole-line comment goes to the innermost collection that is open at its position and whose
//!   items are not indented deeper than the comment (a comment between `key:` and the first item
//!   of its block value goes into that value).
//!
//! Aliases are expanded (sops stores plain trees) under a node budget, nesting depth is capped,
//! and non-string keys are rejected, so hostile input cannot exhaust memory or the stack.

use std::collections::HashMap;

use saphyr_parser::{Event as PEvent, Parser, ScalarStyle, Span};

use super::resolve::{Resolved, resolve_plain, resolved_to_value};
use crate::secret::SecretBytes;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Value};

/// Deepest nesting accepted (maps and lists).
pub(crate) const MAX_DEPTH: usize = 256;
/// Most values (after alias expansion) a file may produce.
pub(crate) const MAX_NODES: usize = 1_000_000;

fn perr(detail: impl Into<String>) -> SopsError {
    SopsError::parse("yaml", detail)
}

/// One comment found in the source.
#[derive(Debug, Clone)]
struct Comment {
    /// Byte offset of the `#`.
    pos: usize,
    line: usize,
    col: usize,
    /// Text after `#` (what sops stores).
    text: String,
    /// Whether content precedes it on its line.
    trailing: bool,
    /// How yaml.v3 attaches it (see `classify_gap`).
    attach: Attach,
    classified: bool,
}

/// Where a whole-line comment between two values goes, as yaml.v3's scanner decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// Foot of the value above: stays in the innermost collection that held it, whatever its
    /// indentation.
    DeepFoot,
    /// Foot comment anchored at its own position: the innermost collection, among those that
    /// end here, whose items are not indented deeper than the comment.
    Foot,
    /// Head comment of the next value: goes where that value goes.
    Head,
}

enum FrameKind {
    Map {
        entries: Vec<MapItem>,
        key: Option<(String, usize)>,
    },
    Seq {
        entries: Vec<Value>,
    },
}

struct Frame {
    kind: FrameKind,
    /// Column of the collection's items (for a block collection).
    col: usize,
    /// Per non-comment entry: its source line, its index in `entries` (for trailing comments),
    /// and whether its value is a flow collection (which takes a trailing comment inside).
    lines: Vec<(usize, usize, bool)>,
    /// A `[...]`/`{...}` collection rather than a block one.
    flow: bool,
    /// How many leading entries are comments that preceded the collection's opening.
    held: usize,
    /// Comments at or right of this column that precede the collection's end belong to it. For
    /// an indentless sequence (`key:` then `- item` at the key's column) that is one past its
    /// dashes: yaml.v3 gives comments at the dash column to the enclosing mapping.
    close_col: usize,
    anchor: usize,
    /// Path segment of this frame in its parent (for error messages).
    path: String,
    /// Keys defined so far (maps only), for the duplicate-key check.
    seen: std::collections::HashSet<String>,
}

struct Builder<'a> {
    src: &'a str,
    char_to_byte: Vec<usize>,
    line_starts: Vec<usize>,
    comments: Vec<Comment>,
    next_comment: usize,
    /// Anchored values with their size in values (checked before an alias copies one).
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
    frames: Vec<Frame>,
    held: Vec<Comment>,
    /// Last source line of the most recent value (scalar, alias or flow collection).
    last_content_line: usize,
}

/// Parses every document of `src`. Each must be a mapping (or empty).
pub(crate) fn parse_documents(src: &str) -> Result<Vec<Map>, SopsError> {
    let src_bytes = src.as_bytes();
    let mut char_to_byte: Vec<usize> = src.char_indices().map(|(b, _)| b).collect();
    char_to_byte.push(src.len());
    let mut line_starts = vec![0usize];
    for (i, b) in src_bytes.iter().enumerate() {
        if *b == b'\n' {
            line_starts.push(i + 1);
        }
    }

    let mut events: Vec<(PEvent<'_>, Span)> = Vec::new();
    for item in Parser::new_from_str(src) {
        match item {
            Ok(ev) => events.push(ev),
            Err(e) => {
                let m = e.marker();
                return Err(perr(format!(
                    "line {}, column {}: {}",
                    m.line(),
                    m.col() + 1,
                    e.info()
                )));
            }
        }
    }

    let mut b = Builder {
        src,
        char_to_byte,
        line_starts,
        comments: Vec::new(),
        next_comment: 0,
        anchors: HashMap::new(),
        nodes: 0,
        frames: Vec::new(),
        held: Vec::new(),
        last_content_line: 0,
    };
    b.comments = b.find_comments(&events);
    b.build(&events)
}

impl Builder<'_> {
    fn byte(&self, char_index: usize) -> usize {
        self.char_to_byte
            .get(char_index)
            .copied()
            .unwrap_or(self.src.len())
    }

    /// 1-based line and 0-based column (in characters) of a byte offset, which is first moved
    /// back to a character boundary.
    fn line_col(&self, byte: usize) -> (usize, usize) {
        let mut byte = byte.min(self.src.len());
        while !self.src.is_char_boundary(byte) {
            byte -= 1;
        }
        let line = match self.line_starts.binary_search(&byte) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let col = self.src[self.line_starts[line]..byte].chars().count();
        (line + 1, col)
    }

    /// Byte ranges of the source that hold scalar text, in order.
    fn occupied(&self, events: &[(PEvent<'_>, Span)]) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (ev, span) in events {
            let (s, e) = (self.byte(span.start.index()), self.byte(span.end.index()));
            let range = match ev {
                PEvent::Scalar(_, ScalarStyle::DoubleQuoted, _, _) => self.quoted_range(s, b'"'),
                PEvent::Scalar(_, ScalarStyle::SingleQuoted, _, _) => self.quoted_range(s, b'\''),
                PEvent::Scalar(..) | PEvent::Alias(_) => Some((s, e.max(s))),
                PEvent::DocumentStart(true) => Some((s, e.max(s))),
                _ => None,
            };
            if let Some((s, e)) = range
                && e > s
            {
                if let Some(last) = out.last_mut()
                    && s < last.1
                {
                    last.1 = last.1.max(e);
                    continue;
                }
                out.push((s, e));
            }
        }
        out
    }

    /// The exact extent of a quoted scalar starting at or after `from` (saphyr's end marker for
    /// quoted scalars runs past trailing comments).
    fn quoted_range(&self, from: usize, quote: u8) -> Option<(usize, usize)> {
        let b = self.src.as_bytes();
        let mut i = from;
        while i < b.len() && b[i] != quote {
            i += 1;
        }
        let start = i;
        i += 1;
        while i < b.len() {
            if quote == b'"' && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == quote {
                if quote == b'\'' && i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 2;
                    continue;
                }
                return Some((start, i + 1));
            }
            i += 1;
        }
        Some((start, b.len()))
    }

    fn find_comments(&self, events: &[(PEvent<'_>, Span)]) -> Vec<Comment> {
        let occ = self.occupied(events);
        let b = self.src.as_bytes();
        let mut out = Vec::new();
        let mut occ_i = 0;
        let mut i = 0;
        while i < b.len() {
            while occ_i < occ.len() && occ[occ_i].1 <= i {
                occ_i += 1;
            }
            if occ_i < occ.len() && occ[occ_i].0 <= i {
                i = occ[occ_i].1;
                continue;
            }
            if b[i] == b'#' && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r')) {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .map_or(b.len(), |p| i + p);
                let (line, col) = self.line_col(i);
                let line_start = self.line_starts[line - 1];
                let trailing = b[line_start..i].iter().any(|c| !matches!(c, b' ' | b'\t'));
                out.push(Comment {
                    pos: i,
                    line,
                    col,
                    text: self.src[i + 1..end].to_string(),
                    trailing,
                    attach: Attach::Head,
                    classified: false,
                });
                i = end;
                continue;
            }
            i += 1;
        }
        out
    }

    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.frames {
            if !f.path.is_empty() {
                p.push_str(&f.path);
            }
        }
        if p.is_empty() {
            "the document root".into()
        } else {
            p
        }
    }

    fn count_node(&mut self, n: usize) -> Result<(), SopsError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(perr(format!(
                "document expands to more than {MAX_NODES} values (alias expansion bomb?) near {}",
                self.path()
            )));
        }
        Ok(())
    }

    /// At the end of the innermost collection (whose end marker sits at the next token), takes
    /// the comments before `pos` that are indented at least as deep as its items.
    fn flush_closing(&mut self, pos: usize) {
        let (indent, col, flow) = self
            .frames
            .last()
            .map_or((0, 0, false), |f| (f.col, f.close_col, f.flow));
        if flow {
            // Everything before a flow collection's closer is inside it.
            self.flush_comments(pos, false);
            return;
        }
        self.classify_gap(pos, indent);
        while self.next_comment < self.comments.len() {
            let c = &self.comments[self.next_comment];
            let take = c.trailing
                || c.attach == Attach::DeepFoot
                || (c.attach == Attach::Foot && c.col >= col);
            if c.pos >= pos || !take {
                break;
            }
            let c = c.clone();
            self.next_comment += 1;
            self.place_comment(&c, false);
        }
    }

    fn line_text(&self, line: usize) -> &str {
        let start = self
            .line_starts
            .get(line - 1)
            .copied()
            .unwrap_or(self.src.len());
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.src.len());
        &self.src[start..end]
    }

    /// Splits the whole-line comments between the last value and byte `next` into yaml.v3's
    /// comment blocks and marks the blocks its scanner makes a *foot* of that value: a block
    /// followed by a line indented less than `indent` (the item column of the collection holding
    /// the value) and at another column than the block's first line, or a block directly after
    /// the value that ends at a blank line without being dedented. Other blocks are *head*
    /// comments of what follows and are placed by column.
    fn classify_gap(&mut self, next: usize, indent: usize) {
        let first = self.next_comment;
        if first >= self.comments.len()
            || self.comments[first].classified
            || self.comments[first].pos >= next
        {
            return;
        }
        let (next_line, _) = self.line_col(next.min(self.src.len()));
        let mut block: Vec<usize> = Vec::new();
        let mut start_col = 0;
        let mut first_empty = true;
        let mut recent_empty = false;
        let mut idx = first;
        // Only the first block is tied to the value above; yaml.v3 anchors later foot blocks
        // at their own position, which the column rule reproduces.
        // A later block that follows a blank line goes with the next value instead.
        let mut first_block = true;
        let mut blank_before = false;
        let mut mark_deep = |comments: &mut Vec<Comment>,
                             block: &mut Vec<usize>,
                             deep: bool,
                             blank_before: bool| {
            if block.is_empty() {
                return;
            }
            for &i in block.iter() {
                comments[i].attach = if deep && first_block {
                    Attach::DeepFoot
                } else if blank_before {
                    Attach::Head
                } else {
                    Attach::Foot
                };
            }
            first_block = false;
            block.clear();
        };
        let from = self.last_content_line + 1;
        for line in from..=next_line.max(from) {
            let text = self.line_text(line);
            let body = text.trim_start_matches([' ', '\t']);
            let col = text.len() - body.len();
            let (blank, is_comment) = (body.trim().is_empty(), body.starts_with('#'));
            if blank {
                if !block.is_empty() && !recent_empty && first_empty && start_col < indent {
                    // Dedented and followed by a blank line: unrelated to the value above, it
                    // goes where the next value goes.
                    for &i in &block {
                        self.comments[i].attach = Attach::Head;
                    }
                    block.clear();
                } else if !block.is_empty() && !recent_empty && first_empty {
                    let mut b = std::mem::take(&mut block);
                    mark_deep(&mut self.comments, &mut b, true, blank_before);
                }
                first_empty = false;
                recent_empty = true;
                continue;
            }
            if !block.is_empty() && col < indent && col != start_col {
                let mut b = std::mem::take(&mut block);
                mark_deep(&mut self.comments, &mut b, true, blank_before);
            }
            if !is_comment {
                break;
            }
            while idx < self.comments.len() && self.comments[idx].line < line {
                idx += 1;
            }
            if idx >= self.comments.len()
                || self.comments[idx].line != line
                || self.comments[idx].pos >= next
            {
                break;
            }
            if block.is_empty() {
                start_col = col;
                blank_before = recent_empty;
            }
            block.push(idx);
            recent_empty = false;
        }
        for &i in &block {
            self.comments[i].attach = Attach::Head;
        }
        let mut i = first;
        while i < self.comments.len() && self.comments[i].pos < next {
            self.comments[i].classified = true;
            i += 1;
        }
    }

    /// Places every comment that starts before byte `pos`.
    fn flush_comments(&mut self, pos: usize, opening: bool) {
        while self.next_comment < self.comments.len() && self.comments[self.next_comment].pos < pos
        {
            let c = self.comments[self.next_comment].clone();
            self.next_comment += 1;
            self.place_comment(&c, opening);
        }
    }

    /// `opening`: the next event opens a collection that is the value of the innermost frame's
    /// pending key (or a new item of the innermost list); whole-line comments before it go into
    /// that new collection, which does not exist yet, so they are held back.
    fn place_comment(&mut self, c: &Comment, opening: bool) {
        if self.frames.is_empty() {
            // Before the document's top-level mapping: it becomes its first items.
            self.held.push(c.clone());
            return;
        }
        if c.trailing {
            // A line comment on the first line of a mapping that is a list item (`- k: v # c`)
            // is the item's comment: it goes into the list, before the item.
            let n = self.frames.len();
            if n >= 2
                && matches!(self.frames[n - 2].kind, FrameKind::Seq { .. })
                && let FrameKind::Map { key, .. } = &self.frames[n - 1].kind
            {
                let first_line = self.frames[n - 1]
                    .lines
                    .first()
                    .map(|l| l.0)
                    .or_else(|| key.as_ref().map(|k| k.1));
                // …unless the line ends with a flow collection, which takes it (below).
                let flow_last =
                    matches!(self.frames[n - 1].lines.last(), Some(&(l, _, true)) if l == c.line);
                if first_line == Some(c.line)
                    && !flow_last
                    && let FrameKind::Seq { entries } = &mut self.frames[n - 2].kind
                {
                    entries.push(Value::Comment(c.text.clone()));
                    return;
                }
            }
            // The innermost frame that has an item (or a pending key) starting on this line.
            for fi in (0..self.frames.len()).rev() {
                let f = &mut self.frames[fi];
                if let FrameKind::Map {
                    entries,
                    key: Some((_, kl)),
                } = &mut f.kind
                    && *kl == c.line
                {
                    entries.push(MapItem::Comment(c.text.clone()));
                    return;
                }
                if let Some(&(line, idx, flow)) = f.lines.last()
                    && line == c.line
                {
                    match &mut f.kind {
                        // sops keeps a flow collection's line comment inside the collection.
                        FrameKind::Map { entries, .. } if flow => match entries.get_mut(idx) {
                            Some(MapItem::Pair(_, Value::Map(m))) => {
                                m.0.insert(0, MapItem::Comment(c.text.clone()));
                                return;
                            }
                            Some(MapItem::Pair(_, Value::List(l))) => {
                                l.insert(0, Value::Comment(c.text.clone()));
                                return;
                            }
                            _ => entries.insert(idx, MapItem::Comment(c.text.clone())),
                        },
                        FrameKind::Map { entries, .. } => {
                            entries.insert(idx, MapItem::Comment(c.text.clone()))
                        }
                        FrameKind::Seq { entries } => {
                            entries.insert(idx, Value::Comment(c.text.clone()))
                        }
                    }
                    if let Some(last) = f.lines.last_mut() {
                        last.1 += 1;
                    }
                    return;
                }
            }
        }
        if opening {
            self.held.push(c.clone());
            return;
        }
        // Whole-line comment: it goes to the innermost open collection. Comments indented less
        // than a collection's items were already left to the parent when it closed.
        let fi = self.frames.len() - 1;
        let f = &mut self.frames[fi];
        let text = c.text.clone();
        match &mut f.kind {
            FrameKind::Map { entries, key } => {
                // Between a key and its scalar value, sops puts it before the pair, which is
                // pushed later: appending is right in both cases.
                let _ = key;
                entries.push(MapItem::Comment(text));
            }
            FrameKind::Seq { entries } => entries.push(Value::Comment(text)),
        }
    }
}

impl Builder<'_> {
    fn build(mut self, events: &[(PEvent<'_>, Span)]) -> Result<Vec<Map>, SopsError> {
        let mut docs: Vec<Map> = Vec::new();
        let mut doc_root: Option<Map> = None;
        let mut in_doc = false;
        let mut i = 0;
        while i < events.len() {
            let (ev, span) = &events[i];
            let pos = self.byte(span.start.index());
            let (line, col) = (span.start.line(), span.start.col());
            i += 1;
            match ev {
                PEvent::StreamStart | PEvent::Nothing => {}
                PEvent::StreamEnd => {
                    self.flush_comments(usize::MAX, false);
                }
                PEvent::DocumentStart(_) => {
                    in_doc = true;
                    doc_root = None;
                }
                PEvent::DocumentEnd => {
                    // Comments up to the next document's start belong to this document.
                    let next_pos = events[i..]
                        .iter()
                        .find(|(e, _)| matches!(e, PEvent::DocumentStart(_) | PEvent::StreamEnd))
                        .map_or(usize::MAX, |(e, s)| match e {
                            PEvent::DocumentStart(true) => self.byte(s.start.index()),
                            _ => usize::MAX,
                        });
                    let marker = next_pos;
                    let next_pos = self.extend_over_marker_foot(marker);
                    if let Some(mut root) = doc_root.take() {
                        // Trailing comments of the document.
                        self.frames.push(Frame {
                            kind: FrameKind::Map {
                                entries: std::mem::take(&mut root.0),
                                key: None,
                            },
                            col: 0,
                            lines: Vec::new(),
                            flow: false,
                            held: 0,
                            close_col: 0,
                            anchor: 0,
                            path: String::new(),
                            seen: std::collections::HashSet::new(),
                        });
                        self.flush_comments(marker, false);
                        if next_pos > marker {
                            // The block after `---` becomes the document's foot comment,
                            // replacing the trailing comments it had (yaml.v3 keeps one).
                            if let Some(Frame {
                                kind: FrameKind::Map { entries, .. },
                                ..
                            }) = self.frames.last_mut()
                            {
                                while matches!(entries.last(), Some(MapItem::Comment(_))) {
                                    entries.pop();
                                }
                            }
                            self.flush_comments(next_pos, false);
                        }
                        let f = self.frames.pop().expect("document frame");
                        if let FrameKind::Map { entries, .. } = f.kind {
                            root.0 = entries;
                        }
                        docs.push(root);
                    } else {
                        // An empty document: keep its comments as a document of comments.
                        let mut m = Map::default();
                        while self.next_comment < self.comments.len()
                            && self.comments[self.next_comment].pos < next_pos
                        {
                            m.0.push(MapItem::Comment(
                                self.comments[self.next_comment].text.clone(),
                            ));
                            self.next_comment += 1;
                        }
                        docs.push(m);
                    }
                    in_doc = false;
                }
                PEvent::MappingStart(anchor, _) | PEvent::SequenceStart(anchor, _) => {
                    let is_map = matches!(ev, PEvent::MappingStart(..));
                    if self.frames.is_empty() && !is_map {
                        return Err(perr(format!(
                            "line {line}: the top level of a document must be a mapping, not a sequence"
                        )));
                    }
                    if self.frames.len() >= MAX_DEPTH {
                        return Err(perr(format!(
                            "line {line}: nesting deeper than {MAX_DEPTH} levels"
                        )));
                    }
                    self.count_node(1)?;
                    let path = self.child_path(line)?;
                    // A block sequence's items are at its dashes, left of where its first item's
                    // content (saphyr's start marker) is.
                    // A `[` starts a flow sequence, unless it is the first item of a block
                    // sequence: then saphyr starts both at that `[` (the next event is the
                    // flow sequence, at the same place).
                    let at_bracket = self.src.as_bytes().get(pos) == Some(&b'[');
                    let block_before_flow = at_bracket
                        && matches!(events.get(i), Some((PEvent::SequenceStart(..), sp)) if self.byte(sp.start.index()) == pos);
                    let dash = if is_map || (at_bracket && !block_before_flow) {
                        None
                    } else {
                        self.dash_col(pos)
                    };
                    let col = dash.unwrap_or(col);
                    // A block sequence whose first item is `[...]` also starts at a `[`.
                    let flow =
                        dash.is_none() && matches!(self.src.as_bytes().get(pos), Some(b'[' | b'{'));
                    let indentless = !is_map
                        && matches!(
                            self.frames.last(),
                            Some(Frame { kind: FrameKind::Map { .. }, col: parent, .. }) if *parent == col
                        );
                    let close_col = if indentless { col + 1 } else { col };
                    // Comments before a collection that is a map value go inside it; before a
                    // list item they are items of the list (sops reads them as the item's head).
                    let opening = matches!(
                        self.frames.last(),
                        None | Some(Frame {
                            kind: FrameKind::Map { key: Some(_), .. },
                            ..
                        })
                    );
                    self.held.clear();
                    self.flush_comments(pos, opening);
                    let held = std::mem::take(&mut self.held);
                    let held_count = held.len();
                    self.frames.push(Frame {
                        kind: if is_map {
                            FrameKind::Map {
                                entries: held
                                    .into_iter()
                                    .map(|c| MapItem::Comment(c.text))
                                    .collect(),
                                key: None,
                            }
                        } else {
                            FrameKind::Seq {
                                entries: held.into_iter().map(|c| Value::Comment(c.text)).collect(),
                            }
                        },
                        col,
                        lines: Vec::new(),
                        flow,
                        held: held_count,
                        close_col,
                        anchor: *anchor,
                        path,
                        seen: std::collections::HashSet::new(),
                    });
                }
                PEvent::MappingEnd | PEvent::SequenceEnd => {
                    self.flush_closing(pos);
                    let f = self
                        .frames
                        .pop()
                        .ok_or_else(|| perr("unbalanced collection end"))?;
                    let mut value = match f.kind {
                        FrameKind::Map { entries, .. } => Value::Map(Map(entries)),
                        FrameKind::Seq { entries } => Value::List(entries),
                    };
                    // yaml.v3 loses the comments of an empty flow collection (`k: {} # c` is
                    // written as `k: {` / `# c` / `}` and read back as `{}`).
                    if f.flow && f.lines.is_empty() {
                        // Comments before the `{` (held when it opened) are kept.
                        match &mut value {
                            Value::Map(m) => m.0.truncate(f.held),
                            Value::List(l) => l.truncate(f.held),
                            _ => {}
                        }
                    }
                    if f.anchor != 0 {
                        self.anchors
                            .insert(f.anchor, (value.clone(), value_size(&value)));
                    }
                    if self.frames.is_empty() {
                        match value {
                            Value::Map(m) => doc_root = Some(m),
                            _ => return Err(perr("the top level of a document must be a mapping")),
                        }
                    } else {
                        if f.flow {
                            self.last_content_line = line;
                        }
                        self.add_value(value, f.lines.first().map_or(line, |l| l.0), line, f.flow)?;
                    }
                }
                PEvent::Scalar(text, style, anchor, tag) => {
                    self.flush_comments(pos, false);
                    self.count_node(1)?;
                    if self.frames.is_empty() {
                        // A document that is a bare scalar: only an empty one (null) is allowed.
                        let is_null = *style == ScalarStyle::Plain
                            && tag.is_none()
                            && resolve_plain(text) == Resolved::Null;
                        if !is_null || !in_doc {
                            return Err(perr(format!(
                                "line {line}: the top level of a document must be a mapping, not a scalar"
                            )));
                        }
                        continue;
                    }
                    let tag_str = tag.as_ref().map(|t| {
                        let handle = if t.handle == "tag:yaml.org,2002:" {
                            "!!"
                        } else {
                            t.handle.as_str()
                        };
                        format!("{handle}{}", t.suffix)
                    });
                    let value = scalar_value(text, *style, tag_str.as_deref()).map_err(|d| {
                        perr(format!(
                            "line {line}, column {}: {d} at {}",
                            col + 1,
                            self.path()
                        ))
                    })?;
                    if *anchor != 0 {
                        self.anchors.insert(*anchor, (value.clone(), 1));
                    }
                    self.last_content_line = self.scalar_last_line(pos, span, *style);
                    self.add_value(value, line, line, false)?;
                }
                PEvent::Alias(id) => {
                    self.flush_comments(pos, false);
                    let size = self.anchors.get(id).map(|a| a.1).ok_or_else(|| {
                        perr(format!("line {line}: unknown alias at {}", self.path()))
                    })?;
                    // Count before copying, so an alias bomb fails before it allocates.
                    self.count_node(size)?;
                    let value = self
                        .anchors
                        .get(id)
                        .map(|a| a.0.clone())
                        .unwrap_or(Value::Null);
                    if self.frames.is_empty() {
                        return Err(perr(format!(
                            "line {line}: the top level of a document must be a mapping"
                        )));
                    }
                    self.last_content_line = last_line(span);
                    self.add_value(value, line, line, false)?;
                }
            }
        }
        if docs.is_empty() {
            docs.push(Map::default());
        }
        Ok(docs)
    }

    /// yaml.v3 makes a comment block that starts on the line right after a bare `---` and is
    /// followed by a blank line a foot comment of the *previous* document. Returns the position
    /// up to which comments belong to the document that ends before the `---` at `marker`.
    fn extend_over_marker_foot(&self, marker: usize) -> usize {
        if marker >= self.src.len() {
            return marker;
        }
        let (line, _) = self.line_col(marker);
        if self.line_text(line).trim_end() != "---" {
            return marker;
        }
        let mut l = line + 1;
        let mut end = marker;
        while l <= self.line_starts.len() {
            let text = self.line_text(l);
            if text.trim_start().starts_with('#') {
                end = self.line_starts[l - 1] + text.len();
                l += 1;
                continue;
            }
            break;
        }
        let blank_after = l > self.line_starts.len() || self.line_text(l).trim().is_empty();
        if end > marker && blank_after && l <= self.line_starts.len() {
            end
        } else {
            marker
        }
    }

    /// The last source line holding text of a scalar. saphyr's end marker overshoots: past the
    /// trailing comment of a quoted scalar, into the indentation of the line after a block one.
    fn scalar_last_line(&self, start: usize, span: &Span, style: ScalarStyle) -> usize {
        let end = match style {
            ScalarStyle::DoubleQuoted => self.quoted_range(start, b'"').map_or(start, |r| r.1),
            ScalarStyle::SingleQuoted => self.quoted_range(start, b'\'').map_or(start, |r| r.1),
            _ => self.byte(span.end.index()),
        };
        let b = self.src.as_bytes();
        let mut i = end.min(b.len());
        while i > start && b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        if i == 0 {
            return last_line(span);
        }
        self.line_col(i - 1).0
    }

    /// The column of the `-` that introduces the block sequence item whose content starts at byte
    /// `pos`, if there is one.
    fn dash_col(&self, pos: usize) -> Option<usize> {
        let b = self.src.as_bytes();
        // saphyr starts a sequence that is itself a list item (`- - x`) at its own dash.
        if b.get(pos) == Some(&b'-')
            && matches!(b.get(pos + 1), Some(b' ' | b'\t' | b'\n' | b'\r') | None)
        {
            return Some(self.line_col(pos).1);
        }
        let mut i = pos.min(b.len());
        while i > 0 && matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
            i -= 1;
        }
        if i > 0 && b[i - 1] == b'-' {
            Some(self.line_col(i - 1).1)
        } else {
            None
        }
    }

    /// The path segment for a collection about to open under the innermost frame.
    fn child_path(&self, line: usize) -> Result<String, SopsError> {
        match self.frames.last() {
            None => Ok(String::new()),
            Some(Frame {
                kind: FrameKind::Map {
                    key: Some((k, _)), ..
                },
                ..
            }) => Ok(format!("[{k:?}]")),
            Some(Frame {
                kind: FrameKind::Map { key: None, .. },
                ..
            }) => Err(perr(format!(
                "line {line}: mapping keys must be strings, not collections (at {})",
                self.path()
            ))),
            Some(Frame {
                kind: FrameKind::Seq { entries },
                ..
            }) => Ok(format!(
                "[{}]",
                entries
                    .iter()
                    .filter(|v| !matches!(v, Value::Comment(_)))
                    .count()
            )),
        }
    }

    /// Adds a completed value to the innermost frame (as a key, a map value or a list item).
    fn add_value(
        &mut self,
        value: Value,
        start_line: usize,
        line: usize,
        flow: bool,
    ) -> Result<(), SopsError> {
        enum KeyProblem {
            NotUtf8,
            NotString(&'static str),
            Duplicate(String),
        }
        let f = self
            .frames
            .last_mut()
            .ok_or_else(|| perr("value outside a document"))?;
        let mut problem = None;
        match &mut f.kind {
            FrameKind::Map { entries, key } => match key.take() {
                None => {
                    let k = match value {
                        Value::Str(s) => match String::from_utf8(s.expose().to_vec()) {
                            Ok(k) => Some(k),
                            Err(_) => {
                                problem = Some(KeyProblem::NotUtf8);
                                None
                            }
                        },
                        other => {
                            problem = Some(KeyProblem::NotString(kind_name(&other)));
                            None
                        }
                    };
                    if let Some(k) = k {
                        if !f.seen.insert(k.clone()) {
                            problem = Some(KeyProblem::Duplicate(k));
                        } else {
                            let _ = entries;
                            *key = Some((k, line));
                        }
                    }
                }
                Some((k, kl)) => {
                    f.lines.push((kl, entries.len(), flow));
                    entries.push(MapItem::Pair(k, value));
                }
            },
            FrameKind::Seq { entries } => {
                f.lines.push((start_line, entries.len(), false));
                entries.push(value);
            }
        }
        let Some(problem) = problem else {
            return Ok(());
        };
        let path = self.path();
        Err(perr(match problem {
            KeyProblem::NotUtf8 => format!("line {line}: key is not valid UTF-8 at {path}"),
            KeyProblem::NotString(kind) => {
                format!("line {line}: only string keys are supported, found a {kind} key at {path}")
            }
            KeyProblem::Duplicate(k) => {
                format!("line {line}: mapping key {k:?} already defined at {path}")
            }
        }))
    }
}

/// The last line a span covers (an end marker at column 0 belongs to the line before).
fn last_line(span: &Span) -> usize {
    if span.end.col() == 0 && span.end.line() > span.start.line() {
        span.end.line() - 1
    } else {
        span.end.line()
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "float",
        Value::Time(_) => "timestamp",
        Value::Map(_) => "mapping",
        Value::List(_) => "sequence",
        _ => "string",
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Map(m) => {
            1 + m
                .0
                .iter()
                .map(|i| match i {
                    MapItem::Pair(_, v) => value_size(v),
                    MapItem::Comment(_) => 1,
                })
                .sum::<usize>()
        }
        Value::List(l) => 1 + l.iter().map(value_size).sum::<usize>(),
        _ => 1,
    }
}

/// Decodes one scalar like yaml.v3 decoding into `interface{}`.
fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    let quoted = style != ScalarStyle::Plain;
    match tag {
        None if quoted => Ok(Value::str(text)),
        None => Ok(resolved_to_value(resolve_plain(text), text)),
        Some("!!str") | Some("!") => Ok(Value::str(text)),
        Some("!!binary") => {
            use base64::Engine;
            let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map(|b| Value::Str(SecretBytes::from(b)))
                .map_err(|_| "!!binary value contains invalid base64 data".to_string())
        }
        Some(t @ ("!!int" | "!!float" | "!!bool" | "!!null" | "!!timestamp")) => {
            let r = resolve_plain(text);
            match (t, r) {
                ("!!int", r @ Resolved::Int(_))
                | ("!!bool", r @ Resolved::Bool(_))
                | ("!!null", r @ Resolved::Null) => Ok(resolved_to_value(r, text)),
                ("!!float", Resolved::Float(f)) => Ok(Value::Float(f)),
                ("!!float", Resolved::Int(i)) => Ok(Value::Float(i as f64)),
                ("!!timestamp", Resolved::Timestamp(ts)) => Ok(Value::Time(ts)),
                ("!!timestamp", _) => super::resolve::parse_timestamp(text)
                    .map(Value::Time)
                    .ok_or_else(|| format!("cannot decode value as {t}")),
                _ => Err(format!("cannot decode value as {t}")),
            }
        }
        // Unknown local or global tags: yaml.v3 decodes the scalar by its plain resolution.
        Some(_) if quoted => Ok(Value::str(text)),
        Some(_) => Ok(resolved_to_value(resolve_plain(text), text)),
    }
}
