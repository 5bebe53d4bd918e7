//! The shared test harness: the built binary, temporary roots, real users and groups, network
//! namespaces with veth pairs, and the real `sops`/`age` binaries. Tests that need root or a tool
//! that is missing call `require_*`, which prints why the test is skipped and returns false.

#![allow(dead_code)]

pub mod netns;
pub mod nsdns;
pub mod orchestrator;
pub mod probe;
pub mod sops;
pub mod sops_fixtures;
pub mod terminal;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Path to the `clawdlets` binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clawdlets"))
}

/// A `Command` for the built binary with a clean, predictable environment: no inherited SOPS or
/// age variables and a HOME inside `home`, so a developer's own keys never leak into a test.
pub fn clawdlets(home: &Path) -> Command {
    let mut cmd = Command::new(bin());
    scrub_env(&mut cmd, home);
    cmd
}

/// The real `sops` binary with the same clean environment.
pub fn sops(home: &Path) -> Command {
    let mut cmd = Command::new("sops");
    scrub_env(&mut cmd, home);
    cmd.env("SOPS_DISABLE_VERSION_CHECK", "1");
    cmd
}

fn scrub_env(cmd: &mut Command, home: &Path) {
    for (key, _) in std::env::vars_os() {
        let key_s = key.to_string_lossy();
        if key_s.starts_with("SOPS_") || key_s.starts_with("AGE_") || key_s == "XDG_CONFIG_HOME" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", home);
    cmd.env_remove("RUST_LOG");
}

/// Runs a command and returns its output, panicking with both streams if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// True when running as root (CI runs as root). Otherwise prints why the test is skipped.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!(
        "SKIP {test}: needs root (real mounts, users or network namespaces); CI runs as root"
    );
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// True when `tool` is on PATH. Otherwise prints why the test is skipped.
pub fn require_tool(test: &str, tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    eprintln!("SKIP {test}: `{tool}` is not installed (scripts/install-test-deps.sh installs it)");
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A name unique to this test process and call, for users, groups and namespaces that live
/// outside the temp dir. Short enough for interface and user names (≤ 15 chars with `prefix` ≤ 5).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() & 0xffff)
}

/// A fresh temporary directory that is removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clawdlets-test-")
        .tempdir()
        .expect("create temp dir")
}
