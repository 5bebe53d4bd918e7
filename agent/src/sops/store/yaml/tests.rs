//! Store-level tests. The fixtures' expected outputs were produced by real `sops` 3.11
//! (`scripts/gen-sops-store-fixtures.sh`), so these pin byte compatibility without the binary.

use super::*;

fn roundtrip(input: &str) -> String {
    let store = YamlStore;
    let tree = store.load_plain(input.as_bytes()).expect("parse");
    String::from_utf8(store.emit_plain(&tree).expect("emit")).expect("utf8")
}

/// Checks every `NAME.in.EXT` fixture of `fmt` against `NAME.out.EXT` (what real sops printed
/// after its own round trip), and that every `NAME.enc.EXT` (real sops output) is re-emitted
/// byte for byte by `load_encrypted` + `emit_encrypted` unless `exact_encrypted` is false, in
/// which case the data part (everything before the metadata) must match.
pub(crate) fn check_fixtures(store: &dyn Store, fmt: &str, exact_encrypted: bool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sops_stores")
        .join(fmt);
    let mut failures = Vec::new();
    let (mut plain, mut enc) = (0, 0);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&path).expect("read fixture");
        if let Some((stem, ext)) = name.split_once(".in.") {
            plain += 1;
            let expected =
                std::fs::read(dir.join(format!("{stem}.out.{ext}"))).expect("read expected");
            let got = store.load_plain(&bytes).and_then(|t| store.emit_plain(&t));
            match got {
                Ok(got) if got == expected => {}
                Ok(got) => failures.push(format!(
                    "{fmt}/{stem}: {}",
                    first_difference(
                        &String::from_utf8_lossy(&expected),
                        &String::from_utf8_lossy(&got)
                    )
                )),
                Err(e) => failures.push(format!("{fmt}/{stem}: {e}")),
            }
            // sops' output is a fixed point of its own round trip.
            match store
                .load_plain(&expected)
                .and_then(|t| store.emit_plain(&t))
            {
                Ok(again) if again == expected => {}
                Ok(again) => failures.push(format!(
                    "{fmt}/{stem} (output re-read): {}",
                    first_difference(
                        &String::from_utf8_lossy(&expected),
                        &String::from_utf8_lossy(&again)
                    )
                )),
                Err(e) => failures.push(format!("{fmt}/{stem} (output re-read): {e}")),
            }
        } else if name.contains(".enc.") {
            enc += 1;
            let result = store.load_encrypted(&bytes).and_then(|(tree, meta)| {
                assert!(meta.get("mac").is_some(), "{name}: metadata lost its mac");
                assert!(
                    meta.get("lastmodified").is_some(),
                    "{name}: metadata lost lastmodified"
                );
                store.emit_encrypted(&tree, &meta)
            });
            match result {
                Ok(again) => {
                    let (orig, again) = (
                        String::from_utf8_lossy(&bytes),
                        String::from_utf8_lossy(&again),
                    );
                    let cut = |s: &str| -> String {
                        if exact_encrypted {
                            s.to_string()
                        } else {
                            s.split("[sops]").next().unwrap_or_default().to_string()
                        }
                    };
                    if cut(&orig) != cut(&again) {
                        failures.push(format!(
                            "{fmt}/{name}: {}",
                            first_difference(&cut(&orig), &cut(&again))
                        ));
                    }
                }
                Err(e) => failures.push(format!("{fmt}/{name}: {e}")),
            }
        }
    }
    assert!(plain > 0 && enc > 0, "no fixtures found for {fmt}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_round_trip_like_sops() {
    check_fixtures(&YamlStore, "yaml", true);
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
fn plain_file_is_not_sops() {
    let err = YamlStore.load_encrypted(b"a: 1\n").unwrap_err();
    assert_eq!(err.kind(), "not_sops");
}
