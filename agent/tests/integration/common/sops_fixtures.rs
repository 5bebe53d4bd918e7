//! Encrypted fixtures made at test time with the real `sops` and `age-keygen` binaries: throwaway
//! age keys in a temp dir, files encrypted for chosen recipients, and a mount guard that detaches
//! whatever a test mounted under its temp root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway age identity written by `age-keygen`.
pub struct AgeKey {
    pub path: PathBuf,
    pub recipient: String,
}

impl AgeKey {
    /// Runs `age-keygen -o <dir>/<name>` and reads the public key back.
    pub fn generate(dir: &Path, name: &str) -> AgeKey {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        super::run_ok(Command::new("age-keygen").arg("-o").arg(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("age-keygen writes the public key")
            .to_string();
        AgeKey { path, recipient }
    }
}

/// Writes `plaintext` to `out` and encrypts it in place with the real `sops` for `recipients`
/// (age X25519 `age1...` or `ssh-ed25519 ...` lines). `format` is yaml|json|dotenv|ini|binary.
pub fn encrypt(home: &Path, out: &Path, format: &str, plaintext: &[u8], recipients: &[&str]) {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(out, plaintext).unwrap();
    super::run_ok(
        super::sops(home)
            .args([
                "--encrypt",
                "--in-place",
                "--input-type",
                format,
                "--output-type",
                format,
                "--age",
            ])
            .arg(recipients.join(","))
            .arg(out),
    );
}

/// Detaches (lazily unmounts) `path` on drop, so a failing test never leaves a mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..4 {
            if Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                break;
            }
        }
    }
}

/// The filesystem type name of `path` (`ramfs`, `tmpfs`...), from `stat -f`.
pub fn fs_type(path: &Path) -> String {
    let out = super::run_ok(Command::new("stat").args(["-f", "-c", "%T"]).arg(path));
    String::from_utf8(out).unwrap().trim().to_string()
}
