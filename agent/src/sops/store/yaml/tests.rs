//! Store-level tests. The fixtures' expected outputs were produced by real `sops` 3.11
//! (`scripts/gen-sops-store-fixtures.sh`), so these pin byte compatibility without the binary.

use super::*;

fn roundtrip(input: &str) -> String {
    let store = YamlStore;
    let tree = store.load_plain(input.as_bytes()).expect("parse");
    String::from_utf8(store.emit_plain(&tree).expect("emit")).expect("utf8")
}

/// What `sops -e` then `sops -d` does to a plaintext, minus the cryptography: parse, write the
/// encrypted form, parse that, write the plaintext. Comments inside lists are the one place where
/// the encrypted form differs in structure: sops stores them as list items (`- ENC[...
/// type:comment]`), so they are turned into strings and back here.
pub(crate) fn sops_pipeline(store: &dyn Store, plain: &[u8]) -> Result<Vec<u8>, SopsError> {
    const MARK: &str = "\u{0}comment\u{0}";
    fn walk(v: &mut Value, encrypt: bool) {
        match v {
            Value::Map(m) => m.0.iter_mut().for_each(|i| {
                if let MapItem::Pair(_, v) = i {
                    walk(v, encrypt)
                }
            }),
            Value::List(l) => l.iter_mut().for_each(|item| match item {
                Value::Comment(c) if encrypt => *item = Value::str(&format!("{MARK}{c}")),
                Value::Str(s) if !encrypt && s.expose().starts_with(MARK.as_bytes()) => {
                    let text = String::from_utf8_lossy(&s.expose()[MARK.len()..]).to_string();
                    *item = Value::Comment(text);
                }
                other => walk(other, encrypt),
            }),
            _ => {}
        }
    }
    let convert = |mut t: Tree, encrypt: bool| {
        for d in &mut t.documents {
            let mut v = Value::Map(std::mem::take(d));
            walk(&mut v, encrypt);
            if let Value::Map(m) = v {
                *d = m;
            }
        }
        t
    };
    let encrypted = store.emit_plain(&convert(store.load_plain(plain)?, true))?;
    store.emit_plain(&convert(store.load_plain(&encrypted)?, false))
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
            // sops' pipeline: parse the plaintext, write the encrypted file, parse that, write
            // the plaintext (values do not matter to layout, so encryption is left out).
            let got = sops_pipeline(store, &bytes);
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
            // yaml.v3 drops the comments of an empty flow collection when it reads the
            // `k: {` / `# c` / `}` that it writes, so sops itself rewrites such a file as
            // `k: {}`; we do the same, and check that instead of byte identity.
            if String::from_utf8_lossy(&bytes).contains(": {\n") {
                let once = store
                    .load_encrypted(&bytes)
                    .and_then(|(t, m)| store.emit_encrypted(&t, &m));
                let twice = once.as_ref().map_err(|e| e.to_string()).and_then(|o| {
                    store
                        .load_encrypted(o)
                        .and_then(|(t, m)| store.emit_encrypted(&t, &m))
                        .map_err(|e| e.to_string())
                });
                if once.map_err(|e| e.to_string()) != twice {
                    failures.push(format!("{fmt}/{name}: re-emission is not stable"));
                }
                continue;
            }
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

#[test]
fn alias_bomb_is_refused_without_exhausting_memory() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let err = YamlStore.load_plain(doc.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), "parse");
    assert!(err.to_string().contains("alias"), "{err}");
}

#[test]
fn deep_nesting_is_refused() {
    let doc = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(
        YamlStore.load_plain(doc.as_bytes()).unwrap_err().kind(),
        "parse"
    );
    let mut block = String::new();
    for i in 0..400 {
        block.push_str(&" ".repeat(i));
        block.push_str("k:\n");
    }
    assert_eq!(
        YamlStore.load_plain(block.as_bytes()).unwrap_err().kind(),
        "parse"
    );
}

#[test]
fn structural_errors_are_parse_errors_with_location() {
    for (input, needle) in [
        (&b"- a\n- b\n"[..], "mapping"),
        (b"just a scalar\n", "mapping"),
        (b"a: 1\na: 2\n", "already defined"),
        (b"1: x\n", "string keys"),
        (b"a:\n  ? [x]\n  : y\n", "strings"),
        (b"a: *nope\n", "line 1"),
        (b"a: [1, 2\n", "line"),
        (b"a: \xff\n", "UTF-8"),
    ] {
        let err = YamlStore.load_plain(input).unwrap_err();
        assert_eq!(err.kind(), "parse", "{input:?}");
        assert!(err.to_string().contains(needle), "{input:?}: {err}");
    }
}

#[test]
fn errors_do_not_leak_values() {
    let err = YamlStore
        .load_plain(b"a:\n  b: \"s3cr3t-value\n")
        .unwrap_err();
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn non_utf8_strings_emit_as_binary_like_yaml_v3() {
    let mut m = Map::default();
    m.insert(
        "bin",
        Value::Str(crate::secret::SecretBytes::from(vec![
            0xff, 0xfe, 0x00, 0x41,
        ])),
    );
    let out = YamlStore.emit_plain(&Tree { documents: vec![m] }).unwrap();
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "bin: !!binary //4AQQ==\n"
    );
    let back = YamlStore.load_plain(&out).unwrap();
    assert_eq!(
        back.documents[0].get("bin"),
        Some(&Value::Str(crate::secret::SecretBytes::from(vec![
            0xff, 0xfe, 0x00, 0x41
        ])))
    );
}

#[test]
fn extract_values_like_sops() {
    assert_eq!(
        YamlStore.emit_value(&Value::str("raw\nvalue")).unwrap(),
        b"raw\nvalue"
    );
    assert_eq!(YamlStore.emit_value(&Value::Int(5)).unwrap(), b"5\n");
    assert_eq!(
        YamlStore
            .emit_value(&Value::List(vec![Value::Int(1), Value::str("x")]))
            .unwrap(),
        b"- 1\n- x\n"
    );
    let mut m = Map::default();
    m.insert("k", Value::str("v"));
    assert_eq!(YamlStore.emit_value(&Value::Map(m)).unwrap(), b"k: v\n");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Text built from YAML's syntax pieces reaches much deeper into the parser than random bytes.
    fn yamlish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "b",
            ":",
            ": ",
            " ",
            "  ",
            "\n",
            "\n  ",
            "- ",
            "-",
            "#",
            " # c",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&x ",
            "*x",
            "|",
            "|-",
            ">",
            "'",
            "\"",
            "\\",
            "---\n",
            "...\n",
            "!!str ",
            "!!binary ",
            "? ",
            "~",
            "1.5",
            "0x1F",
            "é",
            "\t",
            "\r\n",
            "%YAML 1.1\n",
            "<<: ",
            "!t ",
        ]);
        prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = YamlStore.load_plain(&bytes);
            let _ = YamlStore.load_encrypted(&bytes);
        }

        #[test]
        fn never_panics_on_yamlish_text(text in yamlish()) {
            if let Ok(tree) = YamlStore.load_plain(text.as_bytes()) {
                // Whatever parses must serialize, and our output must be our own fixed point.
                let out = YamlStore.emit_plain(&tree).expect("emit parsed tree");
                let again = YamlStore.load_plain(&out).expect("our output parses");
                let out2 = YamlStore.emit_plain(&again).expect("emit");
                prop_assert_eq!(String::from_utf8_lossy(&out2), String::from_utf8_lossy(&out));
            }
        }
    }
}

mod tree_properties {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> + Clone {
        let piece = prop::sample::select(vec![
            "a",
            "Z",
            "0",
            "42",
            " ",
            ":",
            ": ",
            "#",
            " #",
            "-",
            "- ",
            "?",
            "'",
            "\"",
            "\\",
            "[",
            "]",
            "{",
            ",",
            "&",
            "*",
            "!",
            "|",
            ">",
            "%",
            "@",
            "`",
            "é",
            "😀",
            "\t",
            "yes",
            "null",
            "~",
            "1.5",
            "0x1F",
            "2024-01-01",
            "12:30",
            "---",
            "\u{85}",
            "\u{7}",
            "\u{feff}",
        ]);
        prop::collection::vec(piece, 0..5).prop_map(|v| v.concat())
    }

    fn comment() -> impl Strategy<Value = String> + Clone {
        text().prop_map(|t| {
            format!(
                " {}",
                t.chars()
                    .filter(|c| !c.is_control() && *c != '\u{85}' && *c != '\u{feff}')
                    .collect::<String>()
            )
        })
    }

    fn scalar() -> impl Strategy<Value = Value> + Clone {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            prop::sample::select(vec![
                0.5,
                1.0,
                1e21,
                -2.25,
                1e-7,
                123456789.0,
                f64::INFINITY
            ])
            .prop_map(Value::Float),
            (text(), prop::bool::ANY).prop_map(|(t, nl)| Value::str(&if nl {
                format!("{t}\n{t}")
            } else {
                t
            })),
        ]
    }

    fn value() -> impl Strategy<Value = Value> + Clone {
        scalar().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(
                    prop_oneof![4 => inner.clone(), 1 => comment().prop_map(Value::Comment)],
                    0..5
                )
                .prop_map(Value::List),
                map_of(inner).prop_map(Value::Map),
            ]
        })
    }

    fn map_of(v: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Map> + Clone {
        prop::collection::vec((text(), v, prop::option::of(comment())), 0..6).prop_map(|items| {
            let mut m = Map::default();
            for (i, (k, v, c)) in items.into_iter().enumerate() {
                if let Some(c) = c {
                    m.0.push(MapItem::Comment(c));
                }
                m.0.push(MapItem::Pair(format!("{k}{i}"), v));
            }
            m
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever tree we emit reads back with the same keys and values, and after one
        /// read the bytes are stable. (A comment placed where no YAML text can put it, e.g. at
        /// the foot of a nested list, legitimately moves to where yaml.v3 reads it back.)
        #[test]
        fn emitted_trees_read_back(doc in map_of(value())) {
            let tree = Tree { documents: vec![doc] };
            let out = YamlStore.emit_plain(&tree).expect("emit");
            // yaml.v3 (and so `sops -d`) writes a block scalar's indentation indicator relative
            // to the wrong column inside list items, so such values do not read back as written
            // (verified against sops 3.11). We are byte-faithful to that; skip those trees.
            if String::from_utf8_lossy(&out).contains(" |4") {
                return Ok(());
            }
            let back = match YamlStore.load_plain(&out) {
                Ok(back) => back,
                Err(e) => {
                    // A comment that ends a list right after a nested collection item becomes
                    // that item's foot comment, which yaml.v3 writes after the *next* key;
                    // sops' reader never builds such a tree (it reads the comment into the
                    // item), so only trees built by hand can hit it.
                    let text = String::from_utf8_lossy(&out);
                    prop_assert!(has_comment_after_collection_item(&tree.documents[0]), "{e}\n{text}");
                    return Ok(());
                }
            };
            prop_assert_eq!(strip_comments_map(&back.documents[0]), strip_comments_map(&tree.documents[0]));
            let out2 = YamlStore.emit_plain(&back).expect("emit");
            let again = YamlStore.load_plain(&out2).expect("parse");
            let out3 = YamlStore.emit_plain(&again).expect("emit");
            prop_assert_eq!(String::from_utf8_lossy(&out3), String::from_utf8_lossy(&out2));
        }
    }

    fn has_comment_after_collection_item(m: &Map) -> bool {
        fn value(v: &Value) -> bool {
            match v {
                Value::Map(m) => has_comment_after_collection_item(m),
                Value::List(l) => {
                    l.windows(2).any(|w| {
                        matches!(w[0], Value::Map(_) | Value::List(_))
                            && matches!(w[1], Value::Comment(_))
                    }) || l.iter().any(value)
                }
                _ => false,
            }
        }
        m.0.iter()
            .any(|i| matches!(i, MapItem::Pair(_, v) if value(v)))
    }

    fn strip_comments_map(m: &Map) -> Map {
        Map(m
            .0
            .iter()
            .filter_map(|i| match i {
                MapItem::Pair(k, v) => Some(MapItem::Pair(k.clone(), strip_comments(v))),
                MapItem::Comment(_) => None,
            })
            .collect())
    }

    fn strip_comments(v: &Value) -> Value {
        match v {
            Value::Map(m) => Value::Map(strip_comments_map(m)),
            Value::List(l) => Value::List(
                l.iter()
                    .filter(|v| !matches!(v, Value::Comment(_)))
                    .map(strip_comments)
                    .collect(),
            ),
            // yaml.v3 writes 1.0 as `1`, which reads back as an integer (sops does the same).
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Value::Int(*f as i64),
            other => other.clone(),
        }
    }
}

/// Developer aid: `SOPSFMT_FILE=x.yaml cargo test --lib dev_round_trip -- --ignored --nocapture`
/// prints our plaintext round trip of a file (compare with `sops -e` + `sops -d`), and with
/// `SOPSFMT_DEBUG=1` the tree.
#[test]
#[ignore = "developer aid"]
fn dev_round_trip() {
    if let Ok(dir) = std::env::var("SOPSFMT_DIR") {
        // Every NAME.yaml in the directory gets a NAME.yaml.ours (or .err) beside it.
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                // sops' pipeline: parse plain, write (encrypted), parse that, write plain.
                let out = sops_pipeline(&YamlStore, &std::fs::read(&path).expect("read"));
                match out {
                    Ok(o) => std::fs::write(path.with_extension("yaml.ours"), o).expect("write"),
                    Err(e) => std::fs::write(path.with_extension("yaml.err"), e.to_string())
                        .expect("write"),
                }
            }
        }
        return;
    }
    let Ok(path) = std::env::var("SOPSFMT_FILE") else {
        return;
    };
    let fmt = std::env::var("SOPSFMT_FORMAT").unwrap_or_else(|_| "yaml".into());
    let store: Box<dyn Store> = match fmt.as_str() {
        "dotenv" => Box::new(crate::sops::store::dotenv::DotenvStore),
        "ini" => Box::new(crate::sops::store::ini::IniStore),
        _ => Box::new(YamlStore),
    };
    let tree = store
        .load_plain(&std::fs::read(path).expect("read"))
        .expect("parse");
    if std::env::var("SOPSFMT_DEBUG").is_ok() {
        eprintln!("{tree:#?}");
    }
    print!(
        "{}",
        String::from_utf8_lossy(&store.emit_plain(&tree).expect("emit"))
    );
}

/// Rough throughput figure: `cargo test --release --lib yaml_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run in release"]
fn yaml_throughput() {
    let mut doc = String::from("# secrets\n");
    for i in 0..1000 {
        doc.push_str(&format!(
            "key_{i}: ENC[AES256_GCM,data:q2Ux1Q==,iv:9TaaCWStzEQ4M0AD1cI5hYE/QFRBsyt5UZUHTEhuS4o=,tag:bV4Qaq/r7UvUNrwIJq4u3g==,type:str]\n"
        ));
    }
    let n = 200;
    let (mut parse, mut emit) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let tree = YamlStore.load_plain(doc.as_bytes()).expect("parse");
        parse += t.elapsed();
        let t = std::time::Instant::now();
        let out = YamlStore.emit_plain(&tree).expect("emit");
        emit += t.elapsed();
        assert_eq!(out.len(), doc.len());
    }
    eprintln!(
        "1000-key YAML ({} bytes): parse {:?}, emit {:?} per file",
        doc.len(),
        parse / n,
        emit / n
    );
}
