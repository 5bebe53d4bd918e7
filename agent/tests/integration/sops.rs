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
    let mut keys: Vec<String> = meta.keys().map(str::to_string).collect();
    if format == Format::Ini {
        // sops fills the INI [sops] section from a Go map: its order is random.
        keys.sort();
    }
    (text, keys)
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

const RULE_DOTENV: &str = "# sops:enc\ntoken=abc\nplain_unencrypted=visible\npw_enc=secret\n# keep:plain\nnote=hello\nempty=\nmulti=a\\nb\nünï=ß\n";

const RULE_INI: &str = "[main]\ntoken = abc\nplain_unencrypted = visible\n; a comment\npw_enc = secret\n\n[other]\nport = 8080\nempty =\n";

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
    std::thread::scope(|scope| {
        for (name, text) in [
            ("r.yaml", RULE_YAML),
            ("r.json", RULE_JSON),
            ("r.env", RULE_DOTENV),
            ("r.ini", RULE_INI),
        ] {
            let (rules, k) = (&rules, &k);
            // One thread per format: sops' start-up dominates and overlaps well.
            scope.spawn(move || {
                let mut n = 0;
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
                for rule in rules {
                    let is_comment_rule = matches!(
                        rule,
                        EncryptionRule::UnencryptedCommentRegex(_)
                            | EncryptionRule::EncryptedCommentRegex(_)
                    );
                    // JSON has no comments; dotenv and INI get a representative subset (time budget).
                    let skip = match format {
                        Format::Json => is_comment_rule,
                        Format::Dotenv => !matches!(
                            rule,
                            EncryptionRule::Default
                                | EncryptionRule::EncryptedRegex(_)
                                | EncryptionRule::UnencryptedCommentRegex(_)
                        ),
                        Format::Ini => !matches!(
                            rule,
                            EncryptionRule::Default | EncryptionRule::EncryptedSuffix(_)
                        ),
                        _ => false,
                    };
                    if skip {
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
            });
        }
    });
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

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Replaces the first match of `from` after `anchor` in `text`.
fn edit_after(text: &str, anchor: &str, from: &str, to: &str) -> String {
    let at = text
        .find(anchor)
        .unwrap_or_else(|| panic!("anchor {anchor:?} not found"));
    let (head, tail) = text.split_at(at);
    format!("{head}{}", tail.replacen(from, to, 1))
}

/// Flips one base64 character of the field `field` (data/tag/iv) in the value after `anchor`.
fn flip_field(text: &str, anchor: &str, field: &str) -> String {
    let at = text.find(anchor).unwrap()
        + text[text.find(anchor).unwrap()..].find(field).unwrap()
        + field.len();
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// Every kind of bad input fails with exit 2, a message naming the problem (and the key path
/// where there is one), nothing on stdout, and no plaintext in the message.
#[test]
fn bad_input_fails_cleanly_without_plaintext() {
    if !have_tools("bad_input_fails_cleanly_without_plaintext") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    let other = age_keygen(d, "other");
    let plain = d.join("p.yaml");
    std::fs::write(
        &plain,
        "db:\n    password: hunter2\n    port_unencrypted: 5432\napi: tok3n\n",
    )
    .unwrap();
    let good = String::from_utf8(run_ok(
        sops_with_key(d, &k.file)
            .args(["-e", "--age", &k.recipient])
            .arg(&plain),
    ))
    .unwrap();
    let jplain = d.join("p.json");
    std::fs::write(
        &jplain,
        r#"{"db": {"password": "hunter2", "port_unencrypted": 5432}, "api": "tok3n"}"#,
    )
    .unwrap();
    let jgood = String::from_utf8(run_ok(
        ours(d)
            .args(["encrypt", "--age", &k.recipient])
            .arg(&jplain),
    ))
    .unwrap();

    let swapped = {
        let pw = good
            .split("password: ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        let api = good
            .split("api: ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        good.replace(&pw, "@PW@")
            .replace(&api, &pw)
            .replace("@PW@", &api)
    };
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "tampered ciphertext",
            flip_field(&good, "password:", "data:"),
            vec!["db.password", "authentication failed"],
            "yaml",
        ),
        (
            "tampered tag",
            flip_field(&good, "password:", "tag:"),
            vec!["db.password", "authentication failed"],
            "yaml",
        ),
        (
            "tampered iv",
            flip_field(&good, "api:", "iv:"),
            vec!["api"],
            "yaml",
        ),
        (
            "values swapped between keys",
            swapped,
            vec!["authentication failed"],
            "yaml",
        ),
        (
            "changed plaintext field",
            good.replace("port_unencrypted: 5432", "port_unencrypted: 5433"),
            vec!["MAC mismatch"],
            "yaml",
        ),
        (
            "added plaintext field",
            good.replace("api:", "extra_unencrypted: x\napi:"),
            vec!["MAC mismatch"],
            "yaml",
        ),
        (
            "removed field",
            good.lines()
                .filter(|l| !l.contains("port_unencrypted"))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n",
            vec!["MAC mismatch"],
            "yaml",
        ),
        (
            "added unencrypted value where encryption is due",
            good.replace("api:", "extra: plain\napi:"),
            vec!["extra", "ENC["],
            "yaml",
        ),
        (
            "malformed ENC",
            edit_after(&good, "api:", "ENC[AES256_GCM,data:", "ENC[AES256_GCM,dat:"),
            vec!["api", "ENC["],
            "yaml",
        ),
        (
            "bad base64 in ENC",
            edit_after(&good, "api:", ",iv:", ",iv:!!"),
            vec!["api", "base64"],
            "yaml",
        ),
        (
            "tampered lastmodified",
            edit_after(&good, "lastmodified:", "T", "T0"),
            vec!["lastmodified"],
            "yaml",
        ),
        (
            "tampered mac",
            flip_field(&good, "mac:", "data:"),
            vec!["sops.mac"],
            "yaml",
        ),
        (
            "truncated file",
            good[..good.len() / 2].to_string(),
            vec!["invalid"],
            "yaml",
        ),
        (
            "not a sops file",
            "a: 1\n".to_string(),
            vec!["sops metadata not found"],
            "yaml",
        ),
        (
            "json tampered ciphertext",
            flip_field(&jgood, "\"password\"", "data:"),
            vec!["db.password"],
            "json",
        ),
        (
            "json changed plaintext",
            jgood.replace("5432", "5431"),
            vec!["MAC mismatch"],
            "json",
        ),
        (
            "json truncated",
            jgood[..jgood.len() - 5].to_string(),
            vec!["invalid json"],
            "json",
        ),
        (
            "json trailing garbage",
            format!("{jgood}}}"),
            vec!["invalid json"],
            "json",
        ),
    ];
    for (what, text, needles, ext) in cases {
        let p = d.join(format!("bad.{ext}"));
        std::fs::write(&p, &text).unwrap();
        let out = run_fail(
            ours(d)
                .args(["decrypt", "--age-key-file"])
                .arg(&k.file)
                .arg(&p),
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}: partial output on stdout");
        for n in needles {
            assert!(err.contains(n), "{what}: {n:?} not in {err:?}");
        }
        for secret in ["hunter2", "tok3n"] {
            assert!(
                !err.contains(secret),
                "{what}: plaintext in the message: {err}"
            );
        }
    }
    // Non-UTF-8 input, wrong key, no key, unknown format.
    let p = d.join("good.yaml");
    std::fs::write(&p, &good).unwrap();
    let bin = d.join("bad.yaml");
    std::fs::write(&bin, b"a: \xff\xfe\n").unwrap();
    let out = run_fail(
        ours(d)
            .args(["decrypt", "--age-key-file"])
            .arg(&k.file)
            .arg(&bin),
    );
    assert!(
        out.stdout.is_empty() && stderr_of(&out).contains("UTF-8"),
        "{}",
        stderr_of(&out)
    );
    let out = run_fail(
        ours(d)
            .args(["decrypt", "--age-key-file"])
            .arg(&other.file)
            .arg(&p),
    );
    let err = stderr_of(&out);
    assert!(
        out.stdout.is_empty() && err.contains("no identity") && err.contains(&k.recipient),
        "{err}"
    );
    let out = run_fail(ours(d).arg("decrypt").arg(&p));
    assert!(out.stdout.is_empty() && stderr_of(&out).contains(&k.recipient));
    let out = run_fail(ours(d).args(["decrypt", "--input-type", "toml"]).arg(&p));
    assert!(out.stdout.is_empty() && stderr_of(&out).contains("toml"));
    let out = run_fail(
        ours(d)
            .args(["decrypt", "--age-key-file"])
            .arg(&k.file)
            .arg(d.join("missing.yaml")),
    );
    assert!(stderr_of(&out).contains("missing.yaml"));
    // Tampered data-key stanza names the metadata entry.
    let t = edit_after(
        &good,
        "BEGIN AGE ENCRYPTED FILE",
        "\n            ",
        "\n            AAAA",
    );
    std::fs::write(&bin, t).unwrap();
    let out = run_fail(
        ours(d)
            .args(["decrypt", "--age-key-file"])
            .arg(&k.file)
            .arg(&bin),
    );
    assert!(
        stderr_of(&out).contains("sops.age[0].enc"),
        "{}",
        stderr_of(&out)
    );
}

/// Shamir across three key groups, threshold 2, both directions; one group is not enough.
#[test]
fn key_groups_with_shamir_both_directions() {
    if !have_tools("key_groups_with_shamir_both_directions") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let ks: Vec<_> = (1..=3).map(|i| age_keygen(d, &format!("k{i}"))).collect();
    write_sops_yaml(
        d,
        &format!(
            "creation_rules:\n  - path_regex: \\.yaml$\n    shamir_threshold: 2\n    key_groups:\n      - age:\n          - {}\n      - age: [{}]\n      - age:\n          - {}\n",
            ks[0].recipient, ks[1].recipient, ks[2].recipient
        ),
    );
    std::fs::write(d.join("p.yaml"), "secret: value\nnum: 3\n").unwrap();
    let two = d.join("two.txt");
    std::fs::write(
        &two,
        [
            std::fs::read(&ks[0].file).unwrap(),
            std::fs::read(&ks[2].file).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let theirs = run_ok(sops_with_key(d, &two).args(["-e", "p.yaml"]));
    let mine = run_ok(ours(d).args(["encrypt", "p.yaml"]));
    assert_eq!(shape(&mine, Format::Yaml), shape(&theirs, Format::Yaml));
    let expected = b"secret: value\nnum: 3\n".to_vec();
    for (n, enc) in [theirs, mine].iter().enumerate() {
        let p = d.join(format!("e{n}.yaml"));
        std::fs::write(&p, enc).unwrap();
        assert_eq!(
            run_ok(sops_with_key(d, &two).args(["-d"]).arg(&p)),
            expected
        );
        assert_eq!(
            run_ok(
                ours(d)
                    .args(["decrypt", "--age-key-file"])
                    .arg(&ks[0].file)
                    .arg("--age-key-file")
                    .arg(&ks[2].file)
                    .arg(&p)
            ),
            expected
        );
        let out = run_fail(
            ours(d)
                .args(["decrypt", "--age-key-file"])
                .arg(&ks[1].file)
                .arg(&p),
        );
        assert!(out.stdout.is_empty() && stderr_of(&out).contains("no identity"));
        let f = EncryptedFile::read(&p, Format::Yaml).unwrap();
        assert_eq!(f.key_groups().0.len(), 3);
        assert_eq!(f.age_recipients().len(), 3);
    }
}

/// OpenSSH ed25519 keys: native `ssh-ed25519` stanzas and ssh-to-age converted recipients,
/// both directions, via --ssh-key and SOPS_AGE_SSH_PRIVATE_KEY_FILE.
#[test]
fn ssh_ed25519_keys_both_ways() {
    if !have_tools("ssh_ed25519_keys_both_ways") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let key = d.join("id_ed25519");
    std::fs::copy(fixtures.join("test-ssh-ed25519"), &key).unwrap();
    let pubkey = std::fs::read_to_string(fixtures.join("test-ssh-ed25519.pub")).unwrap();
    let native = pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let converted = clawdlets::sops::ssh_ed25519_public_to_age(&pubkey).unwrap();
    let kp = clawdlets::sops::ssh_ed25519_to_age(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(kp.recipient, converted);
    let conv_key = d.join("conv.txt");
    std::fs::write(&conv_key, format!("{}\n", kp.secret.expose())).unwrap();
    std::fs::write(d.join("p.json"), "{\"k\": \"v\"}").unwrap();
    let expected = b"{\n\t\"k\": \"v\"\n}\n".to_vec();
    for recipient in [&native, &converted] {
        let theirs = run_ok(sops_with_key(d, &conv_key).args(["-e", "--age", recipient, "p.json"]));
        let mine = run_ok(ours(d).args(["encrypt", "--age", recipient, "p.json"]));
        for (n, enc) in [theirs, mine].iter().enumerate() {
            let p = d.join(format!("e{n}.json"));
            std::fs::write(&p, enc).unwrap();
            assert_eq!(
                run_ok(ours(d).args(["decrypt", "--ssh-key"]).arg(&key).arg(&p)),
                expected,
                "{recipient} {n}"
            );
            assert_eq!(
                run_ok(
                    ours(d)
                        .env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &key)
                        .arg("decrypt")
                        .arg(&p)
                ),
                expected
            );
            let mut s = crate::common::sops(d);
            s.env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &key).current_dir(d);
            if recipient == &converted {
                s.env("SOPS_AGE_KEY_FILE", &conv_key);
            }
            assert_eq!(
                run_ok(s.arg("-d").arg(&p)),
                expected,
                "sops -d {recipient} {n}"
            );
        }
    }
}

/// .sops.yaml creation rules pick recipients like sops; updatekeys (dry run, confirmation,
/// --yes) re-wraps without touching values; rotate -i re-encrypts and keeps the file mode.
#[test]
fn config_updatekeys_and_rotate() {
    if !have_tools("config_updatekeys_and_rotate") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let d = dir.path();
    let k1 = age_keygen(d, "k1");
    let k2 = age_keygen(d, "k2");
    std::fs::create_dir(d.join("secrets")).unwrap();
    write_sops_yaml(
        d,
        &format!(
            "creation_rules:\n  - path_regex: ^secrets/.*\\.yaml$\n    age: {}\n    encrypted_regex: ^(pw|token)$\n  - path_regex: \\.json$\n    age:\n      - {}\n",
            k1.recipient, k2.recipient
        ),
    );
    let f = d.join("secrets/app.yaml");
    std::fs::write(&f, "pw: one\ntoken: two\nhost: example.org\n").unwrap();
    run_ok(ours(d).args(["encrypt", "-i", "secrets/app.yaml"]));
    let enc = std::fs::read_to_string(&f).unwrap();
    assert!(
        enc.contains("host: example.org")
            && enc.contains(&k1.recipient)
            && !enc.contains(&k2.recipient)
    );
    assert!(enc.contains("encrypted_regex: ^(pw|token)$"));
    std::fs::write(d.join("x.json"), "{\"a\": 1}").unwrap();
    let j = run_ok(ours(d).args(["encrypt", "x.json"]));
    assert!(String::from_utf8_lossy(&j).contains(&k2.recipient));
    std::fs::write(d.join("x.txt"), "data").unwrap();
    let out = run_fail(ours(d).args(["encrypt", "x.txt"]));
    assert!(
        stderr_of(&out).contains("no creation rule"),
        "{}",
        stderr_of(&out)
    );
    // The same rules through the library, matched relative to the config's directory.
    let cfg = clawdlets::sops::config::SopsConfig::load(&d.join(".sops.yaml")).unwrap();
    assert_eq!(
        clawdlets::sops::config::find_config(&d.join("secrets")).unwrap(),
        d.join(".sops.yaml")
    );
    let r = cfg.rule_for(&d.join("secrets/app.yaml")).unwrap();
    assert_eq!(r.key_groups, KeyGroups::single(vec![k1.recipient.clone()]));
    assert_eq!(
        r.rule,
        EncryptionRule::EncryptedRegex("^(pw|token)$".into())
    );
    assert!(cfg.rule_for(&d.join("app.yaml")).is_none());

    // updatekeys: the rule now also names k2.
    write_sops_yaml(
        d,
        &format!(
            "creation_rules:\n  - path_regex: ^secrets/\n    age: {}, {}\n",
            k1.recipient, k2.recipient
        ),
    );
    let before = std::fs::read_to_string(&f).unwrap();
    let out = run_ok(ours(d).args(["updatekeys", "--dry-run", "secrets/app.yaml"]));
    assert!(out.is_empty());
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        before,
        "dry run wrote"
    );
    let out = run_fail(
        ours(d)
            .args(["updatekeys", "--age-key-file"])
            .arg(&k1.file)
            .arg("secrets/app.yaml")
            .stdin(std::process::Stdio::null()),
    );
    assert!(stderr_of(&out).contains("--yes"), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        before,
        "refused run wrote"
    );
    let out = run(ours(d)
        .args(["updatekeys", "-y", "--age-key-file"])
        .arg(&k1.file)
        .arg("secrets/app.yaml"));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains(&format!("+++ {}", k2.recipient)));
    let after = std::fs::read_to_string(&f).unwrap();
    let values = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("pw:") || l.starts_with("token:") || l.contains("mac:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&after), values(&before), "updatekeys touched values");
    assert_eq!(
        EncryptedFile::read(&f, Format::Yaml)
            .unwrap()
            .age_recipients(),
        vec![k1.recipient.clone(), k2.recipient.clone()]
    );
    let expected = b"pw: one\ntoken: two\nhost: example.org\n".to_vec();
    assert_eq!(
        run_ok(sops_with_key(d, &k2.file).arg("-d").arg(&f)),
        expected
    );
    let out = run_ok(ours(d).args(["updatekeys", "-y", "secrets/app.yaml"]));
    assert!(out.is_empty());

    // rotate in place keeps the mode, changes every ciphertext, sops still decrypts.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    run_ok(
        ours(d)
            .args(["rotate", "-i", "--age-key-file"])
            .arg(&k2.file)
            .arg(&f),
    );
    let rotated = std::fs::read_to_string(&f).unwrap();
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o640
    );
    for v in values(&after) {
        assert!(!rotated.contains(&v), "rotate kept {v}");
    }
    assert_eq!(
        run_ok(sops_with_key(d, &k1.file).arg("-d").arg(&f)),
        expected
    );
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(d.join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// Identity discovery like sops: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, XDG_CONFIG_HOME and
/// ~/.config keys.txt; keygen writes a 0600 key file age-keygen agrees with.
#[test]
fn key_discovery_and_keygen() {
    if !have_tools("key_discovery_and_keygen") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let d = dir.path();
    let key = d.join("key.txt");
    let out = run(ours(d).args(["keygen", "-o"]).arg(&key));
    assert!(out.status.success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let recipient = String::from_utf8(run_ok(
        std::process::Command::new("age-keygen").arg("-y").arg(&key),
    ))
    .unwrap()
    .trim()
    .to_string();
    assert!(stderr_of(&out).contains(&recipient));
    assert_eq!(
        String::from_utf8(run_ok(ours(d).args(["keygen", "-y"]).arg(&key)))
            .unwrap()
            .trim(),
        recipient
    );
    run_fail(ours(d).args(["keygen", "-o"]).arg(&key));
    std::fs::write(d.join("p.yaml"), "a: b\n").unwrap();
    let enc = run_ok(ours(d).args(["encrypt", "--age", &recipient, "p.yaml"]));
    std::fs::write(d.join("e.yaml"), &enc).unwrap();
    let expected = b"a: b\n".to_vec();
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(
        run_ok(
            ours(d)
                .env("SOPS_AGE_KEY", &key_text)
                .args(["decrypt", "e.yaml"])
        ),
        expected
    );
    assert_eq!(
        run_ok(
            ours(d)
                .env("SOPS_AGE_KEY_FILE", &key)
                .args(["decrypt", "e.yaml"])
        ),
        expected
    );
    let xdg = d.join("xdg");
    std::fs::create_dir_all(xdg.join("sops/age")).unwrap();
    std::fs::copy(&key, xdg.join("sops/age/keys.txt")).unwrap();
    assert_eq!(
        run_ok(
            ours(d)
                .env("XDG_CONFIG_HOME", &xdg)
                .args(["decrypt", "e.yaml"])
        ),
        expected
    );
    std::fs::create_dir_all(d.join(".config/sops/age")).unwrap();
    std::fs::copy(&key, d.join(".config/sops/age/keys.txt")).unwrap();
    assert_eq!(run_ok(ours(d).args(["decrypt", "e.yaml"])), expected);
    // The real sops reads the key we generated, and real age encrypts to it.
    assert_eq!(
        run_ok(crate::common::sops(d).current_dir(d).args(["-d", "e.yaml"])),
        expected
    );
    let bad = d.join("bad.txt");
    std::fs::write(&bad, "not a key\n").unwrap();
    let out = run_fail(
        ours(d)
            .env("SOPS_AGE_KEY_FILE", &bad)
            .args(["decrypt", "e.yaml"]),
    );
    assert!(stderr_of(&out).contains("bad.txt") && stderr_of(&out).contains("line 1"));
}

/// Re-encrypting an unchanged tree keeps every value's ciphertext (sops' IV stash); a changed
/// value gets a new one; sops reads the result.
#[test]
fn set_tree_keeps_unchanged_ciphertexts() {
    if !have_tools("set_tree_keeps_unchanged_ciphertexts") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let k = age_keygen(d, "k");
    std::fs::write(d.join("p.yaml"), "a: one\nb: two\nnum: 5\n").unwrap();
    let enc = run_ok(sops_with_key(d, &k.file).args(["-e", "--age", &k.recipient, "p.yaml"]));
    let mut file = EncryptedFile::parse(&enc, Format::Yaml).unwrap();
    let keys = keyring(&k.file);
    let mut tree = file.decrypt(&keys).unwrap();
    tree.insert("b", Value::str("changed"));
    file.set_tree(&keys, &tree).unwrap();
    let out = String::from_utf8(file.to_bytes().unwrap()).unwrap();
    let old = String::from_utf8(enc).unwrap();
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).unwrap().to_string();
    assert_eq!(line(&out, "a:"), line(&old, "a:"));
    assert_eq!(line(&out, "num:"), line(&old, "num:"));
    assert_ne!(line(&out, "b:"), line(&old, "b:"));
    std::fs::write(d.join("e.yaml"), &out).unwrap();
    assert_eq!(
        run_ok(sops_with_key(d, &k.file).args(["-d", "e.yaml"])),
        b"a: one\nb: changed\nnum: 5\n".to_vec()
    );
}

/// Several recipients: any one of the keys opens a file either tool wrote; dotenv and INI files
/// report tampering with the key path too.
#[test]
fn several_recipients_and_text_formats() {
    if !have_tools("several_recipients_and_text_formats") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let ks: Vec<_> = (1..=3).map(|i| age_keygen(d, &format!("r{i}"))).collect();
    let all = ks
        .iter()
        .map(|k| k.recipient.as_str())
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(
        d.join("p.env"),
        "DB_PASSWORD=hunter2\nMULTI=a\\nb\nEMPTY=\n",
    )
    .unwrap();
    std::fs::write(
        d.join("p.ini"),
        "[db]\npassword = hunter2\nport     = 5432\n",
    )
    .unwrap();
    for name in ["p.env", "p.ini"] {
        let theirs = run_ok(sops_with_key(d, &ks[0].file).args(["-e", "--age", &all, name]));
        let mine = run_ok(ours(d).args(["encrypt", "--age", &all, name]));
        for (n, enc) in [&theirs, &mine].into_iter().enumerate() {
            let p = d.join(format!("e{n}-{name}"));
            std::fs::write(&p, enc).unwrap();
            let reference = run_ok(sops_with_key(d, &ks[n + 1].file).arg("-d").arg(&p));
            assert_eq!(reference, std::fs::read(d.join(name)).unwrap(), "{name}");
            for k in &ks {
                assert_eq!(
                    run_ok(
                        ours(d)
                            .args(["decrypt", "--age-key-file"])
                            .arg(&k.file)
                            .arg(&p)
                    ),
                    reference
                );
            }
            let f = EncryptedFile::read(&p, Format::from_path(&p)).unwrap();
            assert_eq!(
                f.age_recipients(),
                ks.iter().map(|k| k.recipient.clone()).collect::<Vec<_>>()
            );
        }
        // Tampering names the key.
        let text = String::from_utf8(mine).unwrap();
        let anchor = if name.ends_with("env") {
            "DB_PASSWORD="
        } else {
            "password"
        };
        let bad = d.join(format!("bad-{name}"));
        std::fs::write(&bad, flip_field(&text, anchor, "data:")).unwrap();
        let out = run_fail(
            ours(d)
                .args(["decrypt", "--age-key-file"])
                .arg(&ks[0].file)
                .arg(&bad),
        );
        let err = stderr_of(&out);
        assert!(out.stdout.is_empty() && !err.contains("hunter2"), "{err}");
        assert!(
            err.contains(if name.ends_with("env") {
                "DB_PASSWORD"
            } else {
                "db.password"
            }),
            "{err}"
        );
    }
}

/// A key file protected with a passphrase by the real `age -p` (as sops 3.11 reads it from
/// `SOPS_AGE_KEY_FILE`): we ask for the passphrase on the terminal like sops, once; a wrong
/// passphrase and a missing terminal are clear errors; the file works with both tools.
#[test]
fn passphrase_protected_key_file_like_sops() {
    use crate::common::terminal::{age_protect, run_on_terminal, without_terminal};
    let test = "passphrase_protected_key_file_like_sops";
    if !have_tools(test) || !crate::common::require_tool(test, "age") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let key = age_keygen(d, "plain");
    let protected = d.join("id.age");
    let pass = "correct horse battery";
    age_protect(&key.file, &protected, pass, true);
    std::fs::remove_file(&key.file).unwrap();

    std::fs::write(d.join("p.yaml"), "db:\n    password: hunter2\n").unwrap();
    let theirs = run_ok(crate::common::sops(d).current_dir(d).args([
        "-e",
        "--age",
        &key.recipient,
        "p.yaml",
    ]));
    let mine = run_ok(ours(d).args(["encrypt", "--age", &key.recipient, "p.yaml"]));
    for (n, enc) in [theirs, mine].iter().enumerate() {
        let file = d.join(format!("e{n}.yaml"));
        std::fs::write(&file, enc).unwrap();
        for (who, mut cmd) in [("ours", ours(d)), ("sops", crate::common::sops(d))] {
            if who == "ours" {
                cmd.arg("decrypt");
            } else {
                cmd.arg("-d");
            }
            cmd.env("SOPS_AGE_KEY_FILE", &protected).arg(&file);
            let (status, shown) =
                run_on_terminal(&mut cmd, &[("Enter passphrase for identity", pass)]);
            assert!(status.success(), "{who} on e{n}: {shown}");
            assert!(
                shown.contains("password: hunter2"),
                "{who} on e{n}: {shown}"
            );
            assert_eq!(shown.matches("Enter passphrase").count(), 1, "{shown}");
        }
    }
    let file = d.join("e0.yaml");

    // A wrong passphrase: asked once, refused by name, nothing decrypted.
    let (status, shown) = run_on_terminal(
        ours(d)
            .env("SOPS_AGE_KEY_FILE", &protected)
            .arg("decrypt")
            .arg(&file),
        &[("Enter passphrase for identity", "wrong horse")],
    );
    assert!(!status.success(), "{shown}");
    assert!(
        shown.contains("incorrect passphrase") && shown.contains("id.age"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(shown.matches("Enter passphrase").count(), 1, "{shown}");

    // No terminal to ask on (a script, a service): an error that says so and what to do.
    let out = run(without_terminal(
        ours(d)
            .env("SOPS_AGE_KEY_FILE", &protected)
            .arg("decrypt")
            .arg(&file),
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot be asked for") && err.contains("SOPS_AGE_KEY_CMD"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // `keygen -y` opens the file to print its recipient, like `age-keygen -y` cannot.
    let (status, shown) = run_on_terminal(
        ours(d).arg("keygen").arg("-y").arg(&protected),
        &[("Enter passphrase for identity", pass)],
    );
    assert!(
        status.success() && shown.contains(&key.recipient),
        "{shown}"
    );
}

/// An OpenSSH ed25519 key with a passphrase (the real `ssh-keygen -N`), as sops 3.11 reads it:
/// asked for on the terminal only when a file is encrypted to it, in its native `ssh-ed25519`
/// form or its ssh-to-age form, once per command; `~/.ssh/id_ed25519` too.
#[test]
fn passphrase_protected_ssh_key_like_sops() {
    use crate::common::terminal::run_on_terminal;
    let test = "passphrase_protected_ssh_key_like_sops";
    if !have_tools(test) || !crate::common::require_tool(test, "ssh-keygen") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir(d.join(".ssh")).unwrap();
    let key = d.join(".ssh/id_ed25519");
    let pass = "ssh horse battery";
    run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-C", "op@test", "-N", pass, "-f"])
            .arg(&key),
    );
    let public = std::fs::read_to_string(d.join(".ssh/id_ed25519.pub")).unwrap();
    let native = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let converted = clawdlets::sops::ssh_ed25519_public_to_age(&native).unwrap();
    let other = age_keygen(d, "other");
    std::fs::write(d.join("p.yaml"), "token: hunter2\n").unwrap();
    let encrypt_to = |name: &str, recipient: &str| {
        let out = run_ok(
            crate::common::sops(d)
                .current_dir(d)
                .args(["-e", "--age", recipient, "p.yaml"]),
        );
        std::fs::write(d.join(name), out).unwrap();
        d.join(name)
    };
    let to_native = encrypt_to("native.yaml", &native);
    let to_converted = encrypt_to("converted.yaml", &converted);
    // sops keeps the key's comment in the recipient when given the whole .pub line.
    let to_commented = encrypt_to("commented.yaml", public.trim());
    let to_other = encrypt_to("other.yaml", &other.recipient);
    let prompt = format!("Enter passphrase for \"{}\"", key.display());

    // Explicit (SOPS_AGE_SSH_PRIVATE_KEY_FILE) and default (~/.ssh/id_ed25519) alike.
    for explicit in [true, false] {
        for file in [&to_native, &to_converted, &to_commented] {
            let mut cmd = ours(d);
            if explicit {
                cmd.env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &key);
            }
            cmd.arg("decrypt").arg(file);
            let (status, shown) = run_on_terminal(&mut cmd, &[(&prompt, pass)]);
            assert!(
                status.success() && shown.contains("token: hunter2"),
                "{shown}"
            );
            assert_eq!(shown.matches("Enter passphrase").count(), 1, "{shown}");
        }
    }
    // sops 3.11 reads the same key for the native recipient.
    let (status, shown) = run_on_terminal(
        crate::common::sops(d)
            .env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &key)
            .arg("-d")
            .arg(&to_native),
        &[(&prompt, pass)],
    );
    assert!(
        status.success() && shown.contains("token: hunter2"),
        "sops: {shown}"
    );

    // A file for someone else: never asked; the usual no-key error.
    let (status, shown) = run_on_terminal(ours(d).arg("decrypt").arg(&to_other), &[]);
    assert!(!status.success(), "{shown}");
    assert!(!shown.contains("Enter passphrase"), "{shown}");
    assert!(shown.contains(&other.recipient), "{shown}");

    // A wrong passphrase names the key.
    let (status, shown) = run_on_terminal(
        ours(d).arg("decrypt").arg(&to_converted),
        &[(&prompt, "wrong horse")],
    );
    assert!(!status.success(), "{shown}");
    assert!(
        shown.contains("incorrect passphrase") && shown.contains("id_ed25519"),
        "{shown}"
    );
}

/// `plain` (YAML) encrypted to `key` by the real sops, written to `to`; returns the bytes.
fn sops_encrypted(d: &Path, key: &crate::common::sops::AgeKey, plain: &str, to: &Path) -> Vec<u8> {
    std::fs::write(d.join("plain-input.yaml"), plain).unwrap();
    let enc = run_ok(sops_with_key(d, &key.file).args([
        "-e",
        "--age",
        &key.recipient,
        "plain-input.yaml",
    ]));
    std::fs::write(to, &enc).unwrap();
    enc
}

/// Writes an executable editor script into `dir` and returns its path.
fn editor_script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `clawdlets sops edit` against the real sops: only the edited value (plus MAC and
/// lastmodified) changes, the plaintext lives in a private RAM directory that is gone afterwards,
/// unchanged or unparsable text writes nothing, a terminal gets its broken text back, and a new
/// file follows `.sops.yaml`.
#[test]
fn edit_changes_only_the_edited_value_like_sops() {
    use crate::common::terminal::run_on_terminal;
    if !have_tools("edit_changes_only_the_edited_value_like_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let key = age_keygen(d, "k");
    let file = d.join("s.yaml");
    let enc = sops_encrypted(
        d,
        &key,
        "# settings\ndb:\n    user: admin\n    password: hunter2\nport: 5432\nlist:\n    - a\n    - b\n",
        &file,
    );
    let edit = |editor: &Path| {
        let mut c = ours(d);
        c.env("SOPS_AGE_KEY_FILE", &key.file)
            .env("EDITOR", editor)
            .env("XDG_RUNTIME_DIR", "/dev/shm")
            .arg("edit")
            .arg(&file)
            .stdin(std::process::Stdio::null());
        c
    };

    // One value changed.
    let change = editor_script(
        d,
        "change.sh",
        &format!(
            "stat -c '%a %n' \"$1\" > {0}/seen; stat -f -c %T \"$(dirname \"$1\")\" >> {0}/seen\n\
             sed -i 's/hunter2/hunter3/' \"$1\"",
            d.display()
        ),
    );
    let out = run(&mut edit(&change));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let seen = std::fs::read_to_string(d.join("seen")).unwrap();
    let (mode_and_path, fs) = seen.split_once('\n').unwrap();
    let (mode, plain_path) = mode_and_path.split_once(' ').unwrap();
    assert_eq!(mode, "600", "{seen}");
    assert!(
        plain_path.ends_with("/s.yaml") && fs.trim() == "tmpfs",
        "{seen}"
    );
    let plain_dir = Path::new(plain_path).parent().unwrap();
    assert!(
        !plain_dir.exists(),
        "the plaintext directory is left behind"
    );
    let after = std::fs::read_to_string(&file).unwrap();
    let decrypted = run_ok(sops_with_key(d, &key.file).arg("-d").arg(&file));
    assert_eq!(
        String::from_utf8(decrypted).unwrap(),
        "# settings\ndb:\n    user: admin\n    password: hunter3\nport: 5432\nlist:\n    - a\n    - b\n"
    );
    let before: Vec<&str> = std::str::from_utf8(&enc).unwrap().lines().collect();
    // lastmodified changes too, unless both writes fell in the same second.
    let changed: Vec<&str> = after
        .lines()
        .filter(|l| !before.contains(l) && !l.contains("lastmodified:"))
        .collect();
    assert_eq!(changed.len(), 2, "{changed:#?}");
    assert!(
        changed[0].trim_start().starts_with("password: ENC["),
        "{changed:?}"
    );
    assert!(
        changed[1].trim_start().starts_with("mac: ENC["),
        "{changed:?}"
    );

    // Unchanged, unparsable, or a failing editor: the file stays byte for byte.
    let same = std::fs::read(&file).unwrap();
    for (name, body, ok) in [
        ("noop.sh", "true", true),
        ("broken.sh", "printf 'db: [\\n' > \"$1\"", false),
        ("fails.sh", "sed -i 's/admin/root/' \"$1\"; exit 3", false),
        ("empty.sh", ": > \"$1\"", false),
    ] {
        let out = run(&mut edit(&editor_script(d, name, body)));
        assert_eq!(out.status.success(), ok, "{name}: {}", stderr_of(&out));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            same,
            "{name} changed the file"
        );
        let err = stderr_of(&out);
        assert!(!err.contains("hunter3"), "{name}: {err}");
        if name == "broken.sh" {
            assert!(err.contains("not valid yaml"), "{err}");
        }
    }

    // On a terminal, broken text goes back to the editor as left; fixed, it is saved.
    let twice = editor_script(
        d,
        "twice.sh",
        &format!(
            "if [ -e {0}/once ]; then sed -i 's/^port: \\[$/port: 6543/' \"$1\"; \
             else touch {0}/once; sed -i 's/^port: 5432$/port: [/' \"$1\"; fi",
            d.display()
        ),
    );
    let mut cmd = edit(&twice);
    let (status, shown) = run_on_terminal(&mut cmd, &[("back to the editor", "")]);
    assert!(status.success(), "{shown}");
    let decrypted = run_ok(sops_with_key(d, &key.file).arg("-d").arg(&file));
    assert!(String::from_utf8(decrypted).unwrap().contains("port: 6543"));

    // Ctrl-C while the editor runs: it reaches the editor, we survive, wipe, write nothing.
    // "Ready" is printed only once the editor has become `sleep`, so the Ctrl-C cannot land
    // before it starts (a sleep forked after the signal would hold the terminal for 30 s).
    let before_interrupt = std::fs::read(&file).unwrap();
    let slow = editor_script(
        d,
        "slow.sh",
        &format!(
            "dirname \"$1\" > {}/slow-dir; (sleep 0.3; echo editor-ready) & exec sleep 30",
            d.display()
        ),
    );
    let mut cmd = edit(&slow);
    let (status, shown) = run_on_terminal(&mut cmd, &[("editor-ready", "\u{3}")]);
    assert!(!status.success(), "{shown}");
    assert!(shown.contains("nothing written"), "{shown}");
    let slow_dir = std::fs::read_to_string(d.join("slow-dir")).unwrap();
    assert!(
        !Path::new(slow_dir.trim()).exists(),
        "plaintext dir left after Ctrl-C"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before_interrupt);

    // Through a symlink: the file it names changes, the link stays a link.
    let link = d.join("link.yaml");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let bump = editor_script(d, "bump.sh", "sed -i 's/^port: 6543$/port: 7654/' \"$1\"");
    let out = run(ours(d)
        .env("SOPS_AGE_KEY_FILE", &key.file)
        .env("EDITOR", &bump)
        .arg("edit")
        .arg(&link));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let decrypted = run_ok(sops_with_key(d, &key.file).arg("-d").arg(&file));
    assert!(String::from_utf8(decrypted).unwrap().contains("port: 7654"));

    // A new file follows .sops.yaml and is readable by sops.
    write_sops_yaml(d, &format!("creation_rules:\n  - age: {}\n", key.recipient));
    let new = d.join("new.yaml");
    let write = editor_script(d, "write.sh", "printf 'token: abc123\\n' > \"$1\"");
    let out = run(ours(d)
        .env("SOPS_AGE_KEY_FILE", &key.file)
        .env("EDITOR", &write)
        .arg("edit")
        .arg(&new));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        run_ok(sops_with_key(d, &key.file).arg("-d").arg(&new)),
        b"token: abc123\n"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Runs `cmd` and fails the test if it takes longer than `secs` (a FIFO nobody reads must not
/// hang the command).
fn run_within(cmd: &mut std::process::Command, secs: u64) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `exec-env` and `exec-file` next to the real sops: the same variables and file contents, the
/// command's exit status passed through, `--pristine`, a FIFO (or 0600 file) on a RAM
/// filesystem that is gone afterwards, and a FIFO nobody reads does not hang.
#[test]
fn exec_env_and_exec_file_like_sops() {
    if !have_tools("exec_env_and_exec_file_like_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let key = age_keygen(d, "k");
    let file = d.join("s.yaml");
    sops_encrypted(
        d,
        &key,
        "A: one\nB: two words\nC: 3\nD: |\n    multi\n    line\n",
        &file,
    );
    let both = |args: &[&str]| {
        let theirs = run_within(sops_with_key(d, &key.file).args(args), 30);
        let mut c = ours(d);
        c.env("SOPS_AGE_KEY_FILE", &key.file)
            .env("XDG_RUNTIME_DIR", "/dev/shm")
            .args(args);
        (theirs, run_within(&mut c, 30))
    };
    let f = file.to_str().unwrap();

    let (theirs, mine) = both(&[
        "exec-env",
        f,
        "printf '%s|%s|%s' \"$A\" \"$B\" \"$C\"; exit 7",
    ]);
    assert_eq!(mine.stdout, theirs.stdout);
    assert_eq!(mine.stdout, b"one|two words|3");
    assert_eq!(
        (mine.status.code(), theirs.status.code()),
        (Some(7), Some(7))
    );
    // A value over several lines stays one variable (sops keeps only its first line).
    let (_, mine) = both(&["exec-env", f, "printf '%s' \"$D\""]);
    assert_eq!(mine.stdout, b"multi\nline\n");
    let (theirs, mine) = both(&[
        "exec-env",
        "--pristine",
        f,
        "printf '%s:%s' \"$A\" \"${HOME:-none}\"",
    ]);
    assert_eq!(mine.stdout, theirs.stdout);
    assert_eq!(mine.stdout, b"one:none");

    for args in [
        vec!["exec-file", f, "cat {}"],
        vec!["exec-file", "--output-type", "json", f, "cat {}"],
        vec!["exec-file", "--no-fifo", f, "cat {}; cat {}"],
    ] {
        let (theirs, mine) = both(&args);
        assert!(mine.status.success(), "{args:?}: {}", stderr_of(&mine));
        assert_eq!(mine.stdout, theirs.stdout, "{args:?}");
    }
    // sops itself sometimes exits 1 when its FIFO goes unread, so compare with --no-fifo; ours
    // passes the status through either way.
    let (theirs, mine) = both(&["exec-file", "--no-fifo", f, "exit 5"]);
    assert_eq!(
        (mine.status.code(), theirs.status.code()),
        (Some(5), Some(5))
    );
    let (_, mine) = both(&["exec-file", f, "exit 6"]);
    assert_eq!(mine.status.code(), Some(6));

    // Where the plaintext was, and that it is gone.
    let probe =
        "test -p {} && echo fifo; stat -f -c %T \"$(dirname {})\"; echo {}; cat {} > /dev/null";
    let (_, mine) = both(&["exec-file", f, probe]);
    let out = String::from_utf8(mine.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["fifo", "tmpfs"], "{out}");
    assert!(!Path::new(lines[2]).parent().unwrap().exists(), "{out}");
    let (_, mine) = both(&[
        "exec-file",
        "--no-fifo",
        "--filename",
        "x.yaml",
        f,
        "stat -c '%a %n' {}",
    ]);
    let out = String::from_utf8(mine.stdout).unwrap();
    assert!(
        out.starts_with("600 ") && out.trim_end().ends_with("/x.yaml"),
        "{out}"
    );

    // Nobody reads the FIFO: the command still ends, nothing is left behind.
    let (_, mine) = both(&["exec-file", f, "echo {}"]);
    assert!(mine.status.success(), "{}", stderr_of(&mine));
    let path = String::from_utf8(mine.stdout).unwrap();
    assert!(!Path::new(path.trim()).parent().unwrap().exists());

    // Ctrl-C on a terminal reaches the command; we wipe and exit like it (128 + SIGINT). As in
    // the edit test, "ready" comes once the command has become `sleep`.
    let mut cmd = ours(d);
    cmd.env("SOPS_AGE_KEY_FILE", &key.file)
        .env("XDG_RUNTIME_DIR", "/dev/shm")
        .args(["exec-file", "--no-fifo", f])
        .arg(format!(
            "echo {{}} > {}/where; (sleep 0.3; echo cmd-ready) & exec sleep 30",
            d.display()
        ));
    let (status, shown) =
        crate::common::terminal::run_on_terminal(&mut cmd, &[("cmd-ready", "\u{3}")]);
    assert_eq!(status.code(), Some(130), "{shown}");
    let plain = std::fs::read_to_string(d.join("where")).unwrap();
    assert!(
        !Path::new(plain.trim()).parent().unwrap().exists(),
        "{plain}"
    );

    // Nested values cannot be variables: refused by key name, no value shown.
    sops_encrypted(d, &key, "n:\n    x: hunter2\n", &d.join("ne.yaml"));
    let (theirs, mine) = both(&["exec-env", d.join("ne.yaml").to_str().unwrap(), "env"]);
    assert!(!theirs.status.success() && !mine.status.success());
    let err = stderr_of(&mine);
    assert!(
        err.contains("offending key n") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(mine.stdout.is_empty());
}

/// `set` and `unset` next to the real sops: the same sequence of changes gives the same
/// plaintext; unchanged values keep their ciphertext; values can come from stdin; `--idempotent`
/// writes nothing; bad JSON and missing keys are errors that show no value.
#[test]
fn set_and_unset_like_sops() {
    if !have_tools("set_and_unset_like_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let key = age_keygen(d, "k");
    let (theirs, mine) = (d.join("theirs.yaml"), d.join("mine.yaml"));
    let enc = sops_encrypted(
        d,
        &key,
        "a:\n    b: 1\nl:\n    - x\n    - y\nkeep: same\n",
        &theirs,
    );
    std::fs::write(&mine, &enc).unwrap();
    let ours_k = || {
        let mut c = ours(d);
        c.env("SOPS_AGE_KEY_FILE", &key.file);
        c
    };
    let steps: [&[&str]; 6] = [
        &["set", "FILE", r#"["a"]["c"]"#, r#""new""#],
        &[
            "set",
            "FILE",
            r#"["n"]["m"]"#,
            r#"{"k": [1, true, null, 2.5]}"#,
        ],
        &["set", "FILE", r#"["l"][1]"#, r#""Y""#],
        &["set", "FILE", r#"["l"][5]"#, r#""Z""#],
        &["unset", "FILE", r#"["a"]["b"]"#],
        &["unset", "FILE", r#"["l"][0]"#],
    ];
    for step in steps {
        let args = |f: &Path| -> Vec<String> {
            step.iter()
                .map(|a| {
                    if *a == "FILE" {
                        f.display().to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        run_ok(sops_with_key(d, &key.file).args(args(&theirs)));
        run_ok(ours_k().args(args(&mine)));
    }
    let plain = |f: &Path| run_ok(sops_with_key(d, &key.file).arg("-d").arg(f));
    assert_eq!(
        String::from_utf8(plain(&mine)).unwrap(),
        String::from_utf8(plain(&theirs)).unwrap()
    );
    let keep_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .find(|l| l.starts_with("keep:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(keep_line(&std::fs::read(&mine).unwrap()), keep_line(&enc));

    // From stdin, out of the process list.
    let mut c = ours_k();
    c.args(["set", "--value-stdin"])
        .arg(&mine)
        .arg(r#"["token"]"#);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#""s3cret-from-stdin""#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        String::from_utf8(plain(&mine))
            .unwrap()
            .contains("token: s3cret-from-stdin")
    );

    // Idempotent and refused: the file stays byte for byte.
    let before = std::fs::read(&mine).unwrap();
    run_ok(
        ours_k()
            .args(["set", "--idempotent"])
            .arg(&mine)
            .args([r#"["token"]"#, r#""s3cret-from-stdin""#]),
    );
    run_ok(
        ours_k()
            .args(["unset", "--idempotent"])
            .arg(&mine)
            .arg(r#"["nope"]"#),
    );
    let bad = run_fail(
        ours_k()
            .arg("set")
            .arg(&mine)
            .args([r#"["token"]"#, "hunter2-not-json"]),
    );
    let err = stderr_of(&bad);
    assert!(
        err.contains("not valid JSON") && !err.contains("hunter2"),
        "{err}"
    );
    let missing = run_fail(ours_k().arg("unset").arg(&mine).arg(r#"["nope"]"#));
    assert!(stderr_of(&missing).contains("key not found"));
    assert_eq!(std::fs::read(&mine).unwrap(), before);

    // filestatus, keyless, byte for byte like sops'.
    for (f, want) in [(&mine, "true"), (&d.join("plain-input.yaml"), "false")] {
        let theirs = run_ok(crate::common::sops(d).arg("filestatus").arg(f));
        let out = run_ok(ours(d).arg("filestatus").arg(f));
        assert_eq!(out, theirs);
        assert_eq!(out, format!("{{\"encrypted\":{want}}}\n").into_bytes());
    }
    std::fs::write(d.join("bad.yaml"), "x: [").unwrap();
    run_fail(ours(d).arg("filestatus").arg(d.join("bad.yaml")));
}

/// `rotate --add-age/--rm-age` like sops': a new data key, wrapped for the changed recipients;
/// a removed recipient opens nothing new; emptying a group is refused and writes nothing.
#[test]
fn rotate_adds_and_removes_recipients_like_sops() {
    if !have_tools("rotate_adds_and_removes_recipients_like_sops") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let (a, b) = (age_keygen(d, "a"), age_keygen(d, "b"));
    let file = d.join("s.yaml");
    sops_encrypted(d, &a, "k: v\n", &file);
    let rotate = |args: &[&str]| {
        let mut c = ours(d);
        c.env("SOPS_AGE_KEY_FILE", &a.file)
            .args(["rotate", "-i"])
            .args(args)
            .arg(&file);
        run(&mut c)
    };
    let opens = |key: &Path| {
        run(sops_with_key(d, key).arg("-d").arg(&file))
            .status
            .success()
    };

    assert!(rotate(&["--add-age", &b.recipient]).status.success());
    assert!(opens(&a.file) && opens(&b.file));
    assert!(rotate(&["--rm-age", &b.recipient]).status.success());
    assert!(opens(&a.file) && !opens(&b.file));
    let before = std::fs::read(&file).unwrap();
    let out = rotate(&["--rm-age", &a.recipient]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("without a recipient"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}
