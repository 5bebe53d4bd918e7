//! Host checks against the real things they judge: real `sshd -T`, real ramfs/tmpfs mounts
//! with real users, a real Unix socket, a fake Nix store, the live ruleset in a namespace, and
//! the golden JSON report.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::rulesets;
use crate::common::netns::{self, Netns};
use crate::common::users::{TestGroup, TestUser};
use crate::common::{self, require_root, require_tool};

fn verify(root: &Path, args: &[&str]) -> (i32, Value) {
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = common::clawdlets(&home);
    cmd.args(["verify", "--json", "--root"])
        .arg(root)
        .args(args);
    let out = common::run(&mut cmd);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {report}"))
}

fn status(report: &Value, id: &str) -> String {
    check(report, id)["status"].as_str().unwrap().to_string()
}

fn evidence(report: &Value, id: &str) -> String {
    check(report, id)["evidence"].to_string()
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Copies the real passwd/group into the sandbox so names resolve like on the host.
fn copy_accounts(root: &Path) {
    for f in ["passwd", "group"] {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy(Path::new("/etc").join(f), root.join("etc").join(f)).unwrap();
    }
}

fn sandbox() -> tempfile::TempDir {
    // Under the target dir (a disk filesystem), not /tmp: "on disk" must mean on disk.
    tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

#[test]
fn sshd_effective_config_good_and_bad() {
    if !require_root("sshd_effective_config_good_and_bad")
        || !require_tool("sshd_effective_config_good_and_bad", "sshd")
    {
        return;
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
    let root = sandbox();
    let key = root.path().join("hostkey");
    common::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key),
    );
    let good = format!(
        "HostKey {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\nX11Forwarding no\nAllowAgentForwarding no\nMaxAuthTries 3\n",
        key.display()
    );
    let cfg = root.path().join("etc/ssh/sshd_config");
    write(&cfg, &good);
    let (code, r) = verify(root.path(), &["--only", "sshd.config"]);
    assert_eq!(status(&r, "sshd.config"), "pass", "{r}");
    assert_eq!(code, 0);

    // A Match block that re-enables passwords for public addresses only.
    write(
        &cfg,
        &format!("{good}Match Address 198.51.100.0/24\n  PasswordAuthentication yes\n"),
    );
    let (code, r) = verify(root.path(), &["--only", "sshd.config"]);
    assert_eq!(status(&r, "sshd.config"), "fail", "{r}");
    let ev = evidence(&r, "sshd.config");
    assert!(
        ev.contains("from 198.51.100.23: passwordauthentication yes"),
        "{ev}"
    );
    assert!(ev.contains("default: password/kbd-interactive off"), "{ev}");
    assert_eq!(code, 1);

    // Plain bad settings.
    write(
        &cfg,
        &good
            .replace("X11Forwarding no", "X11Forwarding yes")
            .replace("MaxAuthTries 3", "MaxAuthTries 6")
            .replace("PermitRootLogin prohibit-password", "PermitRootLogin yes"),
    );
    let (_, r) = verify(root.path(), &["--only", "sshd.config"]);
    let ev = evidence(&r, "sshd.config");
    assert_eq!(status(&r, "sshd.config"), "fail");
    for want in ["x11forwarding yes", "maxauthtries 6", "permitrootlogin yes"] {
        assert!(ev.contains(want), "{want} not in {ev}");
    }
}

struct SecretsFixture {
    root: tempfile::TempDir,
    mp: PathBuf,
    bot: TestUser,
    group: TestGroup,
}

impl Drop for SecretsFixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mp).output();
    }
}

/// A sandbox with secrets installed like `secrets install` does: a ramfs/tmpfs (or a plain
/// directory when `fs` is None) at /run/secrets.d, generation 1, /run/secrets -> it.
fn secrets_fixture(fs: Option<(&str, &str)>) -> SecretsFixture {
    let root = sandbox();
    let group = TestGroup::create("vg");
    let bot = TestUser::create("vb", &[&group.name]);
    copy_accounts(root.path());
    let mp = root.path().join("run/secrets.d");
    std::fs::create_dir_all(&mp).unwrap();
    if let Some((fstype, opts)) = fs {
        common::run_ok(
            Command::new("mount")
                .args(["-t", fstype, "-o", opts, "none"])
                .arg(&mp),
        );
    }
    let generation = mp.join("1");
    std::fs::create_dir_all(&generation).unwrap();
    std::fs::set_permissions(&generation, std::fs::Permissions::from_mode(0o751)).unwrap();
    symlink("/run/secrets.d/1", root.path().join("run/secrets")).unwrap();
    for (name, owner, grp, mode, value) in [
        (
            "discord_token",
            bot.uid,
            bot.gid,
            0o400,
            "dt-8f1e3c9a77b24c0e9d51",
        ),
        ("shared_cfg", 0, group.gid, 0o440, "shared-41f0c2a9b8e3d7"),
        ("public_note", 0, 0, 0o444, "not-secret-but-declared"),
    ] {
        let p = generation.join(name);
        std::fs::write(&p, value).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(grp)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // A rendered template, where `secrets install` puts it.
    let rendered = generation.join("rendered/app.env");
    std::fs::create_dir_all(rendered.parent().unwrap()).unwrap();
    std::fs::write(&rendered, "TOKEN=dt-8f1e3c9a77b24c0e9d51\n").unwrap();
    std::os::unix::fs::chown(&rendered, Some(bot.uid), Some(bot.gid)).unwrap();
    std::fs::set_permissions(&rendered, std::fs::Permissions::from_mode(0o440)).unwrap();
    let manifest = serde_json::json!({
        "secrets": [
            {"name": "discord_token", "key": "discord_token", "path": "/run/secrets/discord_token", "owner": bot.name, "group": bot.name, "mode": "0400", "sopsFile": "/nix/store/x-s.yaml", "format": "yaml"},
            {"name": "shared_cfg", "key": "", "path": "/run/secrets/shared_cfg", "owner": "root", "group": group.name, "mode": "0440", "sopsFile": "/nix/store/x-s.yaml", "format": "binary"},
            {"name": "public_note", "path": "/run/secrets/public_note", "owner": null, "uid": 0, "group": null, "gid": 0, "mode": "0444"}
        ],
        "templates": [
            {"name": "app.env", "content": "TOKEN=<SOPS:0f:PLACEHOLDER>", "path": "/run/secrets/rendered/app.env", "owner": bot.name, "group": bot.name, "mode": "0440"}
        ], "secretsMountPoint": "/run/secrets.d", "symlinkPath": "/run/secrets", "keepGenerations": 1,
        "ageKeyFile": "/var/lib/sops-nix/key.txt", "useTmpfs": false, "userMode": false
    });
    write(
        &root.path().join("etc/clawdlets/manifest.json"),
        &manifest.to_string(),
    );
    write(
        &root.path().join("etc/clawdlets/verify.json"),
        r#"{"secretsManifest": "/etc/clawdlets/manifest.json"}"#,
    );
    SecretsFixture {
        root,
        mp,
        bot,
        group,
    }
}

#[test]
fn secrets_mount_on_ramfs_passes_and_each_violation_is_detected() {
    if !require_root("secrets_mount_on_ramfs_passes_and_each_violation_is_detected") {
        return;
    }
    let fx = secrets_fixture(Some(("ramfs", "nodev,nosuid,noexec,mode=0751")));
    let root = fx.root.path();
    let (code, r) = verify(root, &["--only", "secrets.mount"]);
    assert_eq!(status(&r, "secrets.mount"), "pass", "{r}");
    assert!(evidence(&r, "secrets.mount").contains("is ramfs (statfs)"));
    assert_eq!(code, 0);
    assert!(fx.group.gid > 0);

    let token = fx.mp.join("1/discord_token");
    // Planted world-readable secret.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o404)).unwrap();
    let (code, r) = verify(root, &["--only", "secrets.mount"]);
    assert_eq!(status(&r, "secrets.mount"), "fail");
    assert!(
        evidence(&r, "secrets.mount").contains("discord_token is world-readable"),
        "{r}"
    );
    assert_eq!(code, 1);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o400)).unwrap();

    // Wrong owner.
    std::os::unix::fs::chown(&token, Some(0), None).unwrap();
    let (_, r) = verify(root, &["--only", "secrets.mount"]);
    let ev = evidence(&r, "secrets.mount");
    assert!(ev.contains("discord_token owner is root"), "{ev}");
    assert!(ev.contains(&fx.bot.name), "{ev}");
    std::os::unix::fs::chown(&token, Some(fx.bot.uid), None).unwrap();

    // A rendered template is held to its own declaration too.
    let rendered = fx.mp.join("1/rendered/app.env");
    std::fs::set_permissions(&rendered, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, r) = verify(root, &["--only", "secrets.mount"]);
    assert!(
        evidence(&r, "secrets.mount").contains("rendered/app.env mode is 0600 (manifest 0440)"),
        "{r}"
    );
    assert_eq!(code, 1);
    std::fs::set_permissions(&rendered, std::fs::Permissions::from_mode(0o440)).unwrap();

    // A stray world-readable file nobody declared.
    std::fs::write(fx.mp.join("1/leftover"), "x").unwrap();
    std::fs::set_permissions(
        fx.mp.join("1/leftover"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (_, r) = verify(root, &["--only", "secrets.mount"]);
    assert!(
        evidence(&r, "secrets.mount").contains("/run/secrets.d/1/leftover is world-readable"),
        "{r}"
    );
    std::fs::remove_file(fx.mp.join("1/leftover")).unwrap();

    // The symlink pointing elsewhere.
    std::fs::remove_file(root.join("run/secrets")).unwrap();
    symlink("/var/lib/elsewhere", root.join("run/secrets")).unwrap();
    let (_, r) = verify(root, &["--only", "secrets.mount"]);
    assert!(
        evidence(&r, "secrets.mount").contains("points outside /run/secrets.d"),
        "{r}"
    );
}

#[test]
fn secrets_on_disk_or_weak_tmpfs_fail() {
    if !require_root("secrets_on_disk_or_weak_tmpfs_fail") {
        return;
    }
    // Not mounted at all: the files live on the disk filesystem of the target dir.
    let fx = secrets_fixture(None);
    let (code, r) = verify(fx.root.path(), &["--only", "secrets.mount"]);
    let ev = evidence(&r, "secrets.mount");
    assert_eq!(status(&r, "secrets.mount"), "fail", "{r}");
    assert!(ev.contains("secrets are on persistent storage"), "{ev}");
    assert!(
        ev.contains("discord_token is on ext4 (on disk)") || ev.contains("(on disk)"),
        "{ev}"
    );
    assert!(ev.contains("is not a mount point"), "{ev}");
    assert_eq!(code, 1);

    // tmpfs is fine as a filesystem, but without noexec the mount is weaker than required.
    let fx = secrets_fixture(Some(("tmpfs", "nodev,nosuid,mode=0751")));
    let (_, r) = verify(fx.root.path(), &["--only", "secrets.mount"]);
    let ev = evidence(&r, "secrets.mount");
    assert!(ev.contains("lacks noexec"), "{ev}");
    assert!(!ev.contains("persistent storage"), "{ev}");
}

#[test]
fn secret_value_in_store_closure_is_found_but_never_printed() {
    if !require_root("secret_value_in_store_closure_is_found_but_never_printed") {
        return;
    }
    let fx = secrets_fixture(Some(("ramfs", "nodev,nosuid,noexec,mode=0751")));
    let root = fx.root.path();
    write(
        &root.join("nix/store/aaaa-unit/etc/bot.service"),
        "[Service]\nExecStart=/bin/bot\n",
    );
    write(
        &root.join("nix/store/bbbb-etc/etc/app.conf"),
        "listen = 1\n",
    );
    let (code, r) = verify(root, &["--only", "secrets.store"]);
    assert_eq!(status(&r, "secrets.store"), "pass", "{r}");
    assert_eq!(code, 0);

    // A second run trusts the store paths it already read (they are immutable).
    let (_, r) = verify(root, &["--only", "secrets.store"]);
    assert!(
        evidence(&r, "secrets.store").contains("2 store paths known clean"),
        "{r}"
    );

    // Rotating a secret invalidates what the cache knows: a new value that an already-scanned
    // path happens to contain is found.
    let shared = fx.mp.join("1/shared_cfg");
    std::fs::write(&shared, "ExecStart=/bin/bot").unwrap();
    let (_, r) = verify(root, &["--only", "secrets.store"]);
    assert_eq!(status(&r, "secrets.store"), "fail", "{r}");
    assert!(
        evidence(&r, "secrets.store").contains("secret shared_cfg appears in"),
        "{r}"
    );
    std::fs::write(&shared, "shared-41f0c2a9b8e3d7").unwrap();

    // A new generation: a Nix string interpolated the token into a config file in the store.
    write(
        &root.join("nix/store/cccc-etc/etc/app.conf"),
        "listen = 1\ntoken = dt-8f1e3c9a77b24c0e9d51\n",
    );
    let home = root.join("home");
    let out = common::run(
        common::clawdlets(&home)
            .args(["verify", "--root"])
            .arg(root)
            .args(["--only", "secrets.store"]),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("dt-8f1e3c9a77b24c0e9d51"),
        "the secret value leaked into the output:\n{text}"
    );
    let (code, r) = verify(root, &["--only", "secrets.store"]);
    assert_eq!(status(&r, "secrets.store"), "fail");
    assert!(
        evidence(&r, "secrets.store").contains("secret discord_token appears in"),
        "{r}"
    );
    assert!(
        evidence(&r, "secrets.store").contains("cccc-etc/etc/app.conf"),
        "{r}"
    );
    assert!(!r.to_string().contains("dt-8f1e3c9a77b24c0e9d51"));
    assert_eq!(code, 1);
}

#[test]
fn orchestrator_permissions_with_a_real_socket() {
    if !require_root("orchestrator_permissions_with_a_real_socket") {
        return;
    }
    let root = sandbox();
    let group = TestGroup::create("vo");
    let user = TestUser::create("vs", &[]);
    copy_accounts(root.path());
    let run = root.path().join("run/clf");
    let state = root.path().join("var/lib/clf/orchestrator");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    for p in [
        root.path().join("var"),
        root.path().join("var/lib"),
        root.path().join("var/lib/clf"),
        root.path().join("run"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = run.join("orchestrator.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let db = state.join("state.sqlite");
    std::fs::write(&db, b"SQLite format 3\0").unwrap();
    for (p, mode, gid) in [
        (&run, 0o750, group.gid),
        (&sock, 0o660, group.gid),
        (&state, 0o700, user.gid),
        (&db, 0o600, user.gid),
    ] {
        std::os::unix::fs::chown(p, Some(user.uid), Some(gid)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cfg = format!(
        r#"{{"orchestrator": {{"user": "{}", "group": "{}"}}}}"#,
        user.name, group.name
    );
    write(&root.path().join("etc/clawdlets/verify.json"), &cfg);
    let (code, r) = verify(root.path(), &["--only", "orchestrator.perms"]);
    assert_eq!(status(&r, "orchestrator.perms"), "pass", "{r}");
    assert_eq!(code, 0);

    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, r) = verify(root.path(), &["--only", "orchestrator.perms"]);
    let ev = evidence(&r, "orchestrator.perms");
    assert!(ev.contains("orchestrator.sock is 0666"), "{ev}");
    assert!(ev.contains("state.sqlite is 0644"), "{ev}");
    assert_eq!(code, 1);
}

#[test]
fn ssh_firewall_on_the_live_ruleset_of_a_namespace() {
    if !netns::available("ssh_firewall_on_the_live_ruleset_of_a_namespace") {
        return;
    }
    let ns = Netns::create("vf");
    let peer = Netns::create("vq");
    netns::link(&ns, "eth0", "203.0.113.1/24", &peer, "p0", "203.0.113.2/24");
    netns::link(
        &ns,
        "tailscale0",
        "100.64.0.1/24",
        &peer,
        "p1",
        "100.64.0.2/24",
    );
    let root = sandbox();
    write(
        &root.path().join("etc/clawdlets/verify.json"),
        r#"{"sshExposure": "tailnet", "tailnet": "tailscale", "egress": "smtp-only"}"#,
    );
    let run = |ruleset: &str| -> Value {
        assert!(ns.load_nft(ruleset).status.success());
        // --root only for the config: interfaces and the ruleset are the namespace's own.
        let out = common::run(
            ns.cmd(common::bin().to_str().unwrap())
                .args(["verify", "--json", "--config"])
                .arg(root.path().join("etc/clawdlets/verify.json"))
                .args([
                    "--only",
                    "ssh.firewall",
                    "ssh.tailnet-only",
                    "egress.smtp",
                    "tailnet.udp",
                ]),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = run(&rulesets::nixos("tailnet", "smtp-only", true, false));
    for id in [
        "ssh.firewall",
        "ssh.tailnet-only",
        "egress.smtp",
        "tailnet.udp",
    ] {
        assert_eq!(status(&r, id), "pass", "{id}: {r}");
    }
    // Bootstrap firewall (22 open to all) judged against a tailnet policy.
    let r = run(&rulesets::nixos("bootstrap", "none", true, false));
    assert_eq!(status(&r, "ssh.firewall"), "fail");
    assert!(
        evidence(&r, "ssh.firewall").contains("tcp/22 from 198.51.100.23 on eth0: accepted"),
        "{r}"
    );
    assert_eq!(status(&r, "ssh.tailnet-only"), "fail");
    assert_eq!(status(&r, "egress.smtp"), "fail");
    // A construct outside the model on the path makes it inconclusive, never a pass.
    let r = run(
        "table inet x {\n chain i {\n type filter hook input priority 0; policy drop;\n tcp dport 22 limit rate 5/second accept\n }\n}\n",
    );
    assert_eq!(status(&r, "ssh.firewall"), "inconclusive", "{r}");
    assert!(evidence(&r, "ssh.firewall").contains("limit"), "{r}");
}

#[test]
fn golden_json_report() {
    let root = sandbox();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/verify");
    write(
        &root.path().join("etc/clawdlets/verify.json"),
        r#"{"sshExposure": "tailnet", "tailnet": "tailscale", "egress": "smtp-only"}"#,
    );
    let ruleset = fixtures.join("nixos-tailnet.nft.json");
    let (code, mut r) = verify(
        root.path(),
        &[
            "--ruleset",
            ruleset.to_str().unwrap(),
            "--only",
            "ssh.firewall",
            "ssh.tailnet-only",
            "egress.smtp",
            "tailnet.udp",
            "egress.proxy",
            "orchestrator.perms",
        ],
    );
    assert_eq!(code, 0, "{r}");
    r["durationMs"] = 0.into();
    r["target"] = "HOST".into();
    for c in r["checks"].as_array_mut().unwrap() {
        c["durationMs"] = 0.into();
    }
    let text = serde_json::to_string_pretty(&r).unwrap() + "\n";
    let golden = fixtures.join("golden-report.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        text, want,
        "verify JSON changed; if intended, rerun with UPDATE_GOLDEN=1 and update docs/verify.md"
    );
    // The schema file describes this document.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/verify.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for key in schema["required"].as_array().unwrap() {
        assert!(
            r.get(key.as_str().unwrap()).is_some(),
            "report lacks required {key}"
        );
    }
    for key in schema["$defs"]["check"]["required"].as_array().unwrap() {
        assert!(
            r["checks"][0].get(key.as_str().unwrap()).is_some(),
            "check lacks required {key}"
        );
    }
}

#[test]
fn remote_ssh_open_closed_filtered() {
    if !netns::available("remote_ssh_open_closed_filtered") {
        return;
    }
    let host = Netns::create("vr");
    let op = Netns::create("vo");
    netns::link(
        &host,
        "eth0",
        "203.0.113.1/24",
        &op,
        "eth0",
        "203.0.113.2/24",
    );
    let remote_in = |policy: &str, repo: Option<&std::path::Path>| -> (i32, Value) {
        let dir = sandbox();
        let cfg = dir.path().join("verify.json");
        std::fs::write(&cfg, format!(r#"{{"sshExposure": "{policy}"}}"#)).unwrap();
        let mut cmd = op.cmd(common::bin().to_str().unwrap());
        cmd.args(["verify", "--json", "--remote", "203.0.113.1", "--config"])
            .arg(&cfg)
            .env("HOME", dir.path())
            // No fleet repository in /tmp or above it: hygiene is skipped unless --repo.
            .current_dir(std::env::temp_dir());
        if let Some(repo) = repo {
            cmd.arg("--repo").arg(repo);
        }
        let out = common::run(&mut cmd);
        (
            out.status.code().unwrap(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    };
    let remote = |policy: &str| remote_in(policy, None);
    // Closed: nothing listens, the kernel answers with a RST.
    let (code, r) = remote("tailnet");
    assert_eq!(r["mode"], "remote");
    assert!(evidence(&r, "remote.ssh").contains("(Closed)"), "{r}");
    assert_eq!(status(&r, "remote.ssh"), "pass");
    assert_eq!(status(&r, "remote.secrets-hygiene"), "skip", "{r}");
    assert_eq!(code, 0);
    // This project's own repository tracks a throwaway private key (a test fixture), which the
    // in-process `secrets check` must report: the hygiene part really runs.
    let project = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let (code, r) = remote_in("tailnet", Some(project));
    assert_eq!(status(&r, "remote.secrets-hygiene"), "fail", "{r}");
    assert!(
        evidence(&r, "remote.secrets-hygiene").contains("[tracked-private-key]"),
        "{r}"
    );
    assert_eq!(code, 1);
    // Open: a listener on 22 — a failure for a tailnet-only host, fine for bootstrap.
    let _l = probe_listener(&host);
    let (code, r) = remote("tailnet");
    assert!(evidence(&r, "remote.ssh").contains("(Open)"), "{r}");
    assert_eq!(status(&r, "remote.ssh"), "fail");
    assert_eq!(code, 1);
    let (_, r) = remote("bootstrap");
    assert_eq!(status(&r, "remote.ssh"), "pass");
    // Filtered: a firewall drops the SYN.
    assert!(host.load_nft("table inet f {\n chain i {\n type filter hook input priority 0; policy accept;\n tcp dport 22 drop\n }\n}\n").status.success());
    let (_, r) = remote("tailnet");
    assert!(evidence(&r, "remote.ssh").contains("(Filtered)"), "{r}");
}

fn probe_listener(ns: &Netns) -> crate::common::probe::Listeners {
    crate::common::probe::Listeners::start(ns, &[22])
}

#[test]
fn units_sandbox_scores_real_unit_files_offline() {
    if !require_tool(
        "units_sandbox_scores_real_unit_files_offline",
        "systemd-analyze",
    ) {
        return;
    }
    let root = sandbox();
    let units = root.path().join("etc/systemd/system");
    write(
        &units.join("bot-open.service"),
        "[Service]\nExecStart=/bin/true\n",
    );
    let hardened = "[Service]\nExecStart=/bin/true\nDynamicUser=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n\
        PrivateDevices=yes\nNoNewPrivileges=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\n\
        ProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\nRestrictAddressFamilies=AF_UNIX\nPrivateNetwork=yes\n\
        CapabilityBoundingSet=\nSystemCallFilter=@system-service\nSystemCallArchitectures=native\nRestrictNamespaces=yes\n\
        LockPersonality=yes\nMemoryDenyWriteExecute=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\nPrivateUsers=yes\nUMask=0077\n\
        IPAddressDeny=any\nProtectProc=invisible\nProcSubset=pid\nRemoveIPC=yes\nDevicePolicy=closed\nKeyringMode=private\n";
    write(&units.join("bot-tight.service"), hardened);
    let cfg = root.path().join("etc/clawdlets/verify.json");
    write(
        &cfg,
        r#"{"botUnits": ["bot-tight.service"], "securityThreshold": 3.0}"#,
    );
    let (code, r) = verify(root.path(), &["--only", "units.sandbox"]);
    assert_eq!(status(&r, "units.sandbox"), "pass", "{r}");
    assert!(
        evidence(&r, "units.sandbox").contains("bot-tight.service: exposure"),
        "{r}"
    );
    assert_eq!(code, 0);
    write(
        &cfg,
        r#"{"botUnits": ["bot-tight.service", "bot-open.service", "bot-missing.service"], "securityThreshold": 3.0}"#,
    );
    let (code, r) = verify(root.path(), &["--only", "units.sandbox"]);
    let ev = evidence(&r, "units.sandbox");
    assert_eq!(status(&r, "units.sandbox"), "fail", "{r}");
    assert!(ev.contains("bot-open.service: exposure 9."), "{ev}");
    assert!(ev.contains("bot-missing.service: not assessed"), "{ev}");
    assert_eq!(code, 1);
}
