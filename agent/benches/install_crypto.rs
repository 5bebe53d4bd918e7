//! The raw crypto bound for `secrets install`: what decrypting F sops files holding S secrets
//! costs at minimum — one age X25519 unwrap of an armored 32-byte data key per file, one
//! AES-256-GCM (32-byte IV) decryption per value, and the per-file SHA-512 MAC plus its own
//! AES-GCM decryption. No parsing, no I/O. `scripts/bench/install.sh` runs it in the same run as
//! the installer and reports both. Usage: `cargo bench --bench install_crypto -- FILES SECRETS`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use rand::RngCore;
use sha2::{Digest, Sha512};

type SopsGcm = AesGcm<Aes256, U32>;

struct File {
    armored_key: Vec<u8>,
    values: Vec<([u8; 32], Vec<u8>, Vec<u8>)>, // iv, ciphertext+tag, aad
    mac: ([u8; 32], Vec<u8>),
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let files = args.first().copied().unwrap_or(100);
    let secrets = args.get(1).copied().unwrap_or(1000);
    let per_file = secrets.div_ceil(files);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let mut rng = rand::thread_rng();

    let corpus: Vec<File> = (0..files)
        .map(|_| {
            let mut data_key = [0u8; 32];
            rng.fill_bytes(&mut data_key);
            let enc =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let mut armored = Vec::new();
            let aw = age::armor::ArmoredWriter::wrap_output(
                &mut armored,
                age::armor::Format::AsciiArmor,
            )
            .unwrap();
            let mut w = enc.wrap_output(aw).unwrap();
            w.write_all(&data_key).unwrap();
            w.finish().unwrap().finish().unwrap();
            let cipher = SopsGcm::new_from_slice(&data_key).unwrap();
            let values = (0..per_file)
                .map(|i| {
                    let mut iv = [0u8; 32];
                    rng.fill_bytes(&mut iv);
                    let aad = format!("secret_{i}:").into_bytes();
                    let ct = cipher
                        .encrypt(
                            iv.as_slice().into(),
                            Payload {
                                msg: format!("value-{i}-0123456789abcdef").as_bytes(),
                                aad: &aad,
                            },
                        )
                        .unwrap();
                    (iv, ct, aad)
                })
                .collect();
            let mut iv = [0u8; 32];
            rng.fill_bytes(&mut iv);
            let mac = cipher
                .encrypt(
                    iv.as_slice().into(),
                    Payload {
                        msg: &[b'A'; 128],
                        aad: b"2026-01-01T00:00:00Z",
                    },
                )
                .unwrap();
            File {
                armored_key: armored,
                values,
                mac: (iv, mac),
            }
        })
        .collect();

    let run = || {
        for f in &corpus {
            let reader = age::armor::ArmoredReader::new(f.armored_key.as_slice());
            let dec = age::Decryptor::new(reader).unwrap();
            let mut r = dec
                .decrypt(std::iter::once(&identity as &dyn age::Identity))
                .unwrap();
            let mut key = Vec::with_capacity(32);
            r.read_to_end(&mut key).unwrap();
            let cipher = SopsGcm::new_from_slice(&key).unwrap();
            let mut h = Sha512::new();
            for (iv, ct, aad) in &f.values {
                let pt = cipher
                    .decrypt(iv.as_slice().into(), Payload { msg: ct, aad })
                    .unwrap();
                h.update(&pt);
            }
            let mac = cipher
                .decrypt(
                    f.mac.0.as_slice().into(),
                    Payload {
                        msg: &f.mac.1,
                        aad: b"2026-01-01T00:00:00Z",
                    },
                )
                .unwrap();
            black_box((h.finalize(), mac));
        }
    };
    run();
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let total_secrets = per_file * files;
    println!(
        "raw_crypto files={files} secrets={total_secrets} total_ms={:.3} per_secret_us={:.2}",
        median.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / total_secrets as f64
    );
}
