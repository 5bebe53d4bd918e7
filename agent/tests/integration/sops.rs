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
    let _ = EncryptionRule::Default;
    let _ = run;
    let _ = run_fail;
    let _ = ours;
    let _ = write_sops_yaml;
}
