//! A YAML emitter that writes exactly the bytes Go's yaml.v3 writes for the documents sops builds
//! (block mappings and sequences, `{}`/`[]` for empty ones, scalars, head/line/foot comments).
//!
//! sops serializes through yaml.v3's libyaml-derived emitter; its output (indentation, scalar
//! style fallbacks, where blank lines appear around foot comments) is a function of the
//! emitter's internal state (current column, "whitespace"/"indention" flags, indent stack,
//! foot indent). This module therefore reimplements that state machine over an event list
//! instead of pretty-printing a tree: the same events and the same state give the same bytes.
//! Anchors, aliases, directives, the canonical mode and folded scalars are never produced by
//! sops and are left out. Line width is unlimited, as in yaml.v3.

/// A scalar presentation style, as requested on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
}

/// One emitter event. Comments are raw yaml.v3 comment texts (`#`-prefixed lines joined by `\n`).
#[derive(Debug, Clone)]
pub(crate) enum Event {
    StreamStart,
    StreamEnd,
    DocStart {
        implicit: bool,
    },
    DocEnd,
    MapStart {
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    MapEnd {
        tail: Vec<u8>,
        line: Vec<u8>,
        foot: Vec<u8>,
    },
    SeqStart {
        head: Vec<u8>,
    },
    SeqEnd {
        line: Vec<u8>,
        foot: Vec<u8>,
    },
    Scalar(ScalarEvent),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ScalarEvent {
    pub value: Vec<u8>,
    /// Explicit tag suffix under `!!` (only `binary` is ever used); `None` means implicit.
    pub tag: Option<&'static str>,
    pub style: Option<Style>,
    pub head: Vec<u8>,
    pub line: Vec<u8>,
    pub foot: Vec<u8>,
    pub tail: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StreamStart,
    FirstDocStart,
    DocStart,
    DocContent,
    DocEnd,
    FlowSeqFirst,
    FlowSeqTrail,
    FlowSeqItem,
    FlowMapFirst,
    FlowMapTrail,
    FlowMapKey,
    FlowMapSimpleValue,
    FlowMapValue,
    BlockSeqFirst,
    BlockSeqItem,
    BlockMapFirst,
    BlockMapKey,
    BlockMapSimpleValue,
    BlockMapValue,
    End,
}

#[derive(Default)]
struct ScalarData<'a> {
    value: &'a [u8],
    multiline: bool,
    flow_plain_allowed: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
    style: Option<Style>,
}

/// Emitter error (an event sequence the state machine cannot accept: a bug in the caller).
#[derive(Debug)]
pub(crate) struct EmitError(pub &'static str);

pub(crate) struct Emitter<'a> {
    out: Vec<u8>,
    best_indent: i64,
    best_width: i64,
    state: State,
    states: Vec<State>,
    indent: i64,
    indents: Vec<i64>,
    flow_level: i64,
    sequence_context: bool,
    simple_key_context: bool,
    column: i64,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
    foot_indent: i64,
    head_comment: Vec<u8>,
    line_comment: Vec<u8>,
    foot_comment: Vec<u8>,
    tail_comment: Vec<u8>,
    key_line_comment: Vec<u8>,
    tag_handle: Vec<u8>,
    tag_suffix: Vec<u8>,
    scalar: ScalarData<'a>,
    events: &'a [Event],
    head: usize,
}

/// Runs the emitter over a complete event list (StreamStart .. StreamEnd) with the given indent.
pub(crate) fn emit_events(events: Vec<Event>, indent: i64) -> Result<Vec<u8>, EmitError> {
    let mut e = Emitter {
        out: Vec::new(),
        best_indent: indent,
        best_width: -1,
        state: State::StreamStart,
        states: Vec::new(),
        indent: -1,
        indents: Vec::new(),
        flow_level: 0,
        sequence_context: false,
        simple_key_context: false,
        column: 0,
        whitespace: true,
        indention: true,
        open_ended: false,
        foot_indent: -1,
        head_comment: Vec::new(),
        line_comment: Vec::new(),
        foot_comment: Vec::new(),
        tail_comment: Vec::new(),
        key_line_comment: Vec::new(),
        tag_handle: Vec::new(),
        tag_suffix: Vec::new(),
        scalar: ScalarData::default(),
        events: &events,
        head: 0,
    };
    for (i, ev) in events.iter().enumerate() {
        e.head = i;
        e.analyze_event(ev);
        e.state_machine(ev)?;
    }
    Ok(e.out)
}

fn width(b: u8) -> usize {
    if b & 0x80 == 0 {
        1
    } else if b & 0xE0 == 0xC0 {
        2
    } else if b & 0xF0 == 0xE0 {
        3
    } else if b & 0xF8 == 0xF0 {
        4
    } else {
        1
    }
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn is_space(b: &[u8], i: usize) -> bool {
    at(b, i) == b' '
}

fn is_blank(b: &[u8], i: usize) -> bool {
    matches!(at(b, i), b' ' | b'\t')
}

fn is_break(b: &[u8], i: usize) -> bool {
    let c = at(b, i);
    c == b'\r'
        || c == b'\n'
        || (c == 0xC2 && at(b, i + 1) == 0x85)
        || (c == 0xE2 && at(b, i + 1) == 0x80 && matches!(at(b, i + 2), 0xA8 | 0xA9))
}

fn is_breakz(b: &[u8], i: usize) -> bool {
    is_break(b, i) || at(b, i) == 0
}

fn is_blankz(b: &[u8], i: usize) -> bool {
    is_blank(b, i) || is_breakz(b, i)
}

fn is_bom(b: &[u8]) -> bool {
    b.starts_with(&[0xEF, 0xBB, 0xBF])
}

fn is_printable(b: &[u8], i: usize) -> bool {
    let c = at(b, i);
    let c1 = at(b, i + 1);
    let c2 = at(b, i + 2);
    c == 0x0A
        || (0x20..=0x7E).contains(&c)
        || (c == 0xC2 && c1 >= 0xA0)
        || (c > 0xC2 && c < 0xED)
        || (c == 0xED && c1 < 0xA0)
        || c == 0xEE
        || (c == 0xEF && !(c1 == 0xBB && c2 == 0xBF) && !(c1 == 0xBF && (c2 == 0xBE || c2 == 0xBF)))
}

fn is_alpha(b: &[u8], i: usize) -> bool {
    let c = at(b, i);
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

impl<'a> Emitter<'a> {
    fn err<T>(&self, what: &'static str) -> Result<T, EmitError> {
        Err(EmitError(what))
    }

    fn pop_state(&mut self) -> Result<(), EmitError> {
        match self.states.pop() {
            Some(s) => {
                self.state = s;
                Ok(())
            }
            None => self.err("state stack underflow"),
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn put(&mut self, c: u8) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push(b'\n');
        self.column = 0;
        self.indention = true;
    }

    /// Copies one (possibly multi-byte) character of `s` at `*i`.
    fn write(&mut self, s: &[u8], i: &mut usize) {
        let w = width(s[*i]).min(s.len() - *i);
        self.out.extend_from_slice(&s[*i..*i + w]);
        self.column += 1;
        *i += w;
    }

    fn write_all(&mut self, s: &[u8]) {
        let mut i = 0;
        while i < s.len() {
            self.write(s, &mut i);
        }
    }

    fn write_break(&mut self, s: &[u8], i: &mut usize) {
        if s[*i] == b'\n' {
            self.put_break();
            *i += 1;
        } else {
            self.write(s, i);
            self.column = 0;
            self.indention = true;
        }
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { self.best_indent } else { 0 };
        } else if !indentless {
            if self.states.last() == Some(&State::BlockSeqItem) {
                self.indent += 2;
            } else {
                self.indent =
                    self.best_indent * ((self.indent + self.best_indent) / self.best_indent);
            }
        }
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        if self.foot_indent == indent {
            self.put_break();
        }
        while self.column < indent {
            self.put(b' ');
        }
        self.whitespace = true;
        self.foot_indent = -1;
    }

    fn write_indicator(
        &mut self,
        ind: &[u8],
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(b' ');
        }
        self.write_all(ind);
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
        self.open_ended = false;
    }

    fn write_tag_handle(&mut self, value: &[u8]) {
        if !self.whitespace {
            self.put(b' ');
        }
        self.write_all(value);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_tag_content(&mut self, value: &[u8]) {
        let mut i = 0;
        while i < value.len() {
            let must_write = matches!(
                value[i],
                b';' | b'/'
                    | b'?'
                    | b':'
                    | b'@'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
                    | b'_'
                    | b'.'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'['
                    | b']'
            ) || is_alpha(value, i);
            if must_write {
                self.write(value, &mut i);
            } else {
                let w = width(value[i]);
                for _ in 0..w {
                    let octet = at(value, i);
                    i += 1;
                    self.put(b'%');
                    self.put(hex_digit(octet >> 4));
                    self.put(hex_digit(octet & 0x0f));
                }
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_comment(&mut self, comment: &[u8]) {
        let mut breaks = false;
        let mut pound = false;
        let mut i = 0;
        while i < comment.len() {
            if is_break(comment, i) {
                self.write_break(comment, &mut i);
                breaks = true;
                pound = false;
            } else {
                if breaks {
                    self.write_indent();
                }
                if !pound {
                    if comment[i] != b'#' {
                        self.put(b'#');
                        self.put(b' ');
                    }
                    pound = true;
                }
                self.write(comment, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
        if !breaks {
            self.put_break();
        }
        self.whitespace = true;
    }

    fn process_head_comment(&mut self) {
        if !self.tail_comment.is_empty() {
            self.write_indent();
            let c = std::mem::take(&mut self.tail_comment);
            self.write_comment(&c);
            self.foot_indent = self.indent.max(0);
        }
        if self.head_comment.is_empty() {
            return;
        }
        self.write_indent();
        let c = std::mem::take(&mut self.head_comment);
        self.write_comment(&c);
    }

    /// A comment still to be written after the current flow item: the item then needs its `,`
    /// before the comment, and the next item starts on the trailing-comma path.
    fn has_trailing_comment(&self) -> bool {
        !self.line_comment.is_empty()
            || !self.foot_comment.is_empty()
            || !self.tail_comment.is_empty()
    }

    fn process_line_comment(&mut self) {
        if self.line_comment.is_empty() {
            return;
        }
        if !self.whitespace {
            self.put(b' ');
        }
        let c = std::mem::take(&mut self.line_comment);
        self.write_comment(&c);
    }

    fn process_foot_comment(&mut self) {
        if self.foot_comment.is_empty() {
            return;
        }
        self.write_indent();
        let c = std::mem::take(&mut self.foot_comment);
        self.write_comment(&c);
        self.foot_indent = self.indent.max(0);
    }

    fn analyze_event(&mut self, ev: &'a Event) {
        self.tag_handle.clear();
        self.tag_suffix.clear();
        self.scalar.value = &[];
        let (head, line, foot, tail): (&[u8], &[u8], &[u8], &[u8]) = match ev {
            Event::MapStart { head, tail } => (head, &[], &[], tail),
            Event::MapEnd { tail, line, foot } => (&[], line, foot, tail),
            Event::SeqStart { head } => (head, &[], &[], &[]),
            Event::SeqEnd { line, foot } => (&[], line, foot, &[]),
            Event::Scalar(s) => (&s.head, &s.line, &s.foot, &s.tail),
            _ => (&[], &[], &[], &[]),
        };
        if !head.is_empty() {
            self.head_comment = head.to_vec();
        }
        if !line.is_empty() {
            self.line_comment = line.to_vec();
        }
        if !foot.is_empty() {
            self.foot_comment = foot.to_vec();
        }
        if !tail.is_empty() {
            self.tail_comment = tail.to_vec();
        }
        if let Event::Scalar(s) = ev {
            if let Some(t) = s.tag {
                // The default `!!` directive maps tag:yaml.org,2002: to the `!!` handle.
                self.tag_handle = b"!!".to_vec();
                self.tag_suffix = t.as_bytes().to_vec();
            }
            self.analyze_scalar(&s.value);
        }
    }

    fn analyze_scalar(&mut self, value: &'a [u8]) {
        let sd = &mut self.scalar;
        sd.value = value;
        if value.is_empty() {
            sd.multiline = false;
            sd.flow_plain_allowed = false;
            sd.block_plain_allowed = true;
            sd.single_quoted_allowed = true;
            sd.block_allowed = false;
            return;
        }
        let (mut block_ind, mut flow_ind) = (false, false);
        let (mut line_breaks, mut special, mut tabs) = (false, false, false);
        let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
            (false, false, false, false);
        let (mut break_space, mut space_break) = (false, false);
        let (mut prev_space, mut prev_break) = (false, false);
        if value.starts_with(b"---") || value.starts_with(b"...") {
            block_ind = true;
            flow_ind = true;
        }
        let mut preceded_by_ws = true;
        let mut i = 0;
        while i < value.len() {
            let w = width(value[i]);
            let followed_by_ws = i + w >= value.len() || is_blank(value, i + w);
            if i == 0 {
                match value[i] {
                    b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>'
                    | b'\'' | b'"' | b'%' | b'@' | b'`' => {
                        flow_ind = true;
                        block_ind = true;
                    }
                    b'?' | b':' => {
                        flow_ind = true;
                        if followed_by_ws {
                            block_ind = true;
                        }
                    }
                    b'-' if followed_by_ws => {
                        flow_ind = true;
                        block_ind = true;
                    }
                    _ => {}
                }
            } else {
                match value[i] {
                    b',' | b'?' | b'[' | b']' | b'{' | b'}' => flow_ind = true,
                    b':' => {
                        flow_ind = true;
                        if followed_by_ws {
                            block_ind = true;
                        }
                    }
                    b'#' if preceded_by_ws => {
                        flow_ind = true;
                        block_ind = true;
                    }
                    _ => {}
                }
            }
            if value[i] == b'\t' {
                tabs = true;
            } else if !is_printable(value, i) {
                special = true;
            }
            if is_space(value, i) {
                if i == 0 {
                    leading_space = true;
                }
                if i + w == value.len() {
                    trailing_space = true;
                }
                if prev_break {
                    break_space = true;
                }
                prev_space = true;
                prev_break = false;
            } else if is_break(value, i) {
                line_breaks = true;
                if i == 0 {
                    leading_break = true;
                }
                if i + w == value.len() {
                    trailing_break = true;
                }
                if prev_space {
                    space_break = true;
                }
                prev_space = false;
                prev_break = true;
            } else {
                prev_space = false;
                prev_break = false;
            }
            preceded_by_ws = is_blankz(value, i);
            i += w;
        }
        sd.multiline = line_breaks;
        sd.flow_plain_allowed = true;
        sd.block_plain_allowed = true;
        sd.single_quoted_allowed = true;
        sd.block_allowed = true;
        if leading_space || leading_break || trailing_space || trailing_break {
            sd.flow_plain_allowed = false;
            sd.block_plain_allowed = false;
        }
        if trailing_space {
            sd.block_allowed = false;
        }
        if break_space {
            sd.flow_plain_allowed = false;
            sd.block_plain_allowed = false;
            sd.single_quoted_allowed = false;
        }
        if space_break || tabs || special {
            sd.flow_plain_allowed = false;
            sd.block_plain_allowed = false;
            sd.single_quoted_allowed = false;
        }
        if space_break || special {
            sd.block_allowed = false;
        }
        if line_breaks {
            sd.flow_plain_allowed = false;
            sd.block_plain_allowed = false;
        }
        if flow_ind {
            sd.flow_plain_allowed = false;
        }
        if block_ind {
            sd.block_plain_allowed = false;
        }
    }

    fn state_machine(&mut self, ev: &Event) -> Result<(), EmitError> {
        match self.state {
            State::StreamStart => self.emit_stream_start(ev),
            State::FirstDocStart => self.emit_document_start(ev, true),
            State::DocStart => self.emit_document_start(ev, false),
            State::DocContent => self.emit_document_content(ev),
            State::DocEnd => self.emit_document_end(ev),
            State::FlowSeqFirst => self.emit_flow_sequence_item(ev, true, false),
            State::FlowSeqTrail => self.emit_flow_sequence_item(ev, false, true),
            State::FlowSeqItem => self.emit_flow_sequence_item(ev, false, false),
            State::FlowMapFirst => self.emit_flow_mapping_key(ev, true, false),
            State::FlowMapTrail => self.emit_flow_mapping_key(ev, false, true),
            State::FlowMapKey => self.emit_flow_mapping_key(ev, false, false),
            State::FlowMapSimpleValue => self.emit_flow_mapping_value(ev, true),
            State::FlowMapValue => self.emit_flow_mapping_value(ev, false),
            State::BlockSeqFirst => self.emit_block_sequence_item(ev, true),
            State::BlockSeqItem => self.emit_block_sequence_item(ev, false),
            State::BlockMapFirst => self.emit_block_mapping_key(ev, true),
            State::BlockMapKey => self.emit_block_mapping_key(ev, false),
            State::BlockMapSimpleValue => self.emit_block_mapping_value(ev, true),
            State::BlockMapValue => self.emit_block_mapping_value(ev, false),
            State::End => self.err("expected nothing after STREAM-END"),
        }
    }

    fn emit_stream_start(&mut self, ev: &Event) -> Result<(), EmitError> {
        if !matches!(ev, Event::StreamStart) {
            return self.err("expected STREAM-START");
        }
        if self.best_indent < 2 || self.best_indent > 9 {
            self.best_indent = 2;
        }
        if self.best_width >= 0 && self.best_width <= self.best_indent * 2 {
            self.best_width = 80;
        }
        if self.best_width < 0 {
            self.best_width = (1 << 31) - 1;
        }
        self.indent = -1;
        self.column = 0;
        self.whitespace = true;
        self.indention = true;
        self.foot_indent = -1;
        self.state = State::FirstDocStart;
        Ok(())
    }

    fn emit_document_start(&mut self, ev: &Event, first: bool) -> Result<(), EmitError> {
        match ev {
            Event::DocStart { implicit } => {
                let implicit = *implicit && first;
                if !implicit {
                    self.write_indent();
                    self.write_indicator(b"---", true, false, false);
                    self.write_indent();
                }
                if !self.head_comment.is_empty() {
                    self.process_head_comment();
                    self.put_break();
                }
                self.state = State::DocContent;
                Ok(())
            }
            Event::StreamEnd => {
                if self.open_ended {
                    self.write_indicator(b"...", true, false, false);
                    self.write_indent();
                }
                self.state = State::End;
                Ok(())
            }
            _ => self.err("expected DOCUMENT-START or STREAM-END"),
        }
    }

    fn emit_document_content(&mut self, ev: &Event) -> Result<(), EmitError> {
        self.states.push(State::DocEnd);
        self.process_head_comment();
        self.emit_node(ev, true, false, false, false)?;
        self.process_line_comment();
        self.process_foot_comment();
        Ok(())
    }

    fn emit_document_end(&mut self, ev: &Event) -> Result<(), EmitError> {
        if !matches!(ev, Event::DocEnd) {
            return self.err("expected DOCUMENT-END");
        }
        self.foot_indent = 0;
        self.process_foot_comment();
        self.foot_indent = -1;
        self.write_indent();
        self.state = State::DocStart;
        Ok(())
    }

    fn emit_flow_sequence_item(
        &mut self,
        ev: &Event,
        first: bool,
        trail: bool,
    ) -> Result<(), EmitError> {
        if first {
            self.write_indicator(b"[", true, true, false);
            self.increase_indent(true, false);
            self.flow_level += 1;
        }
        if matches!(ev, Event::SeqEnd { .. }) {
            self.flow_level -= 1;
            self.pop_indent();
            if self.column == 0 {
                self.write_indent();
            }
            self.write_indicator(b"]", false, false, false);
            self.process_line_comment();
            self.process_foot_comment();
            return self.pop_state();
        }
        if !first && !trail {
            self.write_indicator(b",", false, false, false);
        }
        self.process_head_comment();
        if self.column == 0 || self.column > self.best_width {
            self.write_indent();
        }
        if self.has_trailing_comment() {
            self.states.push(State::FlowSeqTrail);
        } else {
            self.states.push(State::FlowSeqItem);
        }
        self.emit_node(ev, false, true, false, false)?;
        if self.has_trailing_comment() {
            self.write_indicator(b",", false, false, false);
        }
        self.process_line_comment();
        self.process_foot_comment();
        Ok(())
    }

    fn emit_flow_mapping_key(
        &mut self,
        ev: &Event,
        first: bool,
        trail: bool,
    ) -> Result<(), EmitError> {
        if first {
            self.write_indicator(b"{", true, true, false);
            self.increase_indent(true, false);
            self.flow_level += 1;
        }
        if matches!(ev, Event::MapEnd { .. }) {
            if (!self.head_comment.is_empty()
                || !self.foot_comment.is_empty()
                || !self.tail_comment.is_empty())
                && !first
                && !trail
            {
                self.write_indicator(b",", false, false, false);
            }
            self.process_head_comment();
            self.flow_level -= 1;
            self.pop_indent();
            self.write_indicator(b"}", false, false, false);
            self.process_line_comment();
            self.process_foot_comment();
            return self.pop_state();
        }
        if !first && !trail {
            self.write_indicator(b",", false, false, false);
        }
        self.process_head_comment();
        if self.column == 0 || self.column > self.best_width {
            self.write_indent();
        }
        if self.check_simple_key() {
            self.states.push(State::FlowMapSimpleValue);
            return self.emit_node(ev, false, false, true, true);
        }
        self.write_indicator(b"?", true, false, false);
        self.states.push(State::FlowMapValue);
        self.emit_node(ev, false, false, true, false)
    }

    fn emit_flow_mapping_value(&mut self, ev: &Event, simple: bool) -> Result<(), EmitError> {
        if simple {
            self.write_indicator(b":", false, false, false);
        } else {
            if self.column > self.best_width {
                self.write_indent();
            }
            self.write_indicator(b":", true, false, false);
        }
        if self.has_trailing_comment() {
            self.states.push(State::FlowMapTrail);
        } else {
            self.states.push(State::FlowMapKey);
        }
        self.emit_node(ev, false, false, true, false)?;
        if self.has_trailing_comment() {
            self.write_indicator(b",", false, false, false);
        }
        self.process_line_comment();
        self.process_foot_comment();
        Ok(())
    }

    fn emit_block_sequence_item(&mut self, ev: &Event, first: bool) -> Result<(), EmitError> {
        if first {
            self.increase_indent(false, false);
        }
        if matches!(ev, Event::SeqEnd { .. }) {
            self.pop_indent();
            return self.pop_state();
        }
        self.process_head_comment();
        self.write_indent();
        self.write_indicator(b"-", true, false, true);
        self.states.push(State::BlockSeqItem);
        self.emit_node(ev, false, true, false, false)?;
        self.process_line_comment();
        self.process_foot_comment();
        Ok(())
    }

    fn emit_block_mapping_key(&mut self, ev: &Event, first: bool) -> Result<(), EmitError> {
        if first {
            self.increase_indent(false, false);
        }
        self.process_head_comment();
        if matches!(ev, Event::MapEnd { .. }) {
            self.pop_indent();
            return self.pop_state();
        }
        self.write_indent();
        if !self.line_comment.is_empty() {
            self.key_line_comment = std::mem::take(&mut self.line_comment);
        }
        if self.check_simple_key() {
            self.states.push(State::BlockMapSimpleValue);
            return self.emit_node(ev, false, false, true, true);
        }
        self.write_indicator(b"?", true, false, true);
        self.states.push(State::BlockMapValue);
        self.emit_node(ev, false, false, true, false)
    }

    fn emit_block_mapping_value(&mut self, ev: &Event, simple: bool) -> Result<(), EmitError> {
        if simple {
            self.write_indicator(b":", false, false, false);
        } else {
            self.write_indent();
            self.write_indicator(b":", true, false, true);
        }
        if !self.key_line_comment.is_empty() {
            match ev {
                Event::Scalar(_) if self.line_comment.is_empty() => {
                    self.line_comment = std::mem::take(&mut self.key_line_comment);
                }
                Event::MapStart { .. } | Event::SeqStart { .. } => {
                    std::mem::swap(&mut self.line_comment, &mut self.key_line_comment);
                    self.process_line_comment();
                    std::mem::swap(&mut self.line_comment, &mut self.key_line_comment);
                }
                _ => {}
            }
        }
        self.states.push(State::BlockMapKey);
        self.emit_node(ev, false, false, true, false)?;
        self.process_line_comment();
        self.process_foot_comment();
        Ok(())
    }

    fn emit_node(
        &mut self,
        ev: &Event,
        _root: bool,
        sequence: bool,
        _mapping: bool,
        simple_key: bool,
    ) -> Result<(), EmitError> {
        self.sequence_context = sequence;
        self.simple_key_context = simple_key;
        match ev {
            Event::Scalar(s) => self.emit_scalar(s),
            Event::SeqStart { .. } => {
                self.state = if self.flow_level > 0 || self.check_empty_sequence() {
                    State::FlowSeqFirst
                } else {
                    State::BlockSeqFirst
                };
                Ok(())
            }
            Event::MapStart { .. } => {
                self.state = if self.flow_level > 0 || self.check_empty_mapping() {
                    State::FlowMapFirst
                } else {
                    State::BlockMapFirst
                };
                Ok(())
            }
            _ => self.err("expected SCALAR, SEQUENCE-START or MAPPING-START"),
        }
    }

    fn emit_scalar(&mut self, ev: &ScalarEvent) -> Result<(), EmitError> {
        self.select_scalar_style(ev);
        if !self.tag_handle.is_empty() || !self.tag_suffix.is_empty() {
            let (h, s) = (self.tag_handle.clone(), self.tag_suffix.clone());
            self.write_tag_handle(&h);
            if !s.is_empty() {
                self.write_tag_content(&s);
            }
        }
        self.increase_indent(true, false);
        self.process_scalar();
        self.pop_indent();
        self.pop_state()
    }

    fn check_empty_sequence(&self) -> bool {
        matches!(self.events.get(self.head), Some(Event::SeqStart { .. }))
            && matches!(self.events.get(self.head + 1), Some(Event::SeqEnd { .. }))
    }

    fn check_empty_mapping(&self) -> bool {
        matches!(self.events.get(self.head), Some(Event::MapStart { .. }))
            && matches!(self.events.get(self.head + 1), Some(Event::MapEnd { .. }))
    }

    fn check_simple_key(&self) -> bool {
        let length = match self.events.get(self.head) {
            Some(Event::Scalar(_)) => {
                if self.scalar.multiline {
                    return false;
                }
                self.tag_handle.len() + self.tag_suffix.len() + self.scalar.value.len()
            }
            Some(Event::SeqStart { .. }) => {
                if !self.check_empty_sequence() {
                    return false;
                }
                0
            }
            Some(Event::MapStart { .. }) => {
                if !self.check_empty_mapping() {
                    return false;
                }
                0
            }
            _ => return false,
        };
        length <= 128
    }

    fn select_scalar_style(&mut self, ev: &ScalarEvent) {
        let no_tag = self.tag_handle.is_empty() && self.tag_suffix.is_empty();
        let mut style = ev.style.unwrap_or(Style::Plain);
        let sd = &self.scalar;
        if self.simple_key_context && sd.multiline {
            style = Style::DoubleQuoted;
        }
        if style == Style::Plain {
            if (self.flow_level > 0 && !sd.flow_plain_allowed)
                || (self.flow_level == 0 && !sd.block_plain_allowed)
            {
                style = Style::SingleQuoted;
            }
            if sd.value.is_empty() && (self.flow_level > 0 || self.simple_key_context) {
                style = Style::SingleQuoted;
            }
        }
        if style == Style::SingleQuoted && !sd.single_quoted_allowed {
            style = Style::DoubleQuoted;
        }
        if style == Style::Literal
            && (!sd.block_allowed || self.flow_level > 0 || self.simple_key_context)
        {
            style = Style::DoubleQuoted;
        }
        // An implicit scalar is "quoted implicit" too in yaml.v3's encoder, so no `!` handle.
        let _ = no_tag;
        self.scalar.style = Some(style);
    }

    fn process_scalar(&mut self) {
        let value = self.scalar.value;
        let allow_breaks = !self.simple_key_context;
        match self.scalar.style.unwrap_or(Style::Plain) {
            Style::Plain => self.write_plain_scalar(value, allow_breaks),
            Style::SingleQuoted => self.write_single_quoted(value, allow_breaks),
            Style::DoubleQuoted => self.write_double_quoted(value, allow_breaks),
            Style::Literal => self.write_literal(value),
        }
    }

    fn write_plain_scalar(&mut self, value: &[u8], allow_breaks: bool) {
        if !value.is_empty() && !self.whitespace {
            self.put(b' ');
        }
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < value.len() {
            if is_space(value, i) {
                if allow_breaks
                    && !spaces
                    && self.column > self.best_width
                    && !is_space(value, i + 1)
                {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(value, i) {
                if !breaks && value[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        if !value.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
    }

    fn write_single_quoted(&mut self, value: &[u8], allow_breaks: bool) {
        self.write_indicator(b"'", true, false, false);
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < value.len() {
            if is_space(value, i) {
                if allow_breaks
                    && !spaces
                    && self.column > self.best_width
                    && i > 0
                    && i < value.len() - 1
                    && !is_space(value, i + 1)
                {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(value, i) {
                if !breaks && value[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if value[i] == b'\'' {
                    self.put(b'\'');
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator(b"'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double_quoted(&mut self, value: &[u8], allow_breaks: bool) {
        let mut spaces = false;
        self.write_indicator(b"\"", true, false, false);
        let mut i = 0;
        while i < value.len() {
            if !is_printable(value, i)
                || (i == 0 && is_bom(value))
                || is_break(value, i)
                || value[i] == b'"'
                || value[i] == b'\\'
            {
                let w = width(value[i]).min(value.len() - i);
                let mut v: u32 = match w {
                    1 => u32::from(value[i] & 0x7F),
                    2 => u32::from(value[i] & 0x1F),
                    3 => u32::from(value[i] & 0x0F),
                    _ => u32::from(value[i] & 0x07),
                };
                for k in 1..w {
                    v = (v << 6) + u32::from(value[i + k] & 0x3F);
                }
                i += w;
                self.put(b'\\');
                match v {
                    0x00 => self.put(b'0'),
                    0x07 => self.put(b'a'),
                    0x08 => self.put(b'b'),
                    0x09 => self.put(b't'),
                    0x0A => self.put(b'n'),
                    0x0B => self.put(b'v'),
                    0x0C => self.put(b'f'),
                    0x0D => self.put(b'r'),
                    0x1B => self.put(b'e'),
                    0x22 => self.put(b'"'),
                    0x5C => self.put(b'\\'),
                    0x85 => self.put(b'N'),
                    0xA0 => self.put(b'_'),
                    0x2028 => self.put(b'L'),
                    0x2029 => self.put(b'P'),
                    _ => {
                        let digits = if v <= 0xFF {
                            self.put(b'x');
                            2
                        } else if v <= 0xFFFF {
                            self.put(b'u');
                            4
                        } else {
                            self.put(b'U');
                            8
                        };
                        for k in (0..digits).rev() {
                            self.put(hex_digit(((v >> (k * 4)) & 0x0F) as u8));
                        }
                    }
                }
                spaces = false;
            } else if is_space(value, i) {
                if allow_breaks
                    && !spaces
                    && self.column > self.best_width
                    && i > 0
                    && i < value.len() - 1
                {
                    self.write_indent();
                    if is_space(value, i + 1) {
                        self.put(b'\\');
                    }
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else {
                self.write(value, &mut i);
                spaces = false;
            }
        }
        self.write_indicator(b"\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_block_scalar_hints(&mut self, value: &[u8]) {
        if is_space(value, 0) || is_break(value, 0) {
            let hint = [b'0' + self.best_indent as u8];
            self.write_indicator(&hint, false, false, false);
        }
        self.open_ended = false;
        let mut chomp: Option<u8> = None;
        if value.is_empty() {
            chomp = Some(b'-');
        } else {
            let mut i = value.len() - 1;
            while i > 0 && value[i] & 0xC0 == 0x80 {
                i -= 1;
            }
            if !is_break(value, i) {
                chomp = Some(b'-');
            } else if i == 0 {
                chomp = Some(b'+');
                self.open_ended = true;
            } else {
                i -= 1;
                while i > 0 && value[i] & 0xC0 == 0x80 {
                    i -= 1;
                }
                if is_break(value, i) {
                    chomp = Some(b'+');
                    self.open_ended = true;
                }
            }
        }
        if let Some(c) = chomp {
            self.write_indicator(&[c], false, false, false);
        }
    }

    fn write_literal(&mut self, value: &[u8]) {
        self.write_indicator(b"|", true, false, false);
        self.write_block_scalar_hints(value);
        // yaml.v3 3.0.4 ends the header line here even without a comment (go-yaml #755).
        if self.line_comment.is_empty() {
            self.put_break();
        } else {
            self.process_line_comment();
        }
        self.whitespace = true;
        let mut breaks = true;
        let mut i = 0;
        while i < value.len() {
            if is_break(value, i) {
                self.write_break(value, &mut i);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

fn hex_digit(d: u8) -> u8 {
    if d < 10 { b'0' + d } else { b'A' + d - 10 }
}
