//! The SOPS engine: reads and writes real SOPS files (YAML, JSON, dotenv, INI, binary) with age
//! keys, compatible with the `sops` tool in both directions.
//!
//! Layers: `store` turns bytes into a `Tree` (and back) for one format and knows nothing of crypto;
//! `cipher` (values), `walk` (rules, AAD, MAC), `metadata`, `keys` and `shamir` encrypt, decrypt and
//! authenticate a `Tree`; `file` is the public face other concerns use; `cli` is
//! `clawdlets sops …`. This module must not log or return plaintext values in errors.

pub mod cipher;
pub mod cli;
pub mod config;
pub mod edit;
pub mod error;
pub mod exec;
pub mod file;
pub mod keys;
pub mod metadata;
pub mod set;
pub mod shamir;
pub mod store;
pub mod tree;
pub mod walk;

pub use error::SopsError;
pub use file::{EncryptOptions, EncryptedFile, KeyGroups, decrypt_file};
pub use keys::{
    AgeKeypair, Keyring, age_recipient_of, generate_age_keypair, ssh_ed25519_public_to_age,
    ssh_ed25519_to_age,
};
pub use store::Format;
pub use tree::{Map, MapItem, Tree, Value};
pub use walk::EncryptionRule;

/// `clawdlets sops …` entry point.
pub fn run(cmd: cli::SopsCmd) -> anyhow::Result<crate::exit::ExitCode> {
    cli::run(cmd)
}
