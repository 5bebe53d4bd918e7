//! SOPS decryption cost: `clawdlets` (parse + decrypt + MAC check + emit) against the raw crypto
//! it cannot avoid (one age X25519 unwrap of the data key + one AES-256-GCM open per value + the
//! MAC's open), for a one-key file and for a 1,000-key file, both YAML. Process start-up and the
//! comparison with the real `sops` binary are measured by `scripts/bench/sops.sh`.
//!
//! Run: `cargo bench --bench sops`

use std::hint::black_box;
use std::io::Read;
use std::str::FromStr;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use clawdlets::sops::cipher::EncValue;
use clawdlets::sops::{
    EncryptOptions, EncryptedFile, Format, KeyGroups, Keyring, Map, MapItem, Tree, Value,
    generate_age_keypair,
};
use criterion::{Criterion, criterion_group, criterion_main};

struct Fixture {
    bytes: Vec<u8>,
    keys: Keyring,
    identity: age::x25519::Identity,
    enc_key: String,
    /// (ENC value, AAD) for every value plus the MAC.
    values: Vec<(EncValue, String)>,
}

fn fixture(n: usize) -> Fixture {
    let kp = generate_age_keypair();
    let mut tree = Tree::new_map();
    for i in 0..n {
        tree.insert(
            &format!("secret_{i:04}"),
            Value::str(&format!("value-{i}-0123456789abcdef")),
        );
    }
    let opts = EncryptOptions {
        key_groups: KeyGroups::single(vec![kp.recipient.clone()]),
        ..Default::default()
    };
    let file = EncryptedFile::encrypt(&tree, Format::Yaml, &opts).unwrap();
    let bytes = file.to_bytes().unwrap();
    let mut keys = Keyring::new();
    keys.add_age_keys_str(kp.secret.expose()).unwrap();
    let meta = file.metadata();
    let mut values = Vec::new();
    let doc: &Map = &file.encrypted_tree().documents[0];
    for item in &doc.0 {
        if let MapItem::Pair(k, Value::Str(s)) = item {
            let enc = EncValue::parse(std::str::from_utf8(s.expose()).unwrap()).unwrap();
            values.push((enc, format!("{k}:")));
        }
    }
    let mac_aad = clawdlets::sops::metadata::mac_aad(&meta.lastmodified).unwrap();
    values.push((EncValue::parse(&meta.mac).unwrap(), mac_aad));
    Fixture {
        bytes,
        keys,
        identity: age::x25519::Identity::from_str(kp.secret.expose()).unwrap(),
        enc_key: meta.key_groups[0].age[0].enc.clone(),
        values,
    }
}

/// The floor: unwrap the data key with age, then open every value with AES-256-GCM.
fn raw_crypto(f: &Fixture) -> usize {
    let reader = age::armor::ArmoredReader::new(f.enc_key.as_bytes());
    let dec = age::Decryptor::new_buffered(reader).unwrap();
    let mut r = dec
        .decrypt(std::iter::once(&f.identity as &dyn age::Identity))
        .unwrap();
    let mut key = Vec::new();
    r.read_to_end(&mut key).unwrap();
    let gcm = AesGcm::<Aes256, U32>::new_from_slice(&key).unwrap();
    let mut total = 0;
    for (v, aad) in &f.values {
        let mut ct = v.data.clone();
        ct.extend_from_slice(&v.tag);
        let p = gcm
            .decrypt(
                Nonce::<U32>::from_slice(&v.iv),
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        total += p.len();
    }
    total
}

/// What `clawdlets sops decrypt` does after start-up: parse, decrypt, verify, emit.
fn clawdlets_decrypt(f: &Fixture) -> usize {
    let file = EncryptedFile::parse(&f.bytes, Format::Yaml).unwrap();
    let tree = file.decrypt(&f.keys).unwrap();
    tree.emit(Format::Yaml).unwrap().len()
}

fn bench(c: &mut Criterion) {
    for (name, n) in [("one_key_file", 1), ("1000_key_file", 1000)] {
        let f = fixture(n);
        let mut g = c.benchmark_group(format!("sops_decrypt/{name}"));
        g.bench_function("raw_crypto", |b| {
            b.iter(|| black_box(raw_crypto(black_box(&f))))
        });
        g.bench_function("clawdlets", |b| {
            b.iter(|| black_box(clawdlets_decrypt(black_box(&f))))
        });
        if n > 1 {
            // Where the time goes: the YAML store (parse, emit) and the engine (decrypt + MAC).
            let file = EncryptedFile::parse(&f.bytes, Format::Yaml).unwrap();
            let tree = file.decrypt(&f.keys).unwrap();
            g.bench_function("part_parse_yaml", |b| {
                b.iter(|| {
                    black_box(EncryptedFile::parse(black_box(&f.bytes), Format::Yaml).unwrap())
                })
            });
            g.bench_function("part_decrypt_and_mac", |b| {
                b.iter(|| black_box(file.decrypt(black_box(&f.keys)).unwrap()))
            });
            g.bench_function("part_emit_yaml", |b| {
                b.iter(|| black_box(tree.emit(Format::Yaml).unwrap()))
            });
            let json = file.clone().with_format(Format::Json).to_bytes().unwrap();
            g.bench_function("clawdlets_json", |b| {
                b.iter(|| {
                    let file = EncryptedFile::parse(black_box(&json), Format::Json).unwrap();
                    black_box(
                        file.decrypt(&f.keys)
                            .unwrap()
                            .emit(Format::Json)
                            .unwrap()
                            .len(),
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
