//! `clawdlets secrets install` end to end: real sops files (encrypted at test time with the real
//! `sops` and `age-keygen`), real ramfs/tmpfs mounts and real users under a `--root` sandbox, the
//! negative paths (wrong key, tampered file, missing key, unknown owner, planted files, disk
//! full), kill -9 crash consistency, and the unprivileged sandbox mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::sops_fixtures::{AgeKey, MountGuard, encrypt, fs_type};
use crate::common::users::{TestGroup, TestUser};
use crate::common::{self, require_root, require_tool};

/// A sandbox host: `<tmp>/root` is passed as `--root`, the age key sits where NixOS keeps it.
struct Host {
    // Declared first: dropped (unmounted) before the temp dir is removed.
    _mounts: Vec<MountGuard>,
    tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    key: AgeKey,
}

impl Host {
    fn new() -> Host {
        let tmp = common::tempdir();
        let root = tmp.path().join("root");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(root.join("run/nixos")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let key = AgeKey::generate(&root, "var/lib/sops-nix/key.txt");
        let mounts = vec![
            MountGuard(root.join("run/secrets.d")),
            MountGuard(root.join("run/secrets-for-users.d")),
        ];
        Host {
            _mounts: mounts,
            tmp,
            root,
            home,
            key,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Encrypts `plaintext` into `<root>/<rel>` for the host key.
    fn sops_file(&self, rel: &str, format: &str, plaintext: &str) {
        encrypt(
            &self.home,
            &self.p(rel),
            format,
            plaintext.as_bytes(),
            &[&self.key.recipient],
        );
    }

    fn manifest(&self, name: &str, m: &Value) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(m).unwrap()).unwrap();
        path
    }

    fn cmd(&self, manifest: &Path) -> Command {
        let mut c = common::clawdlets(&self.home);
        c.args(["secrets", "install", "--manifest"])
            .arg(manifest)
            .arg("--root")
            .arg(&self.root);
        c
    }

    fn install(&self, manifest: &Path) -> Output {
        common::run(&mut self.cmd(manifest))
    }

    fn install_ok(&self, manifest: &Path) -> Output {
        let out = self.install(manifest);
        assert!(
            out.status.success(),
            "install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn link_target(&self) -> PathBuf {
        std::fs::read_link(self.p("run/secrets")).unwrap()
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.p(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// How many filesystems are mounted at `rel` (stacked mounts count each), from the
    /// kernel's mount table. Sandbox paths are temp dirs, which need no unescaping.
    fn kernel_mounts_at(&self, rel: &str) -> usize {
        let at = self.p(rel);
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4).map(Path::new) == Some(at.as_path()))
            .count()
    }

    fn mount_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.p("run/secrets.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tools(test: &str) -> bool {
    require_tool(test, "sops") && require_tool(test, "age-keygen")
}

/// A secret entry with every field sops-nix's module renders (modules/sops/default.nix).
fn secret(name: &str, key: &str, file: &str, format: &str, extra: Value) -> Value {
    let mut s = json!({
        "name": name, "key": key, "path": format!("/run/secrets/{name}"), "format": format,
        "mode": "0400", "owner": null, "uid": 0, "group": null, "gid": 0, "sopsFile": file,
        "sopsFileHash": "0000000000000000000000000000000000000000000000000000000000000000",
        "restartUnits": [], "reloadUnits": [], "neededForUsers": false
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// A whole manifest as `manifest-for.nix` renders it (every top-level key it emits).
fn manifest(secrets: Vec<Value>, templates: Vec<Value>, placeholders: Value) -> Value {
    json!({
        "secrets": secrets, "templates": templates,
        "secretsMountPoint": "/run/secrets.d", "symlinkPath": "/run/secrets",
        "keepGenerations": 1, "gnupgHome": null, "sshKeyPaths": [],
        "ageKeyFile": "/var/lib/sops-nix/key.txt", "ageSshKeyPaths": [],
        "useTmpfs": false, "placeholderBySecretName": placeholders, "userMode": false,
        "logging": { "keyImport": true, "secretChanges": true }
    })
}

fn placeholder(name: &str) -> String {
    use sha2::Digest;
    format!(
        "<SOPS:{}:PLACEHOLDER>",
        hex::encode(sha2::Sha256::digest(name.as_bytes()))
    )
}

fn owner_of(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

#[test]
fn install_nix_rendered_manifest_with_real_owners_on_ramfs() {
    let t = "install_nix_rendered_manifest_with_real_owners_on_ramfs";
    if !require_root(t) || !tools(t) {
        return;
    }
    let group = TestGroup::create("clfg");
    let user = TestUser::create("clfu", &[&group.name]);
    let h = Host::new();
    h.sops_file(
        "/var/lib/secrets/main.yaml",
        "yaml",
        "db:\n    password: hunter2\nport: 5432\nenabled: true\nratio: 1.5\napi: tok-123\n",
    );
    h.sops_file(
        "/var/lib/secrets/app.json",
        "json",
        r#"{"nested": {"deep": {"key": "jsonval"}}}"#,
    );
    let blob: Vec<u8> = (0u8..=255).rev().collect();
    encrypt(
        &h.home,
        &h.p("/var/lib/secrets/blob.bin"),
        "binary",
        &blob,
        &[&h.key.recipient],
    );

    let y = "/var/lib/secrets/main.yaml";
    let secrets = vec![
        secret(
            "db_password",
            "db/password",
            y,
            "yaml",
            json!({"owner": user.name, "group": group.name, "mode": "0440", "restartUnits": ["db.service"]}),
        ),
        secret(
            "port",
            "port",
            y,
            "yaml",
            json!({"restartUnits": ["port.service"]}),
        ),
        secret("enabled", "enabled", y, "yaml", json!({})),
        secret("ratio", "ratio", y, "yaml", json!({})),
        secret(
            "api",
            "api",
            y,
            "yaml",
            json!({"owner": user.name, "group": user.name, "path": "/var/lib/app/api-token"}),
        ),
        secret(
            "bots/maren/token",
            "api",
            y,
            "yaml",
            json!({"uid": 4242, "gid": 4343}),
        ),
        secret(
            "json_deep",
            "nested/deep/key",
            "/var/lib/secrets/app.json",
            "json",
            json!({}),
        ),
        secret(
            "blob",
            "",
            "/var/lib/secrets/blob.bin",
            "binary",
            json!({"mode": "0600"}),
        ),
    ];
    let names = [
        "db_password",
        "port",
        "enabled",
        "ratio",
        "api",
        "bots/maren/token",
        "json_deep",
        "blob",
    ];
    let phs: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.to_string(), json!(placeholder(n))))
        .collect();
    let template = json!({
        "name": "app.conf", "content": format!("pw={}\napi={}\npw-again={}\n", placeholder("db_password"), placeholder("api"), placeholder("db_password")),
        "file": "/nix/store/00000000000000000000000000000000-app.conf", "path": "/run/secrets/rendered/app.conf",
        "mode": "0400", "owner": user.name, "uid": 0, "group": user.name, "gid": 0, "restartUnits": ["app.service"], "reloadUnits": []
    });
    let m = h.manifest(
        "manifest.json",
        &manifest(
            secrets.clone(),
            vec![template.clone()],
            Value::Object(phs.clone()),
        ),
    );
    let out = h.install_ok(&m);

    assert_eq!(fs_type(&h.p("run/secrets.d")), "ramfs");
    assert_eq!(owner_of(&h.p("run/secrets.d")).2, 0o751);
    assert_eq!(h.link_target(), h.p("run/secrets.d/1"));
    assert_eq!(h.read("run/secrets/db_password"), b"hunter2");
    assert_eq!(h.read("run/secrets/port"), b"5432");
    assert_eq!(h.read("run/secrets/enabled"), b"true");
    assert_eq!(h.read("run/secrets/ratio"), b"1.5");
    assert_eq!(h.read("run/secrets/json_deep"), b"jsonval");
    assert_eq!(h.read("run/secrets/blob"), blob);
    assert_eq!(h.read("run/secrets/bots/maren/token"), b"tok-123");
    assert_eq!(
        h.read("run/secrets/rendered/app.conf"),
        b"pw=hunter2\napi=tok-123\npw-again=hunter2\n"
    );
    assert_eq!(
        owner_of(&h.p("run/secrets.d/1/db_password")),
        (user.uid, group.gid, 0o440)
    );
    assert_eq!(
        owner_of(&h.p("run/secrets.d/1/api")),
        (user.uid, user.gid, 0o400)
    );
    assert_eq!(
        owner_of(&h.p("run/secrets.d/1/bots/maren/token")),
        (4242, 4343, 0o400)
    );
    assert_eq!(owner_of(&h.p("run/secrets.d/1/blob")), (0, 0, 0o600));
    assert_eq!(
        owner_of(&h.p("run/secrets.d/1/rendered/app.conf")),
        (user.uid, user.gid, 0o400)
    );
    assert_eq!(owner_of(&h.p("run/secrets.d/1/bots/maren")).2, 0o751);
    // The custom path is a symlink through the stable link, owned by the secret's owner.
    let link = h.p("var/lib/app/api-token");
    assert_eq!(std::fs::read_link(&link).unwrap(), h.p("run/secrets/api"));
    assert_eq!(owner_of(&link).0, user.uid);
    assert_eq!(std::fs::read(&link).unwrap(), b"tok-123");
    // No key material is ever written into the mount (sops-nix leaves age-keys.txt there).
    assert_eq!(h.mount_entries(), vec!["1"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));

    // Second run: a changed value and an owner-only change both restart their units.
    h.sops_file(
        y,
        "yaml",
        "db:\n    password: correct-horse\nport: 5432\nenabled: true\nratio: 1.5\napi: tok-123\n",
    );
    let mut secrets2 = secrets;
    secrets2[1]["owner"] = json!(user.name);
    let m2 = h.manifest(
        "manifest2.json",
        &manifest(secrets2, vec![template], Value::Object(phs)),
    );
    let out = h.install_ok(&m2);
    let err = stderr(&out);
    assert!(err.contains("modifying secret 'db_password'"), "{err}");
    assert!(
        !err.contains("correct-horse") && !err.contains("hunter2"),
        "values never logged"
    );
    assert_eq!(h.link_target(), h.p("run/secrets.d/2"));
    assert_eq!(
        h.mount_entries(),
        vec!["2"],
        "keepGenerations=1 prunes generation 1"
    );
    let restarts = std::fs::read_to_string(h.p("run/nixos/activation-restart-list")).unwrap();
    assert_eq!(restarts, "db.service\nport.service\napp.service\n");
    assert_eq!(owner_of(&h.p("run/secrets/port")).0, user.uid);
}

/// Every failure leaves the active generation exactly as it was and removes the new one.
#[test]
fn failures_keep_the_previous_generation_and_name_the_secret() {
    let t = "failures_keep_the_previous_generation_and_name_the_secret";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    let f = "/var/lib/secrets/s.yaml";
    h.sops_file(f, "yaml", "token: good\nother: fine\n");
    let base = vec![
        secret(
            "token",
            "token",
            f,
            "yaml",
            json!({"path": "/etc/app/token"}),
        ),
        secret("other", "other", f, "yaml", json!({})),
    ];
    let good = h.manifest("good.json", &manifest(base.clone(), vec![], json!({})));
    h.install_ok(&good);
    let before = (
        h.link_target(),
        h.read("run/secrets/token"),
        h.mount_entries(),
    );

    let check = |label: &str, m: &Path, needles: &[&str]| {
        let out = h.install(m);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{label}: {err}");
        for n in needles {
            assert!(err.contains(n), "{label}: expected {n:?} in: {err}");
        }
        assert!(err.contains("previous generation"), "{label}: {err}");
        assert_eq!(
            (
                h.link_target(),
                h.read("run/secrets/token"),
                h.mount_entries()
            ),
            before,
            "{label}"
        );
    };

    // Missing key inside the file.
    let mut s = base.clone();
    s[1]["key"] = json!("nope/deeper");
    check(
        "missing key",
        &h.manifest("m1.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "nope/deeper"],
    );
    // Missing sops file.
    let mut s = base.clone();
    s[1]["sopsFile"] = json!("/var/lib/secrets/absent.yaml");
    check(
        "missing file",
        &h.manifest("m2.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "absent.yaml"],
    );
    // Unknown owner.
    let mut s = base.clone();
    s[1]["owner"] = json!("no-such-user-clf");
    check(
        "unknown owner",
        &h.manifest("m3.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "unknown user 'no-such-user-clf'"],
    );
    // Name escaping the mount.
    let mut s = base.clone();
    s[1]["name"] = json!("../../etc/evil");
    check(
        "escape",
        &h.manifest("m4.json", &manifest(s, vec![], json!({}))),
        &["'../../etc/evil'", "escape"],
    );
    // Duplicate names.
    let mut s = base.clone();
    s.push(base[1].clone());
    check(
        "duplicate",
        &h.manifest("m5.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "twice"],
    );

    // Wrong key: the file is encrypted for someone else.
    let stranger = AgeKey::generate(h.tmp.path(), "stranger.txt");
    encrypt(
        &h.home,
        &h.p("/var/lib/secrets/wrong.yaml"),
        "yaml",
        b"other: x\n",
        &[&stranger.recipient],
    );
    let mut s = base.clone();
    s[1]["sopsFile"] = json!("/var/lib/secrets/wrong.yaml");
    check(
        "wrong key",
        &h.manifest("m6.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "wrong.yaml", &stranger.recipient],
    );

    // Tampered file: an added plaintext value breaks the MAC.
    let tampered = h.p("/var/lib/secrets/tampered.yaml");
    std::fs::copy(h.p(f), &tampered).unwrap();
    let mut text = std::fs::read_to_string(&tampered).unwrap();
    text.push_str("evil_unencrypted: injected\n");
    std::fs::write(&tampered, text).unwrap();
    let mut s = base.clone();
    s[1]["sopsFile"] = json!("/var/lib/secrets/tampered.yaml");
    check(
        "tampered",
        &h.manifest("m7.json", &manifest(s, vec![], json!({}))),
        &["secret 'other'", "MAC"],
    );

    // Planted file, then planted foreign symlink, where a custom path's link goes.
    std::fs::remove_file(h.p("etc/app/token")).unwrap();
    std::fs::write(h.p("etc/app/token"), "planted").unwrap();
    check("planted file", &good, &["secret 'token'", "regular file"]);
    std::fs::remove_file(h.p("etc/app/token")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", h.p("etc/app/token")).unwrap();
    check("planted symlink", &good, &["secret 'token'", "/etc/shadow"]);
    std::fs::remove_file(h.p("etc/app/token")).unwrap();

    // And the good manifest still installs afterwards.
    h.install_ok(&good);
    assert_eq!(h.link_target(), h.p("run/secrets.d/2"));
}

#[test]
fn disk_full_on_a_tiny_tmpfs_fails_cleanly() {
    let t = "disk_full_on_a_tiny_tmpfs_fails_cleanly";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    let mnt = h.p("run/secrets.d");
    std::fs::create_dir_all(&mnt).unwrap();
    common::run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0751", "none"])
            .arg(&mnt),
    );
    let small = "/var/lib/secrets/small.yaml";
    h.sops_file(small, "yaml", "a: small\n");
    let big = "/var/lib/secrets/big.yaml";
    h.sops_file(
        big,
        "yaml",
        &format!("a: small\nb: {}\n", "x".repeat(100_000)),
    );
    let mut m = manifest(
        vec![secret("a", "a", small, "yaml", json!({}))],
        vec![],
        json!({}),
    );
    m["useTmpfs"] = json!(true);
    h.install_ok(&h.manifest("small.json", &m));
    m["secrets"] = json!([
        secret("a", "a", big, "yaml", json!({})),
        secret("b", "b", big, "yaml", json!({}))
    ]);
    let out = h.install(&h.manifest("big.json", &m));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("secret 'b'") && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(h.link_target(), h.p("run/secrets.d/1"));
    assert_eq!(h.read("run/secrets/a"), b"small");
    assert_eq!(
        h.mount_entries(),
        vec!["1"],
        "the half-written generation is removed"
    );
    assert_eq!(fs_type(&mnt), "tmpfs");
}

/// kill -9 at random points: `/run/secrets` always resolves to one complete generation.
#[test]
fn crash_consistency_under_kill_9() {
    let t = "crash_consistency_under_kill_9";
    if !require_root(t) || !tools(t) {
        return;
    }
    use rand::Rng;
    let user = TestUser::create("clfk", &[]);
    let h = Host::new();
    let versions = ["v1", "v2"];
    // Enough secrets that writing a generation takes a real share of a run, so random kills land
    // inside the write phase on a fast idle machine too, not only under load.
    const N: usize = 48;
    let value = |v: &str, k: usize| format!("{v}-{k}-{}", "s".repeat(4096));
    let mut manifests = Vec::new();
    for v in versions {
        let file = format!("/var/lib/secrets/{v}.yaml");
        let body: String = (0..N).map(|k| format!("k{k}: {}\n", value(v, k))).collect();
        h.sops_file(&file, "yaml", &body);
        let secrets: Vec<Value> = (0..N)
            .map(|k| {
                let owner = if k % 2 == 0 {
                    json!({"owner": user.name, "group": user.name, "mode": "0440"})
                } else {
                    json!({"uid": 4242, "gid": 4343})
                };
                secret(
                    &format!("d{}/s{k}", k % 3),
                    &format!("k{k}"),
                    &file,
                    "yaml",
                    owner,
                )
            })
            .collect();
        let mut m = manifest(secrets, vec![], json!({}));
        m["keepGenerations"] = json!(2);
        manifests.push(h.manifest(&format!("{v}.json"), &m));
    }
    let started = Instant::now();
    h.install_ok(&manifests[0]);
    let full = started.elapsed();

    let verify = |trial: usize| {
        let target = h.link_target();
        let gen_name = target.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            gen_name.parse::<u64>().is_ok(),
            "trial {trial}: link points to {}",
            target.display()
        );
        let first = h.read("run/secrets/d0/s0");
        let v = if first.starts_with(b"v1-") {
            "v1"
        } else {
            "v2"
        };
        for k in 0..N {
            let rel = format!("run/secrets/d{}/s{k}", k % 3);
            assert_eq!(
                h.read(&rel),
                value(v, k).as_bytes(),
                "trial {trial}: {rel} incomplete or mixed"
            );
            let (uid, gid, mode) = owner_of(&h.p(&rel));
            if k % 2 == 0 {
                assert_eq!(
                    (uid, gid, mode),
                    (user.uid, user.gid, 0o440),
                    "trial {trial}: {rel}"
                );
            } else {
                assert_eq!(
                    (uid, gid, mode),
                    (4242, 4343, 0o400),
                    "trial {trial}: {rel}"
                );
            }
        }
    };
    let mut rng = rand::thread_rng();
    let (mut killed, mut completed, mut mid_write) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    for trial in 0..200 {
        assert!(
            Instant::now() < deadline,
            "crash trials too slow ({trial} done)"
        );
        let mut child = h
            .cmd(&manifests[trial % 2])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Half the kills anywhere in a run, half in its second half where the files are written.
        let full_us = full.as_micros() as u64;
        let wait = if trial % 4 < 2 {
            rng.gen_range(0..=full_us * 5 / 4)
        } else {
            rng.gen_range(full_us / 2..=full_us * 21 / 20)
        };
        std::thread::sleep(Duration::from_micros(wait));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1
        } else {
            killed += 1
        }
        if h.mount_entries().iter().any(|e| e.starts_with(".tmp-")) {
            mid_write += 1;
        }
        verify(trial);
    }
    eprintln!(
        "crash trials: {killed} killed ({mid_write} while writing a generation), {completed} completed; full run {full:?}"
    );
    assert!(
        mid_write > 0,
        "no kill landed while a generation was being written"
    );
    assert!(
        killed > 20,
        "kills should land mid-run often ({killed} of 200)"
    );
    // A normal run afterwards cleans every leftover.
    h.install_ok(&manifests[0]);
    assert!(
        h.mount_entries().iter().all(|e| e.parse::<u64>().is_ok()),
        "{:?}",
        h.mount_entries()
    );
}

#[test]
fn check_modes_need_no_key_and_report_problems() {
    let t = "check_modes_need_no_key_and_report_problems";
    if !tools(t) {
        return;
    }
    let h = Host::new();
    let f = "/var/lib/secrets/s.yaml";
    h.sops_file(f, "yaml", "a:\n    b: x\nc: y\n");
    std::fs::write(h.p("/var/lib/secrets/plain.yaml"), "a: notsops\n").unwrap();
    let run = |m: &Value, mode: &str| {
        let path = h.manifest("check.json", m);
        let mut c = common::clawdlets(&h.home);
        c.args(["secrets", "install", "--check-mode", mode, "--manifest"])
            .arg(&path)
            .arg("--root")
            .arg(&h.root);
        common::run(&mut c)
    };
    let ok = manifest(
        vec![
            secret(
                "ab",
                "a/b",
                f,
                "yaml",
                json!({"owner": "user-that-exists-only-later"}),
            ),
            secret("c", "c", f, "yaml", json!({})),
        ],
        vec![],
        json!({}),
    );
    for mode in ["manifest", "sopsfile"] {
        let out = run(&ok, mode);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
    }
    let missing = manifest(
        vec![secret("ab", "a/zz", f, "yaml", json!({}))],
        vec![],
        json!({}),
    );
    assert!(
        run(&missing, "manifest").status.success(),
        "manifest mode reads no sops file"
    );
    let out = run(&missing, "sopsfile");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("secret 'ab'") && stderr(&out).contains("a/zz"),
        "{}",
        stderr(&out)
    );
    let plain = manifest(
        vec![secret(
            "a",
            "a",
            "/var/lib/secrets/plain.yaml",
            "yaml",
            json!({}),
        )],
        vec![],
        json!({}),
    );
    let out = run(&plain, "sopsfile");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plaintext file is not a sops file: {}",
        stderr(&out)
    );
    let mut bad = ok.clone();
    bad["secrets"][0]["mode"] = json!("rw-r--r--");
    let out = run(&bad, "manifest");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("secret 'ab'") && stderr(&out).contains("octal"),
        "{}",
        stderr(&out)
    );
    let mut unknown = ok.clone();
    unknown["secrets"][0]["colour"] = json!("blue");
    let out = run(&unknown, "manifest");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
}

#[test]
fn needs_root_unless_sandboxed_and_runs_unprivileged_with_root_dir() {
    let t = "needs_root_unless_sandboxed_and_runs_unprivileged_with_root_dir";
    if !require_root(t) || !tools(t) || !require_tool(t, "setpriv") {
        return;
    }
    let user = TestUser::create("clfn", &[]);
    let h = Host::new();
    h.sops_file("/var/lib/secrets/s.yaml", "yaml", "a: x\n");
    let m = h.manifest(
        "m.json",
        &manifest(
            vec![secret(
                "a",
                "a",
                "/var/lib/secrets/s.yaml",
                "yaml",
                json!({"mode": "0440"}),
            )],
            vec![],
            json!({}),
        ),
    );
    common::run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(h.tmp.path()),
    );
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--clear-groups",
        ]);
        c.arg(common::bin())
            .args(["secrets", "install", "--manifest"])
            .arg(&m)
            .args(args);
        c.env("HOME", &h.home);
        common::run(&mut c)
    };
    let out = as_user(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must run as root") && stderr(&out).contains("--root"),
        "{}",
        stderr(&out)
    );
    let out = as_user(&["--root", h.root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        fs_type(&h.p("run/secrets.d")),
        "ramfs",
        "nothing is mounted without privileges"
    );
    assert_eq!(
        owner_of(&h.p("run/secrets.d/1/a")),
        (user.uid, user.gid, 0o440)
    );
    assert_eq!(h.read("run/secrets/a"), b"x");
}

#[test]
fn needed_for_users_manifest_installs_root_owned_in_its_own_mount() {
    let t = "needed_for_users_manifest_installs_root_owned_in_its_own_mount";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    let f = "/var/lib/secrets/users.yaml";
    h.sops_file(f, "yaml", "alice_hash: $6$salt$hash\n");
    let mut m = manifest(
        vec![secret(
            "alice_hash",
            "alice_hash",
            f,
            "yaml",
            json!({"path": "/run/secrets-for-users/alice_hash", "neededForUsers": true}),
        )],
        vec![],
        json!({}),
    );
    m["secretsMountPoint"] = json!("/run/secrets-for-users.d");
    m["symlinkPath"] = json!("/run/secrets-for-users");
    let path = h.manifest("manifest-for-users.json", &m);
    let mut c = h.cmd(&path);
    c.arg("--ignore-passwd");
    let out = common::run(&mut c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs_type(&h.p("run/secrets-for-users.d")), "ramfs");
    assert_eq!(
        std::fs::read_link(h.p("run/secrets-for-users")).unwrap(),
        h.p("run/secrets-for-users.d/1")
    );
    assert_eq!(
        owner_of(&h.p("run/secrets-for-users.d/1/alice_hash")),
        (0, 0, 0o400)
    );
    assert_eq!(owner_of(&h.p("run/secrets-for-users.d/1")), (0, 0, 0o751));
    assert_eq!(h.read("run/secrets-for-users/alice_hash"), b"$6$salt$hash");
    assert!(!h.p("run/secrets").exists());
}

#[test]
fn systemctl_mode_and_dry_activate() {
    let t = "systemctl_mode_and_dry_activate";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    let f = "/var/lib/secrets/s.yaml";
    h.sops_file(f, "yaml", "a: one\n");
    let m = h.manifest(
        "m.json",
        &manifest(
            vec![secret(
                "a",
                "a",
                f,
                "yaml",
                json!({"restartUnits": ["x.service"], "reloadUnits": ["y.service"]}),
            )],
            vec![],
            json!({}),
        ),
    );
    h.install_ok(&m);
    h.sops_file(f, "yaml", "a: two\n");
    let log = h.tmp.path().join("systemctl.log");
    let fake = h.tmp.path().join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Dry-activate: the dry lists only, nothing switched.
    let out = common::run(h.cmd(&m).env("NIXOS_ACTION", "dry-activate"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("would modify secret 'a'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(h.p("run/nixos/dry-activation-restart-list")).unwrap(),
        "x.service\n"
    );
    assert_eq!(
        std::fs::read_to_string(h.p("run/nixos/dry-activation-reload-list")).unwrap(),
        "y.service\n"
    );
    assert_eq!(h.link_target(), h.p("run/secrets.d/1"));
    assert_eq!(h.read("run/secrets/a"), b"one");

    // systemd mode: try-restart / try-reload-or-restart, no list files.
    let out = common::run(
        h.cmd(&m)
            .env("SOPS_RESTART_UNITS_VIA_SYSTEMCTL", "1")
            .env("CLAWDLETS_SYSTEMCTL", &fake),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "--no-block try-restart x.service\n--no-block try-reload-or-restart y.service\n"
    );
    assert!(!h.p("run/nixos/activation-restart-list").exists());
    assert_eq!(h.read("run/secrets/a"), b"two");
}

/// The host's ed25519 SSH key opens files encrypted to its native `ssh-ed25519` recipient (which
/// sops-nix cannot) and to its ssh-to-age X25519 recipient; `--generate-age-key` derives the key
/// file from it, so the recipient is the one `ssh-to-age` prints for the host key.
#[test]
fn ssh_host_key_native_and_converted_recipients_and_generated_age_key() {
    let t = "ssh_host_key_native_and_converted_recipients_and_generated_age_key";
    if !require_root(t) || !tools(t) || !require_tool(t, "ssh-keygen") {
        return;
    }
    let h = Host::new();
    let key = h.p("etc/ssh/ssh_host_ed25519_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    common::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
            .arg(&key),
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let native = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let converted = clawdlets::sops::ssh_ed25519_public_to_age(public.trim()).unwrap();
    encrypt(
        &h.home,
        &h.p("/var/lib/secrets/native.yaml"),
        "yaml",
        b"a: via-native-stanza\n",
        &[&native],
    );
    encrypt(
        &h.home,
        &h.p("/var/lib/secrets/conv.yaml"),
        "yaml",
        b"b: via-ssh-to-age\n",
        &[&converted],
    );
    let mut m = manifest(
        vec![
            secret("a", "a", "/var/lib/secrets/native.yaml", "yaml", json!({})),
            secret("b", "b", "/var/lib/secrets/conv.yaml", "yaml", json!({})),
        ],
        vec![],
        json!({}),
    );
    m["ageKeyFile"] = Value::Null;
    m["ageSshKeyPaths"] = json!(["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/absent_key"]);
    let out = h.install_ok(&h.manifest("ssh.json", &m));
    assert!(
        stderr(&out).contains(&converted),
        "keyImport logs the recipient: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("absent_key"),
        "a missing key is a warning: {}",
        stderr(&out)
    );
    assert_eq!(h.read("run/secrets/a"), b"via-native-stanza");
    assert_eq!(h.read("run/secrets/b"), b"via-ssh-to-age");

    // --generate-age-key: the missing key file is derived from the SSH host key.
    let generated = "/var/lib/sops-nix/generated.txt";
    m["ageKeyFile"] = json!(generated);
    m["ageSshKeyPaths"] = json!(["/etc/ssh/ssh_host_ed25519_key"]);
    let path = h.manifest("gen.json", &m);
    let out = common::run(h.cmd(&path).arg("--generate-age-key"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(h.p(generated)).unwrap();
    assert!(
        text.contains(&format!("# public key: {converted}")),
        "{text}"
    );
    assert_eq!(owner_of(&h.p(generated)).2, 0o600);
    // It is never overwritten.
    let out = common::run(h.cmd(&path).arg("--generate-age-key"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(h.p(generated)).unwrap(), text);

    // Without any usable key, the error says what was tried.
    m["ageKeyFile"] = Value::Null;
    m["ageSshKeyPaths"] = json!(["/etc/ssh/absent_key"]);
    let out = h.install(&h.manifest("none.json", &m));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no usable age key") && stderr(&out).contains("absent_key"),
        "{}",
        stderr(&out)
    );
}

/// dotenv and INI files (and `key: ""` on YAML) install as the whole decrypted file, exactly as
/// `sops -d` prints it; a map or list under a key is refused with the key's path.
#[test]
fn whole_file_formats_and_non_scalar_values() {
    let t = "whole_file_formats_and_non_scalar_values";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    h.sops_file("/var/lib/secrets/app.env", "dotenv", "A=1\nB=two words\n");
    h.sops_file(
        "/var/lib/secrets/app.ini",
        "ini",
        "[db]\nuser = app\npassword = pw\n",
    );
    h.sops_file(
        "/var/lib/secrets/s.yaml",
        "yaml",
        "m:\n    x: 1\nl:\n    - a\n",
    );
    let m = manifest(
        vec![
            secret(
                "env",
                "env",
                "/var/lib/secrets/app.env",
                "dotenv",
                json!({}),
            ),
            secret("ini", "ini", "/var/lib/secrets/app.ini", "ini", json!({})),
            secret("whole", "", "/var/lib/secrets/s.yaml", "yaml", json!({})),
        ],
        vec![],
        json!({}),
    );
    h.install_ok(&h.manifest("m.json", &m));
    let expect = |rel: &str, format: &str| {
        let mut c = common::sops(&h.home);
        c.env("SOPS_AGE_KEY_FILE", &h.key.path)
            .args(["-d", "--input-type", format, "--output-type", format])
            .arg(h.p(rel));
        common::run_ok(&mut c)
    };
    assert_eq!(
        h.read("run/secrets/env"),
        expect("/var/lib/secrets/app.env", "dotenv")
    );
    assert_eq!(
        h.read("run/secrets/ini"),
        expect("/var/lib/secrets/app.ini", "ini")
    );
    assert_eq!(
        h.read("run/secrets/whole"),
        expect("/var/lib/secrets/s.yaml", "yaml")
    );
    for (key, shape) in [("m", "a map"), ("l", "a list")] {
        let bad = manifest(
            vec![secret(
                "v",
                key,
                "/var/lib/secrets/s.yaml",
                "yaml",
                json!({}),
            )],
            vec![],
            json!({}),
        );
        let out = h.install(&h.manifest("bad.json", &bad));
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains(&format!("the value of key '{key}' is {shape}")),
            "{}",
            stderr(&out)
        );
    }
}

/// Two installers at once (activation and a manual run) are serialized by the lock on the
/// mount point: both succeed and the result is one complete generation.
#[test]
fn concurrent_installers_are_serialized() {
    let t = "concurrent_installers_are_serialized";
    if !require_root(t) || !tools(t) {
        return;
    }
    let h = Host::new();
    let f = "/var/lib/secrets/s.yaml";
    let body: String = (0..20).map(|k| format!("k{k}: value-{k}\n")).collect();
    h.sops_file(f, "yaml", &body);
    let secrets = (0..20)
        .map(|k| secret(&format!("s{k}"), &format!("k{k}"), f, "yaml", json!({})))
        .collect();
    let m = h.manifest("m.json", &manifest(secrets, vec![], json!({})));
    // Each run reports the generation it read as active and the one it wrote.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for round in 0..5 {
        let children: Vec<_> = (0..3)
            .map(|_| {
                h.cmd(&m)
                    .arg("--json")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            runs.push((n("previousGeneration"), n("generation")));
        }
        for k in 0..20 {
            assert_eq!(
                h.read(&format!("run/secrets/s{k}")),
                format!("value-{k}").as_bytes()
            );
        }
        assert_eq!(
            h.mount_entries().len(),
            1,
            "round {round}: {:?}",
            h.mount_entries()
        );
        // One ramfs, not two stacked by racing first runs (the lower one would hold secrets
        // nobody can see or clean up).
        assert_eq!(h.kernel_mounts_at("run/secrets.d"), 1, "round {round}");
    }
    // Serialized: every run saw the previous run's generation and wrote the next one.
    runs.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..15).map(|k| (k, k + 1)).collect();
    assert_eq!(runs, expected, "(previous, written) per run");
    assert_eq!(h.link_target(), h.p("run/secrets.d/15"));
}
