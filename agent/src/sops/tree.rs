//! The format-neutral value tree that every store produces and consumes, mirroring sops' own
//! `TreeBranches`: ordered maps whose items may be comments, lists, and typed scalars.
//!
//! The same types hold both a plaintext tree and an encrypted one (where scalar values are
//! `ENC[...]` strings). String contents are `SecretBytes`, so a decrypted tree zeroizes on drop.

use crate::secret::SecretBytes;

/// One scalar, list or map. Strings may hold non-UTF-8 bytes (binary files, sops `str` type).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(SecretBytes),
    /// A YAML `!!timestamp`, kept as its RFC 3339 text.
    Time(String),
    Map(Map),
    List(Vec<Value>),
    /// A comment inside a list (text after `#`, leading space included). Comments in maps are
    /// `MapItem::Comment`.
    Comment(String),
}

/// An ordered map: order is preserved exactly as read, comments included.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map(pub Vec<MapItem>);

/// An entry of a map: a key with its value, or a comment line (text after `#`).
#[derive(Debug, Clone, PartialEq)]
pub enum MapItem {
    Pair(String, Value),
    Comment(String),
}

/// A whole document set: YAML files may hold several documents, every other format holds one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub documents: Vec<Map>,
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(SecretBytes::from(s))
    }
}

impl Map {
    /// The value of `key`, ignoring comments.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find_map(|item| match item {
            MapItem::Pair(k, v) if k == key => Some(v),
            _ => None,
        })
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find_map(|item| match item {
            MapItem::Pair(k, v) if k == key => Some(v),
            _ => None,
        })
    }

    /// Sets `key`, replacing the value in place when present (order kept) or appending.
    pub fn insert(&mut self, key: &str, value: Value) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.0.push(MapItem::Pair(key.to_string(), value)),
        }
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let idx = self
            .0
            .iter()
            .position(|i| matches!(i, MapItem::Pair(k, _) if k == key))?;
        match self.0.remove(idx) {
            MapItem::Pair(_, v) => Some(v),
            MapItem::Comment(_) => None,
        }
    }

    /// Keys in order, comments skipped.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|item| match item {
            MapItem::Pair(k, _) => Some(k.as_str()),
            MapItem::Comment(_) => None,
        })
    }
}
