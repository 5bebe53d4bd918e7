//! Key sources: ageKeyFile and ed25519 SSH host keys, loaded into memory only.
//! (The SOPS engine lands with the `sops` branch; until then installing cannot decrypt.)

use super::engine::Engine;
use super::error::InstallError;
use super::validate::Plan;

pub fn make_engine(
    _plan: &Plan,
    _generate: bool,
    _check_only: bool,
) -> Result<Box<dyn Engine>, InstallError> {
    Err(InstallError::NoKeys {
        detail: "the SOPS engine is not built into this binary yet".into(),
    })
}
