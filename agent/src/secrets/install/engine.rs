//! The seam between the installer and the SOPS engine: open each sops file once (decrypt with the
//! identities held in memory) and pick values out of it. A trait so that the install flow can be
//! unit-tested with an in-memory engine; the real one is `keys::SopsEngine` on `crate::sops`.

use std::path::Path;

use super::validate::Format;
use crate::secret::SecretBytes;

/// Why a file or a value could not be used. `kind` is the SOPS error kind (`mac-mismatch`,
/// `no-key`, `key-not-found`...); `detail` never contains a value.
#[derive(Debug, Clone)]
pub struct EngineError {
    pub kind: &'static str,
    pub detail: String,
}

/// A decrypted sops file.
pub trait Opened: Send {
    /// The whole decrypted document as `sops -d` prints it (binary: the raw bytes).
    fn whole(&self) -> Result<SecretBytes, EngineError>;
    /// The scalar at `key` (nested maps), rendered as text (int/float/bool too).
    fn value(&self, key: &[String]) -> Result<SecretBytes, EngineError>;
}

/// Decrypts and inspects sops files.
pub trait Engine: Sync {
    /// `--check-mode sopsfile`: the file parses as a sops file of `format` and has every key.
    /// Needs no private key.
    fn check(&self, path: &Path, format: Format, keys: &[&[String]]) -> Result<(), EngineError>;
    /// Reads, authenticates (MAC) and decrypts the file.
    fn open(&self, path: &Path, format: Format) -> Result<Box<dyn Opened>, EngineError>;
}

#[cfg(test)]
pub mod fake {
    //! An in-memory engine for unit tests: files are maps of `a/b` keys to values.
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct FakeEngine {
        pub files: BTreeMap<std::path::PathBuf, BTreeMap<String, String>>,
    }

    struct FakeOpened(BTreeMap<String, String>);

    impl Opened for FakeOpened {
        fn whole(&self) -> Result<SecretBytes, EngineError> {
            Ok(SecretBytes::new(
                self.0
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect::<String>()
                    .into_bytes(),
            ))
        }
        fn value(&self, key: &[String]) -> Result<SecretBytes, EngineError> {
            self.0
                .get(&key.join("/"))
                .map(|v| SecretBytes::from(v.as_str()))
                .ok_or_else(|| EngineError {
                    kind: "key-not-found",
                    detail: format!("key '{}' not found", key.join("/")),
                })
        }
    }

    impl Engine for FakeEngine {
        fn check(&self, path: &Path, _: Format, keys: &[&[String]]) -> Result<(), EngineError> {
            let f = self.files.get(path).ok_or(EngineError {
                kind: "io",
                detail: "no such file".into(),
            })?;
            for k in keys {
                if !f.contains_key(&k.join("/")) {
                    return Err(EngineError {
                        kind: "key-not-found",
                        detail: format!("key '{}' not found", k.join("/")),
                    });
                }
            }
            Ok(())
        }
        fn open(&self, path: &Path, _: Format) -> Result<Box<dyn Opened>, EngineError> {
            let f = self.files.get(path).ok_or(EngineError {
                kind: "io",
                detail: "no such file".into(),
            })?;
            Ok(Box::new(FakeOpened(f.clone())))
        }
    }
}
