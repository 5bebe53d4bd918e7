//! The binary store: any file is one string value under the `data` key; encrypted, it is stored
//! as a sops JSON document. Decryption gives back the exact bytes, non-UTF-8 included.

use super::Store;
use super::json::JsonStore;
use crate::secret::SecretBytes;
use crate::sops::error::SopsError;
use crate::sops::tree::{Map, MapItem, Tree, Value};

/// The sops binary store.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinaryStore;

impl Store for BinaryStore {
    fn load_plain(&self, bytes: &[u8]) -> Result<Tree, SopsError> {
        let map = Map(vec![MapItem::Pair(
            "data".to_string(),
            Value::Str(SecretBytes::new(bytes.to_vec())),
        )]);
        Ok(Tree {
            documents: vec![map],
        })
    }

    fn load_encrypted(&self, bytes: &[u8]) -> Result<(Tree, Map), SopsError> {
        JsonStore.load_encrypted(bytes)
    }

    fn emit_plain(&self, tree: &Tree) -> Result<Vec<u8>, SopsError> {
        let [doc] = tree.documents.as_slice() else {
            return Err(SopsError::parse(
                "binary",
                "there must be exactly one document",
            ));
        };
        match doc.get("data") {
            Some(Value::Str(s)) => Ok(s.expose().to_vec()),
            Some(_) => Err(SopsError::parse(
                "binary",
                "'data' key in tree does not have a string value",
            )),
            None => Err(SopsError::parse(
                "binary",
                "no binary data found in tree (no 'data' key); this is likely not an encrypted binary file: use --output-type to select the correct output type",
            )),
        }
    }

    fn emit_encrypted(&self, tree: &Tree, metadata: &Map) -> Result<Vec<u8>, SopsError> {
        JsonStore.emit_encrypted(tree, metadata)
    }

    fn emit_value(&self, _value: &Value) -> Result<Vec<u8>, SopsError> {
        Err(SopsError::parse(
            "binary",
            "binary files are not structured and extracting a single value is not possible",
        ))
    }
}
