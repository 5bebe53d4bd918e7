//! SOPS engine interop against the real `sops` 3.11 and `age`: both directions, every format we
//! own, rules, key groups, SSH keys, bad input. Plaintext in fixtures is synthetic.

use std::path::Path;

use clawdlets::sops::{
    EncryptOptions, EncryptedFile, EncryptionRule, Format, KeyGroups, Keyring, Tree, Value,
    decrypt_file,
};

use crate::common::sops::{age_keygen, have_tools, ours, run_fail, sops_with_key, write_sops_yaml};
use crate::common::{run, run_ok, tempdir};

fn keyring(file: &Path) -> Keyring {
    let mut k = Keyring::new();
    k.add_age_key_file(file).unwrap();
    k
}

const YAML_SAMPLE: &str = "\
# database settings
db:
    user: admin
    password: hunter2 # inline
    port: 5432
    ratio: 1.5
    enabled: true
    nothing: null
    empty: \"\"
multi: |
    line one
    line two
list:
    - a
    - nested:
        - 1
        - x: y
ünïcode_key: ✓
";

#[test]
fn api_yaml_and_json_roundtrip_with_real_sops() {
    if !have_tools("api_yaml_and_json_roundtrip_with_real_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    for (name, text) in [
        ("s.yaml", YAML_SAMPLE),
        (
            "s.json",
            "{\"a\": {\"b\": [1, \"two\", true, null]}, \"c\": \"\", \"d\": 1.25}\n",
        ),
    ] {
        let plain = d.join(name);
        std::fs::write(&plain, text).unwrap();
        let format = Format::from_path(&plain);
        // sops encrypts, we decrypt and print exactly what sops prints.
        let enc = run_ok(
            sops_with_key(d, &k.file)
                .args(["-e", "--age", &k.recipient])
                .arg(&plain),
        );
        let enc_path = d.join(format!("enc-{name}"));
        std::fs::write(&enc_path, &enc).unwrap();
        let expected = run_ok(sops_with_key(d, &k.file).arg("-d").arg(&enc_path));
        let file = EncryptedFile::read(&enc_path, format).unwrap();
        assert_eq!(file.age_recipients(), vec![k.recipient.clone()]);
        let tree = file.decrypt(&keyring(&k.file)).unwrap();
        assert_eq!(tree.emit(format).unwrap().expose(), &expected[..], "{name}");
        // We encrypt, sops decrypts to the same plaintext.
        let opts = EncryptOptions {
            key_groups: KeyGroups::single(vec![k.recipient.clone()]),
            ..Default::default()
        };
        let ours_enc = EncryptedFile::encrypt(
            &Tree::parse(text.as_bytes(), format).unwrap(),
            format,
            &opts,
        )
        .unwrap();
        let ours_path = d.join(format!("ours-{name}"));
        std::fs::write(&ours_path, ours_enc.to_bytes().unwrap()).unwrap();
        let back = run_ok(sops_with_key(d, &k.file).arg("-d").arg(&ours_path));
        assert_eq!(back, expected, "{name}");
        let again = decrypt_file(&ours_path, format, &keyring(&k.file)).unwrap();
        assert_eq!(again.emit(format).unwrap().expose(), &expected[..]);
    }
    let tree = decrypt_file(d.join("enc-s.yaml"), Format::Yaml, &keyring(&k.file)).unwrap();
    assert_eq!(
        tree.get(&["db", "password"])
            .unwrap()
            .to_secret_bytes()
            .unwrap()
            .expose(),
        b"hunter2"
    );
    assert_eq!(
        tree.get(&["db", "port"])
            .unwrap()
            .to_secret_bytes()
            .unwrap()
            .expose(),
        b"5432"
    );
    assert_eq!(
        tree.get(&["db", "enabled"])
            .unwrap()
            .to_secret_bytes()
            .unwrap()
            .expose(),
        b"true"
    );
    assert_eq!(
        tree.get(&["list", "1", "nested", "0"]).unwrap(),
        &Value::Int(1)
    );
    let err = tree.get(&["db", "nope"]).unwrap_err();
    assert_eq!(err.kind(), "key_not_found");
    assert!(err.to_string().contains("db.nope"));
    let file = EncryptedFile::read(d.join("enc-s.yaml"), Format::Yaml).unwrap();
    assert!(file.contains_key(&["db", "password"]));
    assert!(!file.contains_key(&["db", "nope"]));
    assert_eq!(
        file.top_level_keys(),
        vec!["db", "multi", "list", "ünïcode_key"]
    );
}

/// The encrypted file with every ENC value reduced to its type, for comparing which values two
/// encryptions encrypted, plus the metadata keys in order.
fn shape(bytes: &[u8], format: Format) -> (String, Vec<String>) {
    use clawdlets::sops::store::store_for;
    use clawdlets::sops::{Map, MapItem};
    fn norm_bytes(b: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(b).ok()?;
        if !s.starts_with("ENC[AES256_GCM,") {
            return None;
        }
        Some(format!(
            "ENC<{}>",
            s.rsplit("type:").next().unwrap_or("").trim_end_matches(']')
        ))
    }
    fn norm(v: &Value) -> Value {
        match v {
            Value::Str(s) => norm_bytes(s.expose())
                .map(|n| Value::str(&n))
                .unwrap_or_else(|| v.clone()),
            Value::Comment(c) => {
                Value::Comment(norm_bytes(c.as_bytes()).unwrap_or_else(|| c.clone()))
            }
            Value::Map(m) => Value::Map(norm_map(m)),
            Value::List(l) => Value::List(l.iter().map(norm).collect()),
            other => other.clone(),
        }
    }
    fn norm_map(m: &Map) -> Map {
        Map(m
            .0
            .iter()
            .map(|i| match i {
                MapItem::Pair(k, v) => MapItem::Pair(k.clone(), norm(v)),
                MapItem::Comment(c) => {
                    MapItem::Comment(norm_bytes(c.as_bytes()).unwrap_or_else(|| c.clone()))
                }
            })
            .collect())
    }
    let store = store_for(format).unwrap();
    let (tree, meta) = store.load_encrypted(bytes).unwrap();
    let tree = Tree {
        documents: tree.documents.iter().map(norm_map).collect(),
    };
    let text = match format {
        Format::Binary => format!("{tree:?}"),
        _ => String::from_utf8(store.emit_plain(&tree).unwrap()).unwrap(),
    };
    (text, meta.keys().map(str::to_string).collect())
}

/// One rule as sops CLI flags.
fn rule_flags(rule: &EncryptionRule) -> Vec<String> {
    let (field, value) = match rule {
        EncryptionRule::Default => return vec![],
        EncryptionRule::UnencryptedSuffix(s) => ("unencrypted-suffix", s),
        EncryptionRule::EncryptedSuffix(s) => ("encrypted-suffix", s),
        EncryptionRule::UnencryptedRegex(s) => ("unencrypted-regex", s),
        EncryptionRule::EncryptedRegex(s) => ("encrypted-regex", s),
        EncryptionRule::UnencryptedCommentRegex(s) => ("unencrypted-comment-regex", s),
        EncryptionRule::EncryptedCommentRegex(s) => ("encrypted-comment-regex", s),
    };
    vec![format!("--{field}"), value.clone()]
}

const RULE_YAML: &str = "\
# sops:enc
token: abc
plain_unencrypted: visible
pw_enc: secret
# keep:plain
note: hello
nested:
    pw_enc: deep
    port: 8080
    list:
        - one
        # sops:enc
        - two
flag: false
";

const RULE_JSON: &str = "{\n\t\"token\": \"abc\",\n\t\"plain_unencrypted\": \"visible\",\n\t\"pw_enc\": \"secret\",\n\t\"nested\": {\"pw_enc\": \"deep\", \"port\": 8080, \"list\": [\"one\", 2.5, null, {\"x_enc\": true}]},\n\t\"emptystr\": \"\",\n\t\"ü\": \"ß\"\n}\n";

/// Every rule and mac_only_encrypted, both directions, YAML and JSON: sops and clawdlets
/// encrypt the same values, write the same metadata keys, and decrypt each other's files to
/// byte-identical output.
#[test]
fn rules_and_mac_only_both_directions() {
    if !have_tools("rules_and_mac_only_both_directions") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    let rules = [
        EncryptionRule::Default,
        EncryptionRule::UnencryptedSuffix("_unencrypted".into()),
        EncryptionRule::EncryptedSuffix("_enc".into()),
        EncryptionRule::UnencryptedRegex("^(plain|port)".into()),
        EncryptionRule::EncryptedRegex("pw|token".into()),
        EncryptionRule::UnencryptedCommentRegex("keep:plain".into()),
        EncryptionRule::EncryptedCommentRegex("sops:enc".into()),
    ];
    let mut n = 0;
    for (name, text) in [("r.yaml", RULE_YAML), ("r.json", RULE_JSON)] {
        let format = Format::from_path(Path::new(name));
        let plain = d.join(name);
        std::fs::write(&plain, text).unwrap();
        // sops' own round trip: what every decryption below must print, whatever the rule.
        let first = run_ok(
            sops_with_key(d, &k.file)
                .args(["-e", "--age", &k.recipient])
                .arg(&plain),
        );
        let first_path = d.join(format!("first-{name}"));
        std::fs::write(&first_path, first).unwrap();
        let expected = run_ok(sops_with_key(d, &k.file).arg("-d").arg(&first_path));
        for rule in &rules {
            if format == Format::Json
                && matches!(
                    rule,
                    EncryptionRule::UnencryptedCommentRegex(_)
                        | EncryptionRule::EncryptedCommentRegex(_)
                )
            {
                continue;
            }
            // mac_only_encrypted with two rules: it only changes which leaves are hashed.
            let mac_modes: &[bool] = if matches!(
                rule,
                EncryptionRule::Default | EncryptionRule::EncryptedRegex(_)
            ) {
                &[false, true]
            } else {
                &[false]
            };
            for &mac_only in mac_modes {
                n += 1;
                let mut flags = rule_flags(rule);
                if mac_only {
                    flags.push("--mac-only-encrypted".into());
                }
                let theirs = run_ok(
                    sops_with_key(d, &k.file)
                        .args(["-e", "--age", &k.recipient])
                        .args(&flags)
                        .arg(&plain),
                );
                let mine = run_ok(
                    ours(d)
                        .args(["encrypt", "--age", &k.recipient])
                        .args(&flags)
                        .arg(&plain),
                );
                let ctx = format!("{name} {rule:?} mac_only={mac_only}");
                assert_eq!(shape(&mine, format), shape(&theirs, format), "{ctx}");
                let t = d.join(format!("t{n}-{name}"));
                let m = d.join(format!("m{n}-{name}"));
                std::fs::write(&t, &theirs).unwrap();
                std::fs::write(&m, &mine).unwrap();
                assert_eq!(
                    run_ok(sops_with_key(d, &k.file).arg("-d").arg(&m)),
                    expected,
                    "{ctx}: sops -d of ours"
                );
                assert_eq!(
                    run_ok(
                        ours(d)
                            .args(["decrypt", "--age-key-file"])
                            .arg(&k.file)
                            .arg(&t)
                    ),
                    expected,
                    "{ctx}: ours of sops"
                );
            }
        }
    }
}

/// YAML files from the sopsfmt fixtures (comments, multi-document, aliases, nested lists) that
/// sops encrypted: `clawdlets sops decrypt` prints exactly what `sops -d` prints, also with
/// --output-type json and --extract.
#[test]
fn decrypt_output_identical_to_sops() {
    if !have_tools("decrypt_output_identical_to_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sops_stores/yaml");
    // (basic and aliases are covered by the store's own golden tests.)
    for name in ["comments", "multidoc", "nested", "scalars"] {
        let src = fixtures.join(format!("{name}.in.yaml"));
        if !src.exists() {
            continue;
        }
        let enc = run_ok(
            sops_with_key(d, &k.file)
                .args(["-e", "--age", &k.recipient])
                .arg(&src),
        );
        let p = d.join(format!("{name}.yaml"));
        std::fs::write(&p, &enc).unwrap();
        let mut variants: Vec<Vec<&str>> = vec![vec![]];
        if name == "nested" || name == "scalars" {
            variants.push(vec!["--output-type", "json"]);
        }
        for args in variants {
            let expected = run(sops_with_key(d, &k.file).arg("-d").args(&args).arg(&p));
            let got = run(ours(d)
                .arg("decrypt")
                .args(&args)
                .arg("--age-key-file")
                .arg(&k.file)
                .arg(&p));
            if !expected.status.success() {
                // e.g. an infinite float has no JSON form: both must refuse, printing nothing.
                assert!(
                    !got.status.success() && got.stdout.is_empty(),
                    "{name} {args:?}"
                );
                continue;
            }
            assert!(
                got.status.success(),
                "{name} {args:?}: {}",
                String::from_utf8_lossy(&got.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&expected.stdout),
                "{name} {args:?}"
            );
        }
    }
    // --extract of nested keys, list indices, scalars of every type and subtrees.
    let p = d.join("s.yaml");
    std::fs::write(&p, YAML_SAMPLE).unwrap();
    let enc = run_ok(
        sops_with_key(d, &k.file)
            .args(["-e", "--age", &k.recipient])
            .arg(&p),
    );
    std::fs::write(&p, &enc).unwrap();
    let j = d.join("s.json");
    std::fs::write(
        &j,
        run_ok(
            sops_with_key(d, &k.file)
                .args(["-d", "--output-type", "json"])
                .arg(&p),
        ),
    )
    .unwrap();
    let jenc = run_ok(
        sops_with_key(d, &k.file)
            .args(["-e", "--age", &k.recipient])
            .arg(&j),
    );
    std::fs::write(&j, &jenc).unwrap();
    let yaml_paths = [
        r#"["db"]["password"]"#,
        r#"["db"]"#,
        r#"["db"]["port"]"#,
        r#"["db"]["enabled"]"#,
        r#"["db"]["nothing"]"#,
        r#"["list"]"#,
        r#"["list"][1]["nested"][1]"#,
    ];
    let json_paths = [
        r#"["db"]["ratio"]"#,
        r#"["multi"]"#,
        r#"["list"][1]["nested"]"#,
        r#"["ünïcode_key"]"#,
    ];
    for (file, paths) in [(&p, &yaml_paths[..]), (&j, &json_paths[..])] {
        for &path in paths {
            let expected = run_ok(
                sops_with_key(d, &k.file)
                    .args(["-d", "--extract", path])
                    .arg(file),
            );
            let got = run_ok(
                ours(d)
                    .args(["decrypt", "--extract", path, "--age-key-file"])
                    .arg(&k.file)
                    .arg(file),
            );
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{} {path}",
                file.display()
            );
        }
        let out = run_fail(
            ours(d)
                .args([
                    "decrypt",
                    "--extract",
                    r#"["db"]["nope"]"#,
                    "--age-key-file",
                ])
                .arg(&k.file)
                .arg(file),
        );
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains(r#"["db"]["nope"]"#));
    }
}

/// Binary files (non-UTF-8 bytes) both directions.
#[test]
fn binary_both_directions() {
    if !have_tools("binary_both_directions") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    let data: Vec<u8> = (0..=255u8)
        .chain(b"\nplain text\n\xff\xfe".iter().copied())
        .collect();
    let plain = d.join("blob.bin");
    std::fs::write(&plain, &data).unwrap();
    let theirs = run_ok(
        sops_with_key(d, &k.file)
            .args(["-e", "--age", &k.recipient])
            .arg(&plain),
    );
    let mine = run_ok(ours(d).args(["encrypt", "--age", &k.recipient]).arg(&plain));
    assert_eq!(shape(&mine, Format::Binary), shape(&theirs, Format::Binary));
    for (n, enc) in [&theirs, &mine].into_iter().enumerate() {
        let p = d.join(format!("e{n}.bin"));
        std::fs::write(&p, enc).unwrap();
        assert_eq!(run_ok(sops_with_key(d, &k.file).arg("-d").arg(&p)), data);
        assert_eq!(
            run_ok(
                ours(d)
                    .args(["decrypt", "--age-key-file"])
                    .arg(&k.file)
                    .arg(&p)
            ),
            data
        );
    }
}
