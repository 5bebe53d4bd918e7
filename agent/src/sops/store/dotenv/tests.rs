//! dotenv store tests against fixtures produced by real sops 3.11.

use super::*;
use crate::sops::store::yaml::tests::check_fixtures;

#[test]
fn fixtures_round_trip_like_sops() {
    check_fixtures(&DotenvStore, "dotenv", true);
}

#[test]
fn missing_equals_names_the_line_not_the_value() {
    let err = DotenvStore.load_plain(b"A=1\nsecretvalue\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("secretvalue"), "{msg}");
}

#[test]
fn plain_file_is_not_sops() {
    assert_eq!(
        DotenvStore.load_encrypted(b"A=1\n").unwrap_err().kind(),
        "not_sops"
    );
}

#[test]
fn complex_values_are_refused() {
    let mut m = Map::default();
    m.insert("k", Value::List(vec![Value::Int(1)]));
    let err = DotenvStore
        .emit_plain(&Tree { documents: vec![m] })
        .unwrap_err();
    assert!(err.to_string().contains("offending key k"));
}

#[test]
fn non_strings_render_like_go() {
    let mut m = Map::default();
    m.insert("i", Value::Int(5));
    m.insert("f", Value::Float(1.0));
    m.insert("g", Value::Float(1e21));
    m.insert("b", Value::Bool(true));
    m.insert("n", Value::Null);
    m.insert("t", Value::Time("2024-01-01T10:00:00.5+02:00".into()));
    let out = DotenvStore
        .emit_plain(&Tree { documents: vec![m] })
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "i=5\nf=1.0\ng=1E+21\nb=true\nn=<nil>\nt=2024-01-01T10:00:00+02:00\n"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = DotenvStore.load_plain(&bytes);
            let _ = DotenvStore.load_encrypted(&bytes);
        }

        /// Any tree of string values (keys without `=` or newlines, comments without newlines)
        /// survives emit → load unchanged, newlines included.
        #[test]
        fn round_trips(items in prop::collection::vec(
            ("[A-Za-z_][A-Za-z0-9_ .-]{0,8}", "[ -~\n\t\u{e9}]{0,12}", prop::option::of("[ -~]{0,8}")), 0..12)
        ) {
            let mut m = Map::default();
            for (k, v, c) in items {
                if let Some(c) = c {
                    m.0.push(MapItem::Comment(c));
                }
                m.0.push(MapItem::Pair(k, Value::str(&v)));
            }
            let tree = Tree { documents: vec![m] };
            let out = DotenvStore.emit_plain(&tree).unwrap();
            let back = DotenvStore.load_plain(&out).unwrap();
            // A value holding a literal backslash-n reads back as a newline, as in sops.
            let norm = |t: &Tree| DotenvStore.emit_plain(t).unwrap();
            prop_assert_eq!(norm(&back), out);
        }
    }
}
