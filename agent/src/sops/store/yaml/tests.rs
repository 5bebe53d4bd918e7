//! Store-level tests. The fixtures' expected outputs were produced by real `sops` 3.11
//! (`scripts/gen-sops-store-fixtures.sh`), so these pin byte compatibility without the binary.

use super::*;

fn roundtrip(input: &str) -> String {
    let store = YamlStore;
    let tree = store.load_plain(input.as_bytes()).expect("parse");
    String::from_utf8(store.emit_plain(&tree).expect("emit")).expect("utf8")
}

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sops_stores/yaml")
}

#[test]
fn fixtures_round_trip_like_sops() {
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(stem) = name.strip_suffix(".in.yaml") else {
            continue;
        };
        let input = std::fs::read_to_string(&path).expect("read input");
        let expected = std::fs::read_to_string(fixture_dir().join(format!("{stem}.out.yaml")))
            .expect("read output");
        count += 1;
        let got = roundtrip(&input);
        if got != expected {
            failures.push(format!("--- {stem}: {}", first_difference(&expected, &got)));
        }
        // sops' output is a fixed point of its own round trip.
        let again = roundtrip(&expected);
        if again != expected {
            failures.push(format!(
                "--- {stem} (output re-read): {}",
                first_difference(&expected, &again)
            ));
        }
    }
    assert!(count > 0, "no fixtures found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn basic_map() {
    assert_eq!(roundtrip("a: 1\nb: hello\n"), "a: 1\nb: hello\n");
}

/// A short report of where two texts first differ.
pub(crate) fn first_difference(expected: &str, got: &str) -> String {
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let g: Vec<&str> = got.split_inclusive('\n').collect();
    for i in 0..e.len().max(g.len()) {
        if e.get(i) != g.get(i) {
            let lo = i.saturating_sub(2);
            return format!(
                "line {}:\n  expected: {:?}\n  got:      {:?}",
                i + 1,
                &e[lo.min(e.len())..(i + 3).min(e.len())],
                &g[lo.min(g.len())..(i + 3).min(g.len())]
            );
        }
    }
    "identical".into()
}

#[test]
fn encrypted_fixtures_re_emit_byte_identical() {
    let store = YamlStore;
    let mut count = 0;
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.ends_with(".enc.yaml") {
            continue;
        }
        count += 1;
        let original = std::fs::read_to_string(&path).expect("read");
        let (tree, meta) = store
            .load_encrypted(original.as_bytes())
            .expect("load encrypted");
        assert!(meta.get("mac").is_some(), "{name}: metadata lost its mac");
        let again =
            String::from_utf8(store.emit_encrypted(&tree, &meta).expect("emit")).expect("utf8");
        assert_eq!(
            original,
            again,
            "{name}: {}",
            first_difference(&original, &again)
        );
    }
    assert!(count > 0, "no encrypted fixtures");
}

#[test]
fn plain_file_is_not_sops() {
    let err = YamlStore.load_encrypted(b"a: 1\n").unwrap_err();
    assert_eq!(err.kind(), "not_sops");
}
