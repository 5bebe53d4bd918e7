//! Real system users and groups for tests, created with `useradd`/`groupadd` and removed on drop.
//! Names come from `unique_name`, so concurrent test runs never collide.

use std::process::Command;

/// A system user that exists for the life of the value.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates a system user (and its own primary group) without a home or login shell.
    /// Extra supplementary groups may be given.
    pub fn create(prefix: &str, groups: &[&str]) -> TestUser {
        let name = super::unique_name(prefix);
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if !groups.is_empty() {
            cmd.args(["--groups", &groups.join(",")]);
        }
        cmd.arg(&name);
        super::run_ok(&mut cmd);
        let uid = id_of(&name, "-u");
        let gid = id_of(&name, "-g");
        TestUser { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A system group that exists for the life of the value.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    pub fn create(prefix: &str) -> TestGroup {
        let name = super::unique_name(prefix);
        super::run_ok(Command::new("groupadd").args(["--system", &name]));
        let out = super::run_ok(Command::new("getent").args(["group", &name]));
        let line = String::from_utf8(out).expect("getent output");
        let gid = line
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid");
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

fn id_of(name: &str, flag: &str) -> u32 {
    let out = super::run_ok(Command::new("id").args([flag, name]));
    String::from_utf8(out)
        .expect("id output")
        .trim()
        .parse()
        .expect("numeric id")
}
