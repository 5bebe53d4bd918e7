//! Store-level interop with the real `sops` 3.11 binary: files sops encrypted are re-serialized
//! by our stores and must still decrypt with sops (so every value, comment and their order
//! survived, since the MAC covers them), and trees we serialize must be a fixed point of sops'
//! own parse → emit round trip (so our bytes are the bytes sops writes).

use std::path::{Path, PathBuf};

use clawdlets::sops::store::Store;
use clawdlets::sops::store::dotenv::DotenvStore;
use clawdlets::sops::store::ini::IniStore;
use clawdlets::sops::store::yaml::YamlStore;
use clawdlets::sops::{Map, MapItem, Tree, Value};

use crate::common;

struct Oracle {
    dir: tempfile::TempDir,
    recipient: String,
}

impl Oracle {
    fn new(test: &str) -> Option<Oracle> {
        if !common::require_tool(test, "sops") || !common::require_tool(test, "age-keygen") {
            return None;
        }
        let dir = common::tempdir();
        let key = dir.path().join("key.txt");
        common::run_ok(std::process::Command::new("age-keygen").arg("-o").arg(&key));
        let recipient = String::from_utf8(common::run_ok(
            std::process::Command::new("age-keygen").arg("-y").arg(&key),
        ))
        .expect("utf8")
        .trim()
        .to_string();
        Some(Oracle { dir, recipient })
    }

    fn sops(&self) -> std::process::Command {
        let mut cmd = common::sops(self.dir.path());
        cmd.env("SOPS_AGE_KEY_FILE", self.dir.path().join("key.txt"));
        cmd
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    fn encrypt(&self, fmt: &str, plain: &Path) -> Vec<u8> {
        common::run_ok(
            self.sops()
                .args([
                    "-e",
                    "--age",
                    &self.recipient,
                    "--input-type",
                    fmt,
                    "--output-type",
                    fmt,
                ])
                .arg(plain),
        )
    }

    fn decrypt(&self, fmt: &str, enc: &Path) -> Vec<u8> {
        common::run_ok(
            self.sops()
                .args(["-d", "--input-type", fmt, "--output-type", fmt])
                .arg(enc),
        )
    }

    /// sops' own round trip of a plaintext: what `sops -d` prints after `sops -e`.
    fn round_trip(&self, fmt: &str, name: &str, plain: &[u8]) -> Vec<u8> {
        let p = self.write(name, plain);
        let enc = self.encrypt(fmt, &p);
        let e = self.write(&format!("{name}.enc"), &enc);
        self.decrypt(fmt, &e)
    }
}

fn store_for(fmt: &str) -> Box<dyn Store> {
    match fmt {
        "yaml" => Box::new(YamlStore),
        "dotenv" => Box::new(DotenvStore),
        "ini" => Box::new(IniStore),
        other => panic!("no store for {other}"),
    }
}

fn fixtures(fmt: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sops_stores")
        .join(fmt);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".in."))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sops_decrypts_files_our_stores_re_emit() {
    let Some(o) = Oracle::new("sops_decrypts_files_our_stores_re_emit") else {
        return;
    };
    let jobs: Vec<(&str, PathBuf)> = ["yaml", "dotenv", "ini"]
        .into_iter()
        .flat_map(|fmt| fixtures(fmt).into_iter().map(move |p| (fmt, p)))
        .collect();
    // Two sops processes per file: run files on a few threads to keep the test short.
    let workers = 3;
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (o, jobs) = (&o, &jobs);
            scope.spawn(move || {
                for (fmt, input) in jobs.iter().skip(w).step_by(workers) {
                    check_fixture_with_sops(o, fmt, input);
                }
            });
        }
    });
}

fn check_fixture_with_sops(o: &Oracle, fmt: &str, input: &Path) {
    let store = store_for(fmt);
    let name = input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let enc = o.encrypt(fmt, input);
    let (tree, meta) = store
        .load_encrypted(&enc)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ours = store
        .emit_encrypted(&tree, &meta)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // sops 3.11 writes INI metadata in random (Go map) order, and rewrites YAML's
    // `k: {` / `# c` / `}` (its own output for a commented empty map) as `k: {}`.
    if fmt != "ini" && !String::from_utf8_lossy(&enc).contains(": {\n") {
        assert_eq!(
            String::from_utf8_lossy(&enc),
            String::from_utf8_lossy(&ours),
            "{fmt}/{name}"
        );
    }
    let p = o.write(&format!("reemit-{name}"), &ours);
    let decrypted = o.decrypt(fmt, &p);
    let plain = std::fs::read(input).expect("read");
    // sops' pipeline: parse plain, write encrypted, parse that, write plain.
    let ours_plain = store
        .load_plain(&plain)
        .and_then(|t| store.emit_plain(&t))
        .and_then(|b| store.load_plain(&b))
        .and_then(|t| store.emit_plain(&t))
        .expect("round trip");
    assert_eq!(
        String::from_utf8_lossy(&decrypted),
        String::from_utf8_lossy(&ours_plain),
        "{fmt}/{name}: sops -d of our re-emitted file differs from our plaintext round trip"
    );
}

/// A small deterministic generator (xorshift), so failures reproduce without a seed file.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn string(&mut self, multiline: bool) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "42",
            " ",
            "  ",
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
            "}",
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
            "ключ",
            "😀",
            "\t",
            "yes",
            "no",
            "true",
            "null",
            "~",
            "1.5",
            "0x1F",
            "2024-01-01",
            "12:30",
            ".inf",
            "---",
            "...",
            "=",
            ";",
            "\u{a0}",
            "\u{7}",
        ];
        let mut s = String::new();
        for _ in 0..self.below(6) {
            s.push_str(self.pick(PIECES));
            if multiline && self.below(6) == 0 {
                s.push('\n');
            }
        }
        s
    }
    /// Comment text: one line, no control characters (YAML cannot hold those outside quotes).
    fn comment(&mut self) -> String {
        format!(" {}", self.string(false))
            .chars()
            .filter(|c| !c.is_control())
            .collect()
    }
    fn scalar(&mut self, depth: u32) -> Value {
        match self.below(if depth > 2 { 7 } else { 9 }) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 0),
            2 => Value::Int(self.next() as i64 >> self.below(60)),
            3 => Value::Float([0.5, 1.0, 1e21, -2.25, 1e-7, 123456789.0][self.below(6) as usize]),
            4..=6 => Value::str(&self.string(true)),
            7 => {
                let mut m = Map::default();
                self.fill_map(&mut m, depth + 1, 4);
                Value::Map(m)
            }
            _ => {
                let mut items = Vec::new();
                for _ in 0..self.below(4) {
                    if self.below(5) == 0 {
                        items.push(Value::Comment(self.comment()));
                    }
                    items.push(self.scalar(depth + 1));
                }
                Value::List(items)
            }
        }
    }
    fn fill_map(&mut self, m: &mut Map, depth: u32, max: u64) {
        for i in 0..1 + self.below(max) {
            if self.below(5) == 0 {
                m.0.push(MapItem::Comment(self.comment()));
            }
            let key = format!("{}{i}", self.string(false).replace(['\n', '\r'], ""));
            let v = self.scalar(depth);
            m.0.push(MapItem::Pair(key, v));
        }
    }
}

#[test]
fn random_yaml_trees_are_a_fixed_point_of_sops() {
    let Some(o) = Oracle::new("random_yaml_trees_are_a_fixed_point_of_sops") else {
        return;
    };
    let mut g = Gen(0x5eed_1234_abcd_0001);
    // One file per document set keeps the number of sops runs (≈ 0.1 s each) small.
    for round in 0..6 {
        let mut docs = Vec::new();
        for _ in 0..1 + round % 2 {
            let mut m = Map::default();
            g.fill_map(&mut m, 0, 40);
            docs.push(m);
        }
        let tree = Tree { documents: docs };
        let ours = YamlStore.emit_plain(&tree).expect("emit");
        let reread = YamlStore.load_plain(&ours).expect("our output parses");
        assert_eq!(
            YamlStore.emit_plain(&reread).expect("emit"),
            ours,
            "round {round}: our output is not stable under our own parse"
        );
        let theirs = o.round_trip("yaml", &format!("random-{round}.yaml"), &ours);
        assert_eq!(
            String::from_utf8_lossy(&theirs),
            String::from_utf8_lossy(&ours),
            "round {round}: sops prints this tree differently"
        );
    }
}

#[test]
fn random_dotenv_and_ini_trees_are_a_fixed_point_of_sops() {
    let Some(o) = Oracle::new("random_dotenv_and_ini_trees_are_a_fixed_point_of_sops") else {
        return;
    };
    let mut g = Gen(0x0dd_f00d_cafe_0042);
    let mut env = Map::default();
    let mut ini = Map::default();
    ini.0
        .push(MapItem::Pair("DEFAULT".into(), Value::Map(Map::default())));
    for i in 0..30 {
        let key: String = format!("K{i}_{}", g.string(false))
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if g.below(6) == 0 {
            env.0.push(MapItem::Comment(g.comment()));
        }
        env.0
            .push(MapItem::Pair(key.clone(), Value::str(&g.string(true))));
        let mut section = Map::default();
        for j in 0..g.below(4) {
            let v: String = g
                .string(false)
                .chars()
                .filter(|c| !matches!(c, '`' | '"' | '\'' | '\\'))
                .collect();
            section
                .0
                .push(MapItem::Pair(format!("{key}{j}"), Value::str(v.trim())));
        }
        ini.0
            .push(MapItem::Pair(format!("s{i}"), Value::Map(section)));
    }
    for (fmt, tree) in [
        (
            "dotenv",
            Tree {
                documents: vec![env],
            },
        ),
        (
            "ini",
            Tree {
                documents: vec![ini],
            },
        ),
    ] {
        let store = store_for(fmt);
        let ours = store.emit_plain(&tree).expect("emit");
        let theirs = o.round_trip(fmt, &format!("random.{fmt}"), &ours);
        assert_eq!(
            String::from_utf8_lossy(&theirs),
            String::from_utf8_lossy(&ours),
            "{fmt}"
        );
    }
}
