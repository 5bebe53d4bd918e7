//! Format stores: bytes ⇄ `Tree` for YAML, JSON, dotenv, INI and binary, byte-compatible with
//! sops' own stores. Stores know nothing of crypto: an encrypted file is a tree whose values are
//! `ENC[...]` strings plus the `sops` metadata, returned separately as a plain map.

use std::path::Path;
use std::str::FromStr;

use super::error::SopsError;
use super::tree::{Map, MapItem, Tree, Value};

pub mod binary;
pub mod dotenv;
pub mod flatten;
pub mod ini;
pub mod json;
pub mod yaml;

/// The five file formats sops supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
    Binary,
}

impl Format {
    /// The format sops infers from a file name: `.yaml`/`.yml`, `.json`, `.env`, `.ini`, else binary.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("env") => Format::Dotenv,
            Some("ini") => Format::Ini,
            _ => Format::Binary,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
            Format::Binary => "binary",
        }
    }
}

impl FromStr for Format {
    type Err = SopsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "yaml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            "dotenv" => Ok(Format::Dotenv),
            "ini" => Ok(Format::Ini),
            "binary" => Ok(Format::Binary),
            other => Err(SopsError::UnsupportedFormat(other.to_string())),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every format store provides. Implementations must never panic on any input.
pub trait Store {
    /// Parses a plaintext file (the input of `encrypt`).
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError>;

    /// Parses an encrypted file into its tree (without the `sops` key) and the metadata map (the
    /// value of `sops`, unflattened for dotenv/INI). `NotSops` when there is no metadata.
    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError>;

    /// Serializes a plaintext tree exactly as `sops -d` prints it.
    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError>;

    /// Serializes an encrypted tree with its metadata exactly as `sops -e` writes it.
    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError>;

    /// Serializes one value as `sops -d --extract` prints it: scalars raw, subtrees in this format.
    fn emit_value(&self, value: &Value) -> Result<Vec<u8>, SopsError>;
}

/// The store for a format.
pub fn store_for(format: Format) -> Result<Box<dyn Store>, SopsError> {
    match format {
        Format::Json => Ok(Box::new(json::JsonStore)),
        Format::Binary => Ok(Box::new(binary::BinaryStore)),
        Format::Yaml => Ok(Box::new(yaml::YamlStore)),
        Format::Dotenv => Ok(Box::new(dotenv::DotenvStore)),
        Format::Ini => Ok(Box::new(ini::IniStore)),
    }
}

/// Removes the top-level `sops` key of a document and returns (data, metadata). `NotSops` when
/// the key is missing; `Metadata` when it is not a map.
pub fn split_sops_key(mut doc: Map) -> Result<(Map, Map), SopsError> {
    let mut meta = None;
    let mut rest = Vec::with_capacity(doc.0.len());
    for item in doc.0.drain(..) {
        match item {
            MapItem::Pair(k, v) if k == "sops" => {
                if meta.is_none() {
                    meta = Some(v);
                }
            }
            other => rest.push(other),
        }
    }
    match meta {
        Some(Value::Map(m)) => Ok((Map(rest), m)),
        Some(_) => Err(SopsError::Metadata(
            "the 'sops' key is not a map".to_string(),
        )),
        None => Err(SopsError::NotSops),
    }
}
