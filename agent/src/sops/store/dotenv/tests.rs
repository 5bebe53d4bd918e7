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
