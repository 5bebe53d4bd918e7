//! Operator secrets lifecycle end to end in temporary git repos: `secrets init/set/edit/rotate/
//! rekey/check` driven through the built binary, verified with the real `sops` and `age`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common;

const EXAMPLE_FLEET: &str = include_str!("../../../fleet/clawdlets.json");
const PROVIDED: &str = "tok-PROVIDED-3b1f9c0e7d2a";
/// The admin login password of the example fleet (kind `password-hash`): only its hash is stored.
const ADMIN_PW: &str = "Adm1n-Login-Pw-7e6d5c4b";
/// A confirmed host-key rotation of the example host (rewrites every file of the host).
const ROTATE_HOST_KEY: [&str; 6] = [
    "rekey",
    "--host",
    "fleet-1",
    "--rotate-host-key",
    "--confirm",
    "fleet-1",
];

struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    values: PathBuf,
}

fn fixture(test: &str) -> Option<Fixture> {
    if !common::require_tool(test, "sops")
        || !common::require_tool(test, "age")
        || !common::require_tool(test, "git")
    {
        return None;
    }
    let tmp = common::tempdir();
    let home = tmp.path().join("home");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(repo.join("fleet")).unwrap();
    std::fs::write(repo.join("fleet/clawdlets.json"), EXAMPLE_FLEET).unwrap();
    git(&repo, &["init", "-q", "."]);
    let values = tmp.path().join("values.json");
    std::fs::write(
        &values,
        format!(
            "{{\"secrets\": {{\"discord_token_maren\": \"{PROVIDED}\", \"admin_password_hash\": \"{ADMIN_PW}\"}}}}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&values, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some(Fixture {
        _tmp: tmp,
        home,
        repo,
        values,
    })
}

fn git(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Fixture {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::clawdlets(&self.home);
        c.current_dir(&self.repo)
            .arg("secrets")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(&mut self.cmd(args))
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            out.status,
            text(&out)
        );
        out
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn init(&self) -> Output {
        let values = self.values.to_str().unwrap().to_string();
        self.run_ok(&["init", "--host", "fleet-1", "--yes", "--from-json", &values])
    }

    fn operator_key(&self) -> PathBuf {
        self.repo.join(".clawdlets/keys/operators/alice.agekey")
    }

    fn host_key(&self) -> PathBuf {
        self.repo
            .join(".clawdlets/extra-files/fleet-1/var/lib/sops-nix/key.txt")
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.repo.join(format!("secrets/hosts/fleet-1/{name}.yaml"))
    }

    /// `sops -d` with exactly one key file; Ok(plaintext) or Err(stderr).
    fn sops_decrypt(&self, file: &Path, key: &Path) -> Result<String, String> {
        let out = common::run(
            common::sops(&self.home)
                .env("SOPS_AGE_KEY_FILE", key)
                .args(["-d"])
                .arg(file),
        );
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    fn secret_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        walk(&self.repo.join("secrets"), &mut v);
        v.retain(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with(".sops.yaml"));
        v.sort();
        v
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != ".git" {
                walk(&e.path(), out);
            }
        } else {
            out.push(e.path());
        }
    }
}

/// Every file and directory except .git: path → (mode, bytes).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name() == ".git" {
                continue;
            }
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if meta.is_dir() {
                out.insert(rel, (meta.permissions().mode(), Vec::new()));
                rec(root, &p, out);
            } else {
                out.insert(rel, (meta.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(root, root, &mut out);
    out
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The raw data key of a sops file, unwrapped from its first age stanza with the real `age`.
fn data_key(file: &Path, key: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut armored = String::new();
    let mut on = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "-----BEGIN AGE ENCRYPTED FILE-----" {
            on = true;
            armored.clear();
        }
        if on {
            armored.push_str(t);
            armored.push('\n');
        }
        if t == "-----END AGE ENCRYPTED FILE-----" && on {
            let mut child = Command::new("age")
                .args(["-d", "-i"])
                .arg(key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(armored.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                return Some(out.stdout);
            }
            on = false;
        }
    }
    None
}

/// The value of the single top-level key `name` in `sops -d` YAML output.
fn stored_value(plain: &str, name: &str) -> String {
    let v = plain
        .trim()
        .strip_prefix(&format!("{name}: "))
        .unwrap_or_else(|| panic!("one key {name}: {plain}"));
    v.trim_matches(|c| c == '\'' || c == '"').to_string()
}

/// `hash` is a SHA-512-crypt hash (`$6$<16-char salt>$<86 chars>`, default rounds) of
/// `password`: checked with the sha-crypt verifier and, when installed, recomputed by the
/// independent `openssl passwd -6` from the same salt.
fn assert_sha512_crypt_of(hash: &str, password: &str) {
    use sha_crypt::PasswordVerifier as _;
    let fields: Vec<&str> = hash.split('$').collect();
    assert_eq!(fields.len(), 4, "$6$salt$hash expected: {hash}");
    assert_eq!(fields[1], "6", "{hash}");
    assert_eq!(fields[2].len(), 16, "16-char salt: {hash}");
    assert_eq!(fields[3].len(), 86, "{hash}");
    sha_crypt::ShaCrypt::default()
        .verify_password(password.as_bytes(), hash)
        .unwrap_or_else(|e| panic!("hash does not verify: {e}"));
    assert!(
        sha_crypt::ShaCrypt::default()
            .verify_password(b"wrong-password", hash)
            .is_err()
    );
    if common::which("openssl").is_some() {
        let mut child = Command::new("openssl")
            .args(["passwd", "-6", "-salt", fields[2], "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            hash,
            "openssl disagrees"
        );
    }
}

#[test]
fn init_creates_layout_that_real_sops_decrypts_with_operator_and_host_key() {
    let Some(fx) = fixture("init_creates_layout") else {
        return;
    };
    let out = fx.init();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("create   0600  secrets/hosts/fleet-1/gateway_token_maren.yaml"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("public key of deploy_key: ssh-ed25519 AAAA"));

    // Layout and modes.
    assert_eq!(mode(&fx.operator_key()), 0o600);
    assert_eq!(mode(&fx.host_key()), 0o600);
    assert_eq!(mode(&fx.repo.join(".clawdlets")), 0o700);
    assert_eq!(
        mode(&fx.repo.join(".clawdlets/extra-files/fleet-1/var")),
        0o755
    );
    let extra = fx
        .repo
        .join(".clawdlets/extra-files/fleet-1/var/lib/clawdlets/secrets/hosts/fleet-1");
    assert_eq!(mode(&extra), 0o700);
    let names = [
        "admin_password_hash",
        "api_b64",
        "deploy_key",
        "discord_token_maren",
        "gateway_token_maren",
        "wg_key",
    ];
    for n in names {
        assert_eq!(mode(&fx.secret(n)), 0o600, "{n}");
        assert_eq!(mode(&extra.join(format!("{n}.yaml"))), 0o400, "{n}");
        assert_eq!(
            std::fs::read(extra.join(format!("{n}.yaml"))).unwrap(),
            std::fs::read(fx.secret(n)).unwrap()
        );
    }
    let key_txt = std::fs::read_to_string(fx.host_key()).unwrap();
    assert!(key_txt.starts_with("AGE-SECRET-KEY-1") && key_txt.lines().count() == 1);
    let fleet = std::fs::read_to_string(fx.repo.join("fleet/clawdlets.json")).unwrap();
    let pubkey =
        std::fs::read_to_string(fx.repo.join(".clawdlets/keys/operators/alice.age.pub")).unwrap();
    assert!(
        fleet.contains(&format!("\"ageRecipient\": \"{}\"", pubkey.trim())),
        "recipient recorded in the fleet"
    );
    assert!(
        std::fs::read_to_string(fx.repo.join(".gitignore"))
            .unwrap()
            .contains("/.clawdlets/")
    );

    // Real sops: the operator opens every file, the host key opens its host's files only.
    for f in fx.secret_files() {
        fx.sops_decrypt(&f, &fx.operator_key())
            .unwrap_or_else(|e| panic!("operator cannot open {}: {e}", f.display()));
    }
    for n in names {
        let plain = fx.sops_decrypt(&fx.secret(n), &fx.host_key()).unwrap();
        assert!(
            plain.starts_with(&format!("{n}: ")),
            "one key named after the file: {plain}"
        );
        assert_eq!(
            plain.lines().filter(|l| !l.starts_with(' ')).count(),
            1,
            "exactly one top-level key in {n}"
        );
    }
    assert!(
        fx.sops_decrypt(
            &fx.repo.join("secrets/keys/hosts/fleet-1.agekey.yaml"),
            &fx.host_key()
        )
        .is_err(),
        "host key file is for operators only"
    );
    let host = fx
        .sops_decrypt(
            &fx.repo.join("secrets/keys/hosts/fleet-1.agekey.yaml"),
            &fx.operator_key(),
        )
        .unwrap();
    assert!(host.contains(&format!("age_secret_key: {}", key_txt.trim())));
    assert!(
        fx.sops_decrypt(&fx.secret("discord_token_maren"), &fx.operator_key())
            .unwrap()
            .contains(PROVIDED)
    );
    let hex = fx
        .sops_decrypt(&fx.secret("gateway_token_maren"), &fx.operator_key())
        .unwrap();
    let hex = hex.trim().strip_prefix("gateway_token_maren: ").unwrap();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));

    // The admin login password (kind password-hash, neededForUsers -> hashedPasswordFile) is
    // stored only as its SHA-512-crypt hash: real sops shows a `$6$` hash with a 16-character
    // salt that verifies against the supplied password, never the password itself.
    let admin = fx
        .sops_decrypt(&fx.secret("admin_password_hash"), &fx.host_key())
        .unwrap();
    assert!(!admin.contains(ADMIN_PW), "plaintext login password stored");
    let hash = stored_value(&admin, "admin_password_hash");
    assert_sha512_crypt_of(&hash, ADMIN_PW);

    // The creation rules work for plain `sops` too (a new file gets host + operator).
    let out = common::run(
        common::sops(&fx.home)
            .current_dir(fx.repo.join("secrets"))
            .args([
                "encrypt",
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
                "--filename-override",
                "hosts/fleet-1/new.yaml",
                "/dev/stdin",
            ])
            .stdin(std::fs::File::open(&fx.values).unwrap()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("recipient: age1")
            .count(),
        2
    );

    // `secrets check` is clean once the files are tracked.
    git(&fx.repo, &["add", "-A"]);
    let out = fx.run(&["check"]);
    assert!(out.status.success(), "{}", text(&out));

    // Idempotent: a second run (no --from-json, stdin closed) changes nothing at all.
    let before = snapshot(&fx.repo);
    let out = fx.run_ok(&["init", "--host", "fleet-1", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out)
    );
    assert_eq!(
        before,
        snapshot(&fx.repo),
        "second init must leave every file byte-identical"
    );
}

#[test]
fn login_passwords_are_stored_as_hashes_and_bad_input_is_refused() {
    let Some(fx) = fixture("password_hash") else {
        return;
    };
    fx.init();
    let admin = fx.secret("admin_password_hash");
    let read_admin = || {
        stored_value(
            &fx.sops_decrypt(&admin, &fx.operator_key()).unwrap(),
            "admin_password_hash",
        )
    };
    assert_sha512_crypt_of(&read_admin(), ADMIN_PW);

    // `set` on stdin: a password is hashed; an existing yescrypt hash is kept byte for byte.
    let out = fx.run_stdin(
        &[
            "set",
            "fleet-1",
            "admin_password_hash",
            "--confirm",
            "fleet-1",
        ],
        "New-Login-Pw-42\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stored as its sha-512-crypt hash"),
        "{}",
        text(&out)
    );
    assert_sha512_crypt_of(&read_admin(), "New-Login-Pw-42");
    let yescrypt = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$.3PFyKl9LaVkmGGUtYhoTaXWsmDmJDamIF77y.E0et4";
    let out = fx.run_stdin(
        &[
            "set",
            "fleet-1",
            "admin_password_hash",
            "--confirm",
            "fleet-1",
        ],
        &format!("{yescrypt}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("an existing yescrypt hash, stored as is"));
    assert_eq!(read_admin(), yescrypt);

    // Refused, naming the field and never echoing the value; nothing written.
    let before = snapshot(&fx.repo);
    for (input, why) in [
        ("shrt-pw\n", "too short"),
        ("$1$abcdefgh$KJ7WjyqF2Bw5v0Rm3zC2g/\n", "not accepted"),
        ("$6$saltstring$truncated\n", "not a well-formed one"),
    ] {
        let out = fx.run_stdin(
            &[
                "set",
                "fleet-1",
                "admin_password_hash",
                "--confirm",
                "fleet-1",
            ],
            input,
        );
        assert_eq!(out.status.code(), Some(2), "{input}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("hosts.fleet-1.secrets.admin_password_hash") && t.contains(why),
            "{t}"
        );
        assert!(
            !t.contains(input.trim()) && !t.contains("abcdefgh"),
            "value echoed: {t}"
        );
    }
    assert_eq!(before, snapshot(&fx.repo));

    // `rotate` without names leaves the login password alone; named with --from-json it hashes.
    let old = std::fs::read(&admin).unwrap();
    fx.run_ok(&["rotate", "fleet-1", "--confirm", "fleet-1"]);
    assert_eq!(
        std::fs::read(&admin).unwrap(),
        old,
        "rotated a login password unasked"
    );
    let values = fx.home.join("rot.json");
    std::fs::write(
        &values,
        r#"{"secrets": {"admin_password_hash": "Rotated-Login-Pw-9"}}"#,
    )
    .unwrap();
    std::fs::set_permissions(&values, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = fx.run_ok(&[
        "rotate",
        "fleet-1",
        "admin_password_hash",
        "--confirm",
        "fleet-1",
        "--from-json",
        values.to_str().unwrap(),
    ]);
    assert!(!text(&out).contains("Rotated-Login-Pw-9"));
    assert_sha512_crypt_of(&read_admin(), "Rotated-Login-Pw-9");

    // `check --decrypt` flags a password-hash secret holding a plaintext (a repo initialised
    // when the secret was declared `password`), without showing it.
    let fleet_path = fx.repo.join("fleet/clawdlets.json");
    let declared = std::fs::read_to_string(&fleet_path).unwrap();
    std::fs::write(
        &fleet_path,
        declared.replace("\"kind\": \"password-hash\"", "\"kind\": \"provided\""),
    )
    .unwrap();
    let out = fx.run_stdin(
        &[
            "set",
            "fleet-1",
            "admin_password_hash",
            "--confirm",
            "fleet-1",
        ],
        "Legacy-Plaintext-Pw-1\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&fleet_path, &declared).unwrap();
    git(&fx.repo, &["add", "-A"]);
    let out = fx.run(&["check", "--decrypt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("admin_password_hash.yaml: hosts.fleet-1.secrets.admin_password_hash is a password-hash secret but holds no crypt(3) hash"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("Legacy-Plaintext-Pw-1"));
    let out = fx.run_stdin(
        &[
            "set",
            "fleet-1",
            "admin_password_hash",
            "--confirm",
            "fleet-1",
        ],
        "Legacy-Plaintext-Pw-1\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    git(&fx.repo, &["add", "-A"]);
    fx.run_ok(&["check", "--decrypt"]);

    // A generated login password needs a terminal to be shown on: without one, init refuses
    // (naming the field) and writes nothing; a dry run still plans.
    let mut fleet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fleet_path).unwrap()).unwrap();
    fleet["hosts"]["fleet-1"]["secrets"]["root_pw"] = serde_json::json!({
        "value": {"kind": "password-hash", "generate": true, "length": 20},
        "neededForUsers": true
    });
    std::fs::write(&fleet_path, serde_json::to_string_pretty(&fleet).unwrap()).unwrap();
    let before = snapshot(&fx.repo);
    let out = fx.run(&["init", "--host", "fleet-1", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("hosts.fleet-1.secrets.root_pw")
            && text(&out).contains("stderr is not a terminal"),
        "{}",
        text(&out)
    );
    let out = fx.run_ok(&["init", "--host", "fleet-1", "--dry-run"]);
    assert!(text(&out).contains("secrets/hosts/fleet-1/root_pw.yaml"));
    assert_eq!(before, snapshot(&fx.repo));

    // On a terminal (util-linux `script` gives it a pty) the password is shown exactly once and
    // the stored hash verifies against it.
    if !common::require_tool("password_hash_pty", "script") {
        return;
    }
    let mut c = Command::new("script");
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SOPS_") || k.starts_with("AGE_") || k == "RUST_LOG" {
            c.env_remove(&key);
        }
    }
    c.env("HOME", &fx.home)
        .current_dir(&fx.repo)
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "'{}' secrets init --host fleet-1 --yes",
            common::bin().display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null());
    let out = common::run(&mut c);
    let shown = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{shown}");
    let mut lines = shown.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("new password of root_pw on fleet-1 (shown once"))
        .unwrap_or_else(|| panic!("password not shown: {shown}"));
    let pw = lines.next().unwrap().trim().to_string();
    assert_eq!(pw.len(), 20, "{shown}");
    assert_eq!(
        shown.matches(pw.as_str()).count(),
        1,
        "shown more than once"
    );
    let stored = stored_value(
        &fx.sops_decrypt(&fx.secret("root_pw"), &fx.host_key())
            .unwrap(),
        "root_pw",
    );
    assert_sha512_crypt_of(&stored, &pw);
    for (path, (_, bytes)) in snapshot(&fx.repo) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(pw.as_str()),
            "{} holds the generated password",
            path.display()
        );
    }
}

#[test]
fn dry_run_leaves_the_tree_byte_identical() {
    let Some(fx) = fixture("dry_run_leaves_tree") else {
        return;
    };
    let values = fx.values.to_str().unwrap().to_string();
    let before = snapshot(&fx.repo);
    let out = fx.run_ok(&[
        "init",
        "--host",
        "fleet-1",
        "--dry-run",
        "--from-json",
        &values,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("create   0600  .clawdlets/keys/operators/alice.agekey"),
        "{}",
        text(&out)
    );
    assert_eq!(before, snapshot(&fx.repo), "init --dry-run wrote something");
    // Dry-run without values for provided secrets still plans (and says what it needs).
    fx.run_ok(&["init", "--host", "fleet-1", "--dry-run", "--json"]);
    assert_eq!(before, snapshot(&fx.repo));

    fx.init();
    let before = snapshot(&fx.repo);
    let out = fx.run_ok(&["rotate", "fleet-1", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("replace  0600  secrets/hosts/fleet-1/wg_key.yaml"),
        "{}",
        text(&out)
    );
    let out = fx.run_stdin(&["set", "fleet-1", "api_b64", "--dry-run"], "new-value\n");
    assert!(out.status.success(), "{}", text(&out));
    fx.run_ok(&[
        "rekey",
        "--rotate-host-key",
        "--host",
        "fleet-1",
        "--dry-run",
    ]);
    assert_eq!(before, snapshot(&fx.repo), "a dry run wrote something");
}

#[test]
fn replacing_needs_confirmation_and_missing_operator_key_is_refused() {
    let Some(fx) = fixture("confirmation_required") else {
        return;
    };
    // Non-interactive without --yes: refused, nothing written.
    let before = snapshot(&fx.repo);
    let out = fx.run(&[
        "init",
        "--host",
        "fleet-1",
        "--from-json",
        fx.values.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert_eq!(before, snapshot(&fx.repo));
    // Missing provided value without a terminal: fails naming the field, writes nothing.
    let out = fx.run(&["init", "--host", "fleet-1", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hosts.fleet-1.secrets.discord_token_maren"),
        "{}",
        text(&out)
    );
    assert_eq!(before, snapshot(&fx.repo));

    fx.init();
    let secret = fx.secret("api_b64");
    let old = std::fs::read(&secret).unwrap();
    for args in [
        vec!["set", "fleet-1", "api_b64"],
        vec!["set", "fleet-1", "api_b64", "--yes"],
        vec!["set", "fleet-1", "api_b64", "--confirm", "fleet-2"],
    ] {
        let out = fx.run_stdin(&args, "replacement\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{}",
            text(&out)
        );
        assert_eq!(
            std::fs::read(&secret).unwrap(),
            old,
            "{args:?} replaced without confirmation"
        );
    }
    let out = fx.run(&["rotate", "fleet-1", "api_b64", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read(&secret).unwrap(), old);
    let out = fx.run_stdin(
        &["set", "fleet-1", "api_b64", "--confirm", "fleet-1"],
        "replacement\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        fx.sops_decrypt(&secret, &fx.operator_key())
            .unwrap()
            .contains("api_b64: replacement")
    );
    // Undeclared secret names are refused.
    let out = fx.run_stdin(&["set", "fleet-1", "nope", "--confirm", "fleet-1"], "x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not declared in hosts.fleet-1.secrets"));

    // A second command on the same repo while one runs is refused (flock on the repo root).
    {
        use std::os::fd::AsRawFd as _;
        let held = std::fs::File::open(&fx.repo).unwrap();
        // SAFETY: flock on an fd this test owns.
        assert_eq!(
            unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let out = fx.run_stdin(
            &["set", "fleet-1", "api_b64", "--confirm", "fleet-1"],
            "x\n",
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("another `clawdlets secrets` command is running")
        );
    }

    // Operator key missing: every writer refuses (could not run, exit 2).
    std::fs::rename(fx.operator_key(), fx.repo.join("moved.agekey")).unwrap();
    let before = snapshot(&fx.repo);
    for args in [
        vec!["set", "fleet-1", "api_b64", "--confirm", "fleet-1"],
        vec!["rotate", "fleet-1", "--confirm", "fleet-1"],
        vec!["rekey", "--confirm", "fleet-1"],
        vec!["edit", "fleet-1", "api_b64", "--confirm", "fleet-1"],
        vec!["init", "--host", "fleet-1", "--yes"],
    ] {
        let out = fx.run_stdin(&args, "v\n");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("operator key '.clawdlets/keys/operators/alice.agekey' is missing"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(before, snapshot(&fx.repo));
}

#[test]
fn values_never_reach_argv_stdout_or_logs() {
    let Some(fx) = fixture("values_never_leak") else {
        return;
    };
    // A `sops` shim records the argv of every sops process the tool starts (what /proc shows).
    let shim = fx.home.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let argv_log = fx.home.join("argv.log");
    let real_sops = common::which("sops").unwrap();
    std::fs::write(
        shim.join("sops"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            argv_log.display(),
            real_sops.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(shim.join("sops"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let editor_log = fx.home.join("editor.log");
    let editor = fx.home.join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\nprintf 'EDITED-VALUE-9f8e7d' > \"$1\"\n",
            editor_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();

    let run = |args: &[&str], input: &str| {
        let mut c = fx.cmd(args);
        c.env("PATH", &path).env("EDITOR", &editor).arg("-vvv");
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    };
    let values = fx.values.to_str().unwrap().to_string();
    let mut outputs = vec![run(
        &["init", "--host", "fleet-1", "--yes", "--from-json", &values],
        "",
    )];
    let set_value = "SET-VALUE-5c4b3a29";
    outputs.push(run(
        &[
            "set",
            "fleet-1",
            "discord_token_maren",
            "--confirm",
            "fleet-1",
        ],
        &format!("{set_value}\n"),
    ));
    let login_pw = "SET-LOGIN-PW-0a1b2c3d";
    outputs.push(run(
        &[
            "set",
            "fleet-1",
            "admin_password_hash",
            "--confirm",
            "fleet-1",
        ],
        &format!("{login_pw}\n"),
    ));
    outputs.push(run(
        &[
            "edit",
            "fleet-1",
            "discord_token_maren",
            "--confirm",
            "fleet-1",
        ],
        "",
    ));
    outputs.push(run(&["rotate", "fleet-1", "--confirm", "fleet-1"], ""));
    outputs.push(run(
        &["rekey", "--rotate-data-keys", "--confirm", "fleet-1"],
        "",
    ));
    assert!(
        fx.sops_decrypt(&fx.secret("discord_token_maren"), &fx.operator_key())
            .unwrap()
            .contains("EDITED-VALUE-9f8e7d")
    );

    // Every value that now exists or existed: provided, set, edited, and all generated ones.
    let mut secrets: Vec<String> = vec![
        PROVIDED.into(),
        set_value.into(),
        "EDITED-VALUE-9f8e7d".into(),
        ADMIN_PW.into(),
        login_pw.into(),
    ];
    for f in fx.secret_files() {
        let plain = fx.sops_decrypt(&f, &fx.operator_key()).unwrap();
        for line in plain.lines() {
            if let Some((_, v)) = line.split_once(": ") {
                if v.len() >= 12 && !v.starts_with('|') && !v.starts_with("age1") {
                    secrets.push(v.trim().to_string());
                }
            } else if line.starts_with("    ") && line.len() > 30 && !line.contains("-----") {
                secrets.push(line.trim().to_string()); // ssh private key body lines
            }
        }
    }
    secrets.push(
        std::fs::read_to_string(fx.host_key())
            .unwrap()
            .trim()
            .to_string(),
    );
    assert!(secrets.len() > 8);
    let argv = std::fs::read_to_string(&argv_log).unwrap_or_default();
    let edargv = std::fs::read_to_string(&editor_log).unwrap();
    for s in &secrets {
        for out in &outputs {
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains(s.as_str()),
                "value on stdout"
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains(s.as_str()),
                "value in logs/stderr"
            );
        }
        assert!(!argv.contains(s.as_str()), "value in a child's argv");
        assert!(!edargv.contains(s.as_str()), "value in the editor's argv");
    }
    // The plaintext lives nowhere in the repo outside its encrypted files (and the local keys).
    for (path, (_, bytes)) in snapshot(&fx.repo) {
        let t = String::from_utf8_lossy(&bytes);
        for s in &secrets[..5] {
            assert!(
                !t.contains(s.as_str()),
                "{} holds a plaintext value",
                path.display()
            );
        }
    }
    // The editor ran on a private 0700 dir that is gone afterwards.
    let edited = PathBuf::from(edargv.lines().next().unwrap());
    assert!(
        !edited.parent().unwrap().exists(),
        "edit dir left behind: {}",
        edited.display()
    );
}

#[test]
fn check_fails_on_each_hygiene_violation() {
    let Some(fx) = fixture("check_hygiene") else {
        return;
    };
    fx.init();
    git(&fx.repo, &["add", "-A"]);
    fx.run_ok(&["check"]);

    let expect = |what: &str, needle: &str| {
        let out = fx.run(&["check"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.contains(needle)),
            "{what}: expected '{needle}' in\n{stdout}"
        );
        let json = fx.run(&["check", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["ok"], false);
    };

    // Plaintext under secrets/.
    let plain = fx.secret("api_b64");
    let saved = std::fs::read(&plain).unwrap();
    std::fs::write(&plain, "api_b64: not-encrypted\n").unwrap();
    expect(
        "plaintext sops file",
        "secrets/hosts/fleet-1/api_b64.yaml: not a valid sops file",
    );
    std::fs::write(&plain, &saved).unwrap();

    // A file encrypted to a recipient its rule does not list (a removed operator).
    let stranger = common::run(&mut Command::new("age-keygen"));
    let stranger_key = String::from_utf8(stranger.stdout).unwrap();
    let stranger_pub = stranger_key
        .lines()
        .find(|l| l.starts_with("# public key: "))
        .unwrap()
        .trim_start_matches("# public key: ")
        .to_string();
    let rules = std::fs::read_to_string(fx.repo.join("secrets/.sops.yaml")).unwrap();
    let recipients: Vec<&str> = rules
        .lines()
        .skip_while(|l| !l.contains("hosts/fleet-1/[^/]"))
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- age1")
                .map(|_| l.trim().trim_start_matches("- "))
        })
        .collect();
    let all = format!("{},{stranger_pub}", recipients.join(","));
    let out = common::run(
        common::sops(&fx.home)
            .args([
                "encrypt",
                "--age",
                &all,
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
                "/dev/stdin",
            ])
            .stdin(
                std::fs::File::open({
                    let p = fx.home.join("p.yaml");
                    std::fs::write(&p, "api_b64: x\n").unwrap();
                    p
                })
                .unwrap(),
            ),
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&plain, &out.stdout).unwrap();
    expect(
        "stale recipient",
        &format!(
            "api_b64.yaml: encrypted to {stranger_pub}, which its creation rule no longer lists"
        ),
    );
    std::fs::write(&plain, &saved).unwrap();

    // Tampered ciphertext: invisible without a key, caught by --decrypt (MAC / GCM tag).
    fx.run_ok(&["check", "--decrypt"]);
    let tampered = String::from_utf8(saved.clone()).unwrap().replacen(
        "ENC[AES256_GCM,data:",
        "ENC[AES256_GCM,data:AAAA",
        1,
    );
    std::fs::write(&plain, tampered).unwrap();
    let out = fx.run(&["check", "--decrypt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("api_b64.yaml: operator 'alice' cannot open it"),
        "{}",
        text(&out)
    );
    std::fs::write(&plain, &saved).unwrap();

    // A token committed outside secrets/.
    std::fs::write(
        fx.repo.join("notes.md"),
        "bot token: ghp_0123456789abcdefghijABCDEFGHIJ0123456789\n",
    )
    .unwrap();
    git(&fx.repo, &["add", "notes.md"]);
    let out = fx.run(&["check"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ghp_0123"),
        "findings must not quote the secret"
    );
    expect("token tracked", "notes.md:1: looks like a GitHub token");
    git(&fx.repo, &["rm", "-q", "--cached", "notes.md"]);
    std::fs::remove_file(fx.repo.join("notes.md")).unwrap();

    // A login password hash committed in a Nix file (instead of a password-hash secret).
    std::fs::write(
        fx.repo.join("host.nix"),
        "{ users.users.admin.hashedPassword = \"$6$8Iw.EN2Ao8Im8Jmb$/exoAbCdEfGhIjKlMnOpQrStUvWxYz0123456789\"; }\n",
    )
    .unwrap();
    git(&fx.repo, &["add", "host.nix"]);
    expect(
        "crypt hash tracked",
        "host.nix:1: looks like a crypt(3) password hash (use a password-hash secret)",
    );
    git(&fx.repo, &["rm", "-q", "--cached", "host.nix"]);
    std::fs::remove_file(fx.repo.join("host.nix")).unwrap();

    // A private key tracked (the host key copied out of .clawdlets).
    std::fs::copy(fx.host_key(), fx.repo.join("host.key")).unwrap();
    git(&fx.repo, &["add", "host.key"]);
    expect(
        "private key tracked",
        "host.key:1: looks like an age secret key",
    );
    git(&fx.repo, &["rm", "-q", "--cached", "host.key"]);
    std::fs::remove_file(fx.repo.join("host.key")).unwrap();

    // .clawdlets/ not ignored.
    std::fs::write(fx.repo.join(".gitignore"), "target/\n").unwrap();
    expect(
        ".clawdlets not ignored",
        ".clawdlets/ (operator keys, plaintext host keys) is not ignored",
    );
    std::fs::write(fx.repo.join(".gitignore"), "/.clawdlets/\n").unwrap();
    // ... and something under it force-added.
    git(
        &fx.repo,
        &["add", "-f", ".clawdlets/keys/operators/alice.age.pub"],
    );
    expect(
        "tracked runtime file",
        ".clawdlets/keys/operators/alice.age.pub: files under .clawdlets/ must never be committed",
    );
    git(
        &fx.repo,
        &[
            "rm",
            "-q",
            "--cached",
            ".clawdlets/keys/operators/alice.age.pub",
        ],
    );

    // Extra-files modes.
    std::fs::set_permissions(fx.host_key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    expect(
        "key.txt mode",
        "var/lib/sops-nix/key.txt: host key has mode 0644: must be 0600",
    );
    std::fs::set_permissions(fx.host_key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let var = fx.repo.join(".clawdlets/extra-files/fleet-1/var");
    std::fs::set_permissions(&var, std::fs::Permissions::from_mode(0o700)).unwrap();
    expect(
        "var mode",
        "extra-files/fleet-1/var: mode 0700, expected 0755",
    );
    std::fs::set_permissions(&var, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Fleet config errors name the field.
    let fleet = fx.repo.join("fleet/clawdlets.json");
    let saved_fleet = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&fleet, saved_fleet.replace("\"bytes\": 32", "\"bytes\": 4")).unwrap();
    expect(
        "fleet invalid",
        "hosts.fleet-1.secrets.api_b64.value.bytes: must be between 16",
    );
    std::fs::write(&fleet, &saved_fleet).unwrap();

    fx.run_ok(&["check"]);
}

#[test]
fn rekey_after_removing_an_operator_leaves_nothing_they_can_open() {
    let Some(fx) = fixture("rekey_revokes") else {
        return;
    };
    fx.init();
    // Add bob, rekey (additions only: --yes suffices), bob can read everything.
    let bob_key = fx.home.join("bob.agekey");
    common::run_ok(Command::new("age-keygen").arg("-o").arg(&bob_key));
    let bob_pub = String::from_utf8(common::run_ok(
        Command::new("age-keygen").arg("-y").arg(&bob_key),
    ))
    .unwrap()
    .trim()
    .to_string();
    let fleet_path = fx.repo.join("fleet/clawdlets.json");
    let mut fleet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fleet_path).unwrap()).unwrap();
    fleet["operators"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "bob", "ageRecipient": bob_pub}));
    std::fs::write(&fleet_path, serde_json::to_string_pretty(&fleet).unwrap()).unwrap();
    fx.run_ok(&["rekey", "--operator", "alice", "--yes"]);
    let files = fx.secret_files();
    assert_eq!(files.len(), 7);
    let mut bob_data_keys = Vec::new();
    for f in &files {
        fx.sops_decrypt(f, &bob_key)
            .unwrap_or_else(|e| panic!("bob cannot open {} after being added: {e}", f.display()));
        bob_data_keys.push(data_key(f, &bob_key).expect("bob unwraps the data key"));
    }

    // Remove bob: rekey is destructive now and needs the host name.
    fleet["operators"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["name"] != "bob");
    std::fs::write(&fleet_path, serde_json::to_string_pretty(&fleet).unwrap()).unwrap();
    let out = fx.run(&["rekey", "--operator", "alice", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = fx.run_ok(&["rekey", "--operator", "alice", "--confirm", "fleet-1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("revoked: {bob_pub}")),
        "{}",
        text(&out)
    );
    for (f, old_dk) in files.iter().zip(&bob_data_keys) {
        assert!(
            fx.sops_decrypt(f, &bob_key).is_err(),
            "bob still opens {}",
            f.display()
        );
        assert!(
            data_key(f, &bob_key).is_none(),
            "no stanza for bob in {}",
            f.display()
        );
        let new_dk = data_key(f, &fx.operator_key()).expect("alice unwraps the new data key");
        assert_ne!(
            &new_dk,
            old_dk,
            "{}: data key not rotated: bob's old copy would still open it",
            f.display()
        );
        fx.sops_decrypt(f, &fx.operator_key()).unwrap();
    }
    for n in ["wg_key", "api_b64"] {
        fx.sops_decrypt(&fx.secret(n), &fx.host_key()).unwrap();
    }
    git(&fx.repo, &["add", "-A"]);
    fx.run_ok(&["check"]);
}

#[test]
fn host_key_rotation_reencrypts_and_prints_the_push_steps() {
    let Some(fx) = fixture("host_key_rotation") else {
        return;
    };
    fx.init();
    let old_key = fx.home.join("old-host.key");
    std::fs::copy(fx.host_key(), &old_key).unwrap();
    let out = fx.run(&["rekey", "--host", "fleet-1", "--rotate-host-key", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "host key rotation needs the host name: {}",
        text(&out)
    );
    let out = fx.run_ok(&ROTATE_HOST_KEY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ssh root@203.0.113.10 'umask 077; cat >> /var/lib/sops-nix/key.txt' < .clawdlets/extra-files/fleet-1/var/lib/sops-nix/key.txt"), "{stdout}");
    assert_ne!(
        std::fs::read(&old_key).unwrap(),
        std::fs::read(fx.host_key()).unwrap()
    );
    assert_eq!(mode(&fx.host_key()), 0o600);
    for n in ["wg_key", "discord_token_maren"] {
        assert!(fx.sops_decrypt(&fx.secret(n), &fx.host_key()).is_ok());
        assert!(
            fx.sops_decrypt(&fx.secret(n), &old_key).is_err(),
            "old host key still opens {n}"
        );
        let extra = fx.repo.join(format!(
            ".clawdlets/extra-files/fleet-1/var/lib/clawdlets/secrets/hosts/fleet-1/{n}.yaml"
        ));
        assert_eq!(
            std::fs::read(extra).unwrap(),
            std::fs::read(fx.secret(n)).unwrap()
        );
    }
    git(&fx.repo, &["add", "-A"]);
    fx.run_ok(&["check"]);
    // init after rotation is consistent and changes nothing.
    let before = snapshot(&fx.repo);
    fx.run_ok(&["init", "--host", "fleet-1", "--yes"]);
    assert_eq!(before, snapshot(&fx.repo));
}

/// An operator key protected with `age -p` (the real age) works for every command that decrypts
/// with it: the passphrase is asked on the terminal once per command, however many files it
/// opens, and a wrong one fails without touching the tree.
#[test]
fn passphrase_protected_operator_key_is_asked_for_once_per_command() {
    use crate::common::terminal::{age_protect, run_on_terminal};
    let Some(fx) = fixture("passphrase_protected_operator_key") else {
        return;
    };
    fx.init();
    let pass = "operator horse battery";
    let plain = fx.home.join("alice.plain");
    std::fs::rename(fx.operator_key(), &plain).unwrap();
    age_protect(&plain, &fx.operator_key(), pass, false);

    let before = snapshot(&fx.repo);
    let (status, shown) = run_on_terminal(
        &mut fx.cmd(&ROTATE_HOST_KEY),
        &[("Enter passphrase for identity", "wrong horse")],
    );
    assert!(!status.success(), "{shown}");
    assert!(shown.contains("incorrect passphrase"), "{shown}");
    assert_eq!(
        before,
        snapshot(&fx.repo),
        "a refused passphrase changed the tree"
    );

    let (status, shown) = run_on_terminal(
        &mut fx.cmd(&ROTATE_HOST_KEY),
        &[("Enter passphrase for identity", pass)],
    );
    assert!(status.success(), "{shown}");
    assert_eq!(shown.matches("Enter passphrase").count(), 1, "{shown}");
    for n in ["wg_key", "discord_token_maren"] {
        assert!(
            fx.sops_decrypt(&fx.secret(n), &fx.host_key()).is_ok(),
            "{n}"
        );
        assert!(fx.sops_decrypt(&fx.secret(n), &plain).is_ok(), "{n}");
    }
}

/// Rules an operator adds to `secrets/.sops.yaml` for other paths survive `rekey` and `init`
/// (which rewrite the host rules), the plan says so, and the real sops keeps using them.
#[test]
fn operator_rules_in_sops_yaml_survive_rekey() {
    let Some(fx) = fixture("operator_rules_in_sops_yaml_survive_rekey") else {
        return;
    };
    fx.init();
    let ci = common::sops::age_keygen(&fx.home, "ci");
    let sops_yaml = fx.repo.join("secrets/.sops.yaml");
    let mut rules = std::fs::read_to_string(&sops_yaml).unwrap();
    rules.push_str(&format!(
        "  - path_regex: ^ci/.*\\.yaml$\n    age: {}\n",
        ci.recipient
    ));
    std::fs::write(&sops_yaml, &rules).unwrap();

    let out = fx.run_ok(&ROTATE_HOST_KEY);
    assert!(
        text(&out).contains("kept: the creation rule for '^ci/.*\\.yaml$'"),
        "{}",
        text(&out)
    );
    let after = std::fs::read_to_string(&sops_yaml).unwrap();
    assert!(
        after.contains(&format!(
            "  - path_regex: ^ci/.*\\.yaml$\n    age: {}\n",
            ci.recipient
        )),
        "{after}"
    );
    fx.run_ok(&["init", "--host", "fleet-1", "--yes"]);
    assert_eq!(
        std::fs::read_to_string(&sops_yaml).unwrap(),
        after,
        "init churned .sops.yaml"
    );

    // The real sops, in secrets/, encrypts ci/ files with the operator's rule.
    std::fs::create_dir_all(fx.repo.join("secrets/ci")).unwrap();
    std::fs::write(fx.repo.join("secrets/ci/p.yaml"), "k: v\n").unwrap();
    let out = common::run_ok(
        common::sops(&fx.home)
            .current_dir(fx.repo.join("secrets"))
            .args(["-e", "ci/p.yaml"]),
    );
    assert!(String::from_utf8(out).unwrap().contains(&ci.recipient));
}

#[test]
fn failed_editor_writes_nothing_and_removes_the_private_dir() {
    let Some(fx) = fixture("edit_failure") else {
        return;
    };
    fx.init();
    let log = fx.home.join("ed.log");
    let editor = fx.home.join("ed.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\nstat -c '%a' \"$(dirname \"$1\")\" >> '{0}'\nstat -f -c '%T' \"$1\" >> '{0}'\necho changed > \"$1\"\nexit 3\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&fx.repo);
    let out = common::run(
        fx.cmd(&["edit", "fleet-1", "api_b64", "--confirm", "fleet-1"])
            .env("EDITOR", &editor),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(before, snapshot(&fx.repo));
    let log = std::fs::read_to_string(&log).unwrap();
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("700"));
    assert_eq!(
        lines.next(),
        Some("tmpfs"),
        "plaintext must sit on a RAM filesystem"
    );
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("clawdlets-plain-")
        })
        .collect();
    // Other tests may be editing concurrently; none of ours may hold this test's value. Only
    // regular files are read: `sops exec-file` keeps FIFOs there, and opening one would block.
    for e in leftovers {
        if let Ok(rd) = std::fs::read_dir(e.path()) {
            for f in rd
                .flatten()
                .filter(|f| f.file_type().is_ok_and(|t| t.is_file()))
            {
                assert_ne!(
                    std::fs::read_to_string(f.path()).unwrap_or_default(),
                    "changed\n"
                );
            }
        }
    }
}

/// Validates `instance` against docs/fleet.schema.json with Python's `jsonschema` (Draft
/// 2020-12). Ok(()) or Err(message).
fn schema_validate(instance: &serde_json::Value) -> Result<(), String> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/fleet.schema.json");
    let script = "import json,sys,jsonschema\n\
                  s=json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft202012Validator.check_schema(s)\n\
                  errs=sorted(jsonschema.Draft202012Validator(s).iter_errors(json.load(sys.stdin)),key=str)\n\
                  print('\\n'.join('/'.join(map(str,e.absolute_path))+': '+e.message for e in errs))\n\
                  sys.exit(1 if errs else 0)\n";
    let mut child = Command::new("python3")
        .args(["-c", script, schema])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(instance.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stdout).to_string()),
        _ => panic!(
            "schema validator crashed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn example_fleet_validates_against_the_schema_and_the_validator_and_both_reject_the_same_mistakes()
{
    let has_jsonschema = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_jsonschema {
        eprintln!(
            "SKIP schema test: python3 jsonschema is not installed (scripts/install-test-deps.sh installs it)"
        );
        return;
    }
    let example: serde_json::Value = serde_json::from_str(EXAMPLE_FLEET).unwrap();
    schema_validate(&example).unwrap();
    clawdlets::fleet::parse(EXAMPLE_FLEET, Path::new("fleet/clawdlets.json")).unwrap();
    // After init records the operator's recipient, the file still validates against both.
    let mut enrolled = example.clone();
    enrolled["operators"][0]["ageRecipient"] =
        "age1tsgxegc6vaetpdmp68jmtjhafvtr90ysset47eudxx9wu9e73sws7jmwkz".into();
    schema_validate(&enrolled).unwrap();
    clawdlets::fleet::parse(&enrolled.to_string(), Path::new("f")).unwrap();
    // A generated login password with stronger rounds is valid for both.
    let mut generated = example.clone();
    generated["hosts"]["fleet-1"]["secrets"]["admin_password_hash"]["value"] = serde_json::json!({"kind": "password-hash", "generate": true, "length": 32, "rounds": 50000});
    schema_validate(&generated).unwrap();
    clawdlets::fleet::parse(&generated.to_string(), Path::new("f")).unwrap();

    const HOST: &str = "/hosts/fleet-1";
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "bytes below minimum",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets/api_b64/value/bytes"))
                    .map(|b| *b = 8.into())
                    .unwrap()
            }),
            "hosts.fleet-1.secrets.api_b64.value.bytes",
        ),
        (
            "unknown host field",
            Box::new(|v| {
                v.pointer_mut(HOST).unwrap()["colour"] = "red".into();
            }),
            "unknown field `colour`",
        ),
        (
            "unknown value kind",
            Box::new(|v| {
                *v.pointer_mut(&format!("{HOST}/secrets/api_b64/value"))
                    .unwrap() = serde_json::json!({"kind": "rot13"});
            }),
            "hosts.fleet-1.secrets.api_b64.value",
        ),
        (
            "unknown tailnet mode",
            Box::new(|v| {
                v.pointer_mut(HOST).unwrap()["tailnet"]["mode"] = "zerotier".into();
            }),
            "hosts.fleet-1.tailnet.mode",
        ),
        (
            "bad secret name",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets")).unwrap()["bad name"] =
                    serde_json::json!({"value": {"kind": "provided"}});
            }),
            "hosts.fleet-1.secrets.bad name",
        ),
        (
            "world-readable mode",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets/api_b64")).unwrap()["mode"] = "0644".into();
            }),
            "hosts.fleet-1.secrets.api_b64.mode",
        ),
        (
            "proxy mode without domains",
            Box::new(|v| {
                v.pointer_mut(HOST).unwrap()["egress"]["mode"] = "proxy-allowlist".into();
            }),
            "hosts.fleet-1.egress.allowedDomains",
        ),
        (
            "no operators",
            Box::new(|v| {
                v["operators"] = serde_json::json!([]);
            }),
            "operators",
        ),
        (
            "future schema version",
            Box::new(|v| {
                v["schemaVersion"] = 2.into();
            }),
            "schemaVersion",
        ),
        (
            "bad recipient",
            Box::new(|v| {
                v["operators"][0]["ageRecipient"] = "age1short".into();
            }),
            "operators[0].ageRecipient",
        ),
        (
            "plaintext password for a neededForUsers secret (hashedPasswordFile needs a hash)",
            Box::new(|v| {
                *v.pointer_mut(&format!("{HOST}/secrets/admin_password_hash/value"))
                    .unwrap() = serde_json::json!({"kind": "password", "length": 24});
            }),
            "hosts.fleet-1.secrets.admin_password_hash.value.kind",
        ),
        (
            "password-hash length without generate",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets/admin_password_hash/value"))
                    .unwrap()["length"] = 24.into();
            }),
            "hosts.fleet-1.secrets.admin_password_hash.value.length",
        ),
        (
            "password-hash rounds below the crypt(3) default",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets/admin_password_hash/value"))
                    .unwrap()["rounds"] = 1000.into();
            }),
            "hosts.fleet-1.secrets.admin_password_hash.value.rounds",
        ),
        (
            "extra field in value",
            Box::new(|v| {
                v.pointer_mut(&format!("{HOST}/secrets/api_b64/value"))
                    .unwrap()["length"] = 3.into();
            }),
            "hosts.fleet-1.secrets.api_b64.value",
        ),
    ];
    for (what, mutate, field) in cases {
        let mut v = example.clone();
        mutate(&mut v);
        assert!(
            schema_validate(&v).is_err(),
            "{what}: the schema accepts it"
        );
        let err = clawdlets::fleet::parse(&v.to_string(), Path::new("f.json"))
            .expect_err(what)
            .to_string();
        assert!(
            err.contains(field),
            "{what}: validator error does not name {field}: {err}"
        );
    }
}

#[test]
fn new_operator_enrols_with_init_and_reads_after_rekey() {
    let Some(fx) = fixture("operator_enrolment") else {
        return;
    };
    fx.init();
    // Alice declares bob (no recipient yet) and bob clones the repo (no .clawdlets/).
    let fleet_path = fx.repo.join("fleet/clawdlets.json");
    let mut fleet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fleet_path).unwrap()).unwrap();
    fleet["operators"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "bob"}));
    let bob_repo = fx.home.join("bob-clone");
    std::fs::create_dir_all(bob_repo.join("fleet")).unwrap();
    std::fs::write(
        bob_repo.join("fleet/clawdlets.json"),
        serde_json::to_string_pretty(&fleet).unwrap(),
    )
    .unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(fx.repo.join("secrets"))
        .arg(&bob_repo)
        .status()
        .unwrap();
    assert!(copy.success());
    let out = common::run(
        common::clawdlets(&fx.home)
            .current_dir(&bob_repo)
            .args([
                "secrets",
                "init",
                "--host",
                "fleet-1",
                "--operator",
                "bob",
                "--yes",
            ])
            .stdin(Stdio::null()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("enrolment"),
        "{}",
        text(&out)
    );
    let bob_key = bob_repo.join(".clawdlets/keys/operators/bob.agekey");
    assert_eq!(mode(&bob_key), 0o600);
    assert!(
        fx.sops_decrypt(&fx.secret("wg_key"), &bob_key).is_err(),
        "bob reads nothing yet"
    );
    // Bob's fleet change (his recipient) reaches alice, who rekeys: additions only, --yes.
    std::fs::copy(bob_repo.join("fleet/clawdlets.json"), &fleet_path).unwrap();
    let before = std::fs::read_to_string(fx.secret("wg_key")).unwrap();
    fx.run_ok(&["rekey", "--operator", "alice", "--yes"]);
    for f in fx.secret_files() {
        fx.sops_decrypt(&f, &bob_key)
            .unwrap_or_else(|e| panic!("bob cannot open {}: {e}", f.display()));
    }
    // Additions keep the data key: the value's ciphertext line is unchanged.
    let after = std::fs::read_to_string(fx.secret("wg_key")).unwrap();
    assert_eq!(before.lines().next(), after.lines().next());
    git(&fx.repo, &["add", "-A"]);
    fx.run_ok(&["check"]);
}
