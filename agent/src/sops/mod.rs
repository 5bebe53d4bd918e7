//! The SOPS engine: reads and writes real SOPS files (YAML, JSON, dotenv, INI, binary) with age
//! keys, compatible with the `sops` tool in both directions.
//!
//! Layers: `store` turns bytes into a `Tree` (and back) for one format and knows nothing of crypto;
//! the crypto and metadata layers encrypt, decrypt and authenticate a `Tree`. This module must not
//! log or return plaintext values in errors.

pub mod error;
pub mod store;
pub mod tree;

pub use error::SopsError;
pub use store::Format;
pub use tree::{Map, MapItem, Tree, Value};
