//! `clawdlets sops set` and `unset`, like sops': change one value or branch of an encrypted file
//! in place, addressed like `--extract` (`'["db"]["password"]'`, `'["hosts"][0]'`). The value is
//! JSON, read from the argument, a file (`--value-file`) or stdin (`--value-stdin`), the last two
//! keeping it out of the process list. Missing maps on the way are created, an index past the end
//! of a list appends; every other value keeps its ciphertext (the file's rules and recipients
//! apply as they are), so the diff is the changed value, the MAC and `lastmodified`.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use super::cli::{OpenArgs, PathItem, parse_extract, write_in_place};
use super::file::EncryptedFile;
use super::tree::{Map, Tree, Value};
use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// Largest value read from a file or stdin.
const MAX_VALUE: u64 = 16 << 20;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").args(["value", "value_file", "value_stdin"]).required(true)))]
pub struct SetArgs {
    /// The encrypted file (changed in place).
    pub file: PathBuf,
    /// Where to set, e.g. '["db"]["password"]' or '["hosts"][0]'.
    pub index: String,
    /// The new value as JSON, e.g. '"s3cret"' or '{"user": "app"}'. Visible in the process
    /// list: prefer --value-file or --value-stdin for secrets.
    pub value: Option<String>,
    /// Read the JSON value from this file.
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
    /// Read the JSON value from stdin.
    #[arg(long)]
    pub value_stdin: bool,
    /// Write nothing when the index already holds this value.
    #[arg(long)]
    pub idempotent: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The encrypted file (changed in place).
    pub file: PathBuf,
    /// What to remove, e.g. '["db"]["password"]' or '["hosts"][0]'.
    pub index: String,
    /// Succeed without writing when the index does not exist.
    #[arg(long)]
    pub idempotent: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

pub fn set(a: SetArgs) -> anyhow::Result<ExitCode> {
    let path = parse_path(&a.index)?;
    let text = match (&a.value, &a.value_file, a.value_stdin) {
        (Some(v), _, _) => SecretBytes::from(v.as_str()),
        (_, Some(f), _) => read_limited(
            std::fs::File::open(f).with_context(|| format!("cannot read '{}'", f.display()))?,
        )?,
        _ => read_limited(std::io::stdin().lock())?,
    };
    // Errors from serde_json name a line and column, never the text.
    let json: serde_json::Value = serde_json::from_slice(text.expose())
        .map_err(|e| anyhow!("the value is not valid JSON ({e})"))?;
    drop(text);
    let value = from_json(json);
    edit_file(&a.file, &a.open, |tree| {
        let root = first_document(tree);
        if a.idempotent && lookup(root, &path) == Some(&value) {
            return Ok(false);
        }
        put(root, &path, value);
        Ok(true)
    })
}

pub fn unset(a: UnsetArgs) -> anyhow::Result<ExitCode> {
    let path = parse_path(&a.index)?;
    edit_file(&a.file, &a.open, |tree| {
        match take(first_document(tree), &path) {
            Some(_removed) => Ok(true),
            None if a.idempotent => Ok(false),
            None => bail!("key not found: {}", a.index),
        }
    })
}

fn parse_path(index: &str) -> anyhow::Result<Vec<PathItem>> {
    let path = parse_extract(index)?;
    match path.first() {
        Some(PathItem::Key(_)) => Ok(path),
        Some(PathItem::Index(_)) => bail!("the index must start with a key, e.g. '[\"db\"]'"),
        None => bail!("the index is empty; e.g. '[\"db\"][\"password\"]'"),
    }
}

fn read_limited(r: impl std::io::Read) -> anyhow::Result<SecretBytes> {
    let mut buf = Vec::new();
    r.take(MAX_VALUE + 1)
        .read_to_end(&mut buf)
        .context("cannot read the value")?;
    let buf = SecretBytes::new(buf);
    if buf.len() as u64 > MAX_VALUE {
        bail!("the value is larger than 16 MiB");
    }
    Ok(buf)
}

/// Decrypts `file`, lets `change` edit the tree (false: nothing to do), re-seals and writes it.
fn edit_file(
    file: &std::path::Path,
    open: &OpenArgs,
    change: impl FnOnce(&mut Tree) -> anyhow::Result<bool>,
) -> anyhow::Result<ExitCode> {
    let format = open.format(file);
    let shown = file.display();
    let keys = open.keys.keyring()?;
    let mut sealed = EncryptedFile::read(file, format)?;
    let changed = sealed
        .modify(&keys, change)
        .with_context(|| format!("cannot change '{shown}'"))?;
    if !changed {
        eprintln!("'{shown}': already as asked, nothing written");
        return Ok(ExitCode::Success);
    }
    write_in_place(file, &sealed.to_bytes()?)?;
    tracing::info!(event = "sops_value_changed", file = %shown, "value set or unset");
    Ok(ExitCode::Success)
}

/// The first document as a value to walk (a file without one gets an empty map).
fn first_document(tree: &mut Tree) -> &mut Map {
    if tree.documents.is_empty() {
        tree.documents.push(Map::default());
    }
    &mut tree.documents[0]
}

/// JSON as a tree value: objects keep their order, integers that fit stay integers.
fn from_json(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Str(SecretBytes::new(s.into_bytes())),
        J::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        J::Object(m) => {
            let mut map = Map::default();
            for (k, v) in m {
                map.insert(&k, from_json(v));
            }
            Value::Map(map)
        }
    }
}

/// The `n`th element of a list, not counting comments.
fn nth_item(list: &mut [Value], n: usize) -> Option<&mut Value> {
    list.iter_mut()
        .filter(|v| !matches!(v, Value::Comment(_)))
        .nth(n)
}

fn lookup<'a>(root: &'a Map, path: &[PathItem]) -> Option<&'a Value> {
    let (PathItem::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut cur = root.get(first)?;
    for step in rest {
        cur = match (step, cur) {
            (PathItem::Key(k), Value::Map(m)) => m.get(k)?,
            (PathItem::Index(i), Value::List(l)) => l
                .iter()
                .filter(|v| !matches!(v, Value::Comment(_)))
                .nth(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets `value` at `path` under `root`, creating maps and lists on the way (a scalar in the way
/// is replaced); an index past the end appends.
fn put(root: &mut Map, path: &[PathItem], value: Value) {
    let Some((PathItem::Key(first), rest)) = path.split_first() else {
        return;
    };
    let mut slot = child(root, first);
    for step in rest {
        slot = match step {
            PathItem::Key(k) => child(as_map(slot), k),
            PathItem::Index(i) => {
                let list = as_list(slot);
                let len = list
                    .iter()
                    .filter(|v| !matches!(v, Value::Comment(_)))
                    .count();
                if *i < len {
                    nth_item(list, *i).expect("index checked above")
                } else {
                    list.push(Value::Null);
                    list.last_mut().expect("pushed above")
                }
            }
        };
    }
    *slot = value;
}

/// The value of `key` in `map`, added as null when missing.
fn child<'a>(map: &'a mut Map, key: &str) -> &'a mut Value {
    if map.get(key).is_none() {
        map.insert(key, Value::Null);
    }
    map.get_mut(key).expect("inserted above")
}

/// `slot` as a map, replacing whatever else it held with an empty one.
fn as_map(slot: &mut Value) -> &mut Map {
    if !matches!(slot, Value::Map(_)) {
        *slot = Value::Map(Map::default());
    }
    match slot {
        Value::Map(m) => m,
        _ => unreachable!("made a map above"),
    }
}

/// `slot` as a list, replacing whatever else it held with an empty one.
fn as_list(slot: &mut Value) -> &mut Vec<Value> {
    if !matches!(slot, Value::List(_)) {
        *slot = Value::List(Vec::new());
    }
    match slot {
        Value::List(l) => l,
        _ => unreachable!("made a list above"),
    }
}

/// Removes what `path` names under `root`; None when it does not exist.
fn take(root: &mut Map, path: &[PathItem]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    if parents.is_empty() {
        let PathItem::Key(k) = last else { return None };
        return root.remove(k);
    }
    let (PathItem::Key(first), rest) = parents.split_first()? else {
        return None;
    };
    let mut parent = root.get_mut(first)?;
    for step in rest {
        parent = match (step, parent) {
            (PathItem::Key(k), Value::Map(m)) => m.get_mut(k)?,
            (PathItem::Index(i), Value::List(l)) => nth_item(l, *i)?,
            _ => return None,
        };
    }
    match (last, parent) {
        (PathItem::Key(k), Value::Map(m)) => m.remove(k),
        (PathItem::Index(i), Value::List(l)) => {
            let at = l
                .iter()
                .enumerate()
                .filter(|(_, v)| !matches!(v, Value::Comment(_)))
                .nth(*i)?
                .0;
            Some(l.remove(at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<PathItem> {
        parse_path(s).unwrap()
    }

    #[test]
    fn put_creates_the_way_and_appends_past_the_end() {
        let mut root = Map::default();
        root.insert(
            "l",
            Value::List(vec![Value::str("x"), Value::Comment(" c".into())]),
        );
        put(&mut root, &path(r#"["a"]["b"]["c"]"#), Value::Int(1));
        put(&mut root, &path(r#"["l"][0]"#), Value::str("X"));
        put(&mut root, &path(r#"["l"][7]"#), Value::str("Z"));
        assert_eq!(
            lookup(&root, &path(r#"["a"]["b"]["c"]"#)),
            Some(&Value::Int(1))
        );
        assert_eq!(
            root.get("l"),
            Some(&Value::List(vec![
                Value::str("X"),
                Value::Comment(" c".into()),
                Value::str("Z")
            ]))
        );
        // A scalar in the way becomes a map.
        put(
            &mut root,
            &path(r#"["a"]["b"]["c"]["d"]"#),
            Value::Bool(true),
        );
        assert_eq!(
            lookup(&root, &path(r#"["a"]["b"]["c"]["d"]"#)),
            Some(&Value::Bool(true))
        );
    }

    #[test]
    fn take_removes_keys_and_list_items_and_reports_missing() {
        let mut root = Map::default();
        put(&mut root, &path(r#"["a"]["b"]"#), Value::Int(1));
        put(&mut root, &path(r#"["l"][0]"#), Value::str("x"));
        put(&mut root, &path(r#"["l"][1]"#), Value::str("y"));
        assert_eq!(take(&mut root, &path(r#"["l"][0]"#)), Some(Value::str("x")));
        assert_eq!(root.get("l"), Some(&Value::List(vec![Value::str("y")])));
        assert_eq!(take(&mut root, &path(r#"["a"]["b"]"#)), Some(Value::Int(1)));
        assert_eq!(take(&mut root, &path(r#"["a"]["b"]"#)), None);
        assert_eq!(take(&mut root, &path(r#"["zz"]"#)), None);
        assert_eq!(take(&mut root, &path(r#"["l"][3]"#)), None);
        assert!(parse_path("[0]").is_err() && parse_path("").is_err());
    }

    #[test]
    fn json_values_keep_order_and_integers() {
        let v =
            from_json(serde_json::from_str(r#"{"z": 1, "a": [1.5, null, "s", true]}"#).unwrap());
        let Value::Map(m) = v else { panic!() };
        let keys: Vec<_> =
            m.0.iter()
                .map(|i| match i {
                    crate::sops::tree::MapItem::Pair(k, _) => k.as_str(),
                    _ => "",
                })
                .collect();
        assert_eq!(keys, ["z", "a"]);
        assert_eq!(m.get("z"), Some(&Value::Int(1)));
        assert_eq!(
            m.get("a"),
            Some(&Value::List(vec![
                Value::Float(1.5),
                Value::Null,
                Value::str("s"),
                Value::Bool(true)
            ]))
        );
    }
}
