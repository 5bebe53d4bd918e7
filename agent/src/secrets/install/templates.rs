//! Template rendering: every placeholder is replaced by its secret's value in ONE left-to-right
//! pass (leftmost-longest match), so the result never depends on map order and a secret value
//! that happens to contain another placeholder is never expanded again. Pure function; no I/O.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::secret::SecretBytes;

/// Renders `text`, replacing `placeholders[i]` by `values[i]`.
pub fn render(text: &[u8], placeholders: &[&[u8]], values: &[&[u8]]) -> SecretBytes {
    debug_assert_eq!(placeholders.len(), values.len());
    if placeholders.is_empty() {
        return SecretBytes::new(text.to_vec());
    }
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(placeholders)
        .expect("placeholders are short literal strings");
    let mut out = Vec::with_capacity(text.len());
    let mut last = 0;
    for m in ac.find_iter(text) {
        out.extend_from_slice(&text[last..m.start()]);
        out.extend_from_slice(values[m.pattern().as_usize()]);
        last = m.end();
    }
    out.extend_from_slice(&text[last..]);
    SecretBytes::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence_once_and_deterministically() {
        let out = render(b"a=<A> b=<B> a=<A>", &[b"<A>", b"<B>"], &[b"<B>", b"2"]);
        // The value of <A> contains the placeholder <B>; it is not expanded again.
        assert_eq!(out.expose(), b"a=<B> b=2 a=<B>");
    }

    #[test]
    fn longest_placeholder_wins_when_one_prefixes_another() {
        let out = render(b"x<P><PQ>", &[b"<P>", b"<PQ>", b"<P"], &[b"1", b"2", b"3"]);
        assert_eq!(out.expose(), b"x12");
    }

    #[test]
    fn no_placeholders_copies_text() {
        assert_eq!(render(b"plain", &[], &[]).expose(), b"plain");
    }
}
