//! SOPS harness: throwaway age keys made by the real `age-keygen`, `.sops.yaml` writers, and
//! runners for the real `sops` and for `clawdlets sops` with a clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{clawdlets, run, run_ok, sops};

/// A throwaway age identity made by the real `age-keygen`.
pub struct AgeKey {
    pub file: PathBuf,
    pub recipient: String,
}

/// Creates `<dir>/<name>.txt` with `age-keygen` and returns it with its recipient.
pub fn age_keygen(dir: &Path, name: &str) -> AgeKey {
    let file = dir.join(format!("{name}.txt"));
    run_ok(Command::new("age-keygen").arg("-o").arg(&file));
    let out = run_ok(Command::new("age-keygen").arg("-y").arg(&file));
    AgeKey {
        file,
        recipient: String::from_utf8(out).unwrap().trim().to_string(),
    }
}

/// True when the real sops and age tools are installed; otherwise prints why the test skips.
pub fn have_tools(test: &str) -> bool {
    super::require_tool(test, "sops") && super::require_tool(test, "age-keygen")
}

/// The real `sops` with `SOPS_AGE_KEY_FILE` set, run in `dir`.
pub fn sops_with_key(dir: &Path, key: &Path) -> Command {
    let mut c = sops(dir);
    c.env("SOPS_AGE_KEY_FILE", key).current_dir(dir);
    c
}

/// `clawdlets sops …` run in `dir` with a clean environment.
pub fn ours(dir: &Path) -> Command {
    let mut c = clawdlets(dir);
    c.arg("sops").current_dir(dir);
    c
}

/// Runs a command that must fail; returns its output.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} unexpectedly succeeded\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Writes `<dir>/.sops.yaml` with the given text.
pub fn write_sops_yaml(dir: &Path, text: &str) {
    std::fs::write(dir.join(".sops.yaml"), text).unwrap();
}
