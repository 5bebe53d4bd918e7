//! `.sops.yaml`: finding the nearest config and choosing the creation rule for a file exactly as
//! sops 3.11 does (the file path made absolute, then relative to the config's directory when
//! inside it; the first rule whose `path_regex` matches — RE2 search semantics — or that has no
//! `path_regex` wins). Only age keys are supported; rules that name other key sources are
//! reported, never silently narrowed.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::error::SopsError;
use super::file::KeyGroups;
use super::store::Format;
use super::tree::{Map, Tree, Value};
use super::walk::EncryptionRule;

/// sops' name for the config file (`.sops.yml` is ignored with a warning, like sops).
pub const CONFIG_FILE_NAME: &str = ".sops.yaml";
const MAX_DEPTH: usize = 100;

/// One creation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CreationRule {
    pub path_regex: Option<String>,
    pub key_groups: KeyGroups,
    pub rule: EncryptionRule,
    pub mac_only_encrypted: bool,
    pub shamir_threshold: Option<usize>,
}

/// A loaded `.sops.yaml`.
#[derive(Debug, Clone)]
pub struct SopsConfig {
    path: PathBuf,
    rules: Vec<CreationRule>,
    compiled: Vec<Option<Regex>>,
    /// Per rule: key sources it names that clawdlets cannot use (pgp, kms, …).
    unsupported: Vec<Vec<String>>,
}

/// Nearest `.sops.yaml` walking up from `start` (a directory, or a file's directory), like sops.
pub fn find_config(start: &Path) -> Option<PathBuf> {
    let start = std::path::absolute(start).ok()?;
    let mut dir = if start.is_dir() {
        start
    } else {
        start.parent()?.to_path_buf()
    };
    for _ in 0..MAX_DEPTH {
        let candidate = dir.join(CONFIG_FILE_NAME);
        if candidate.is_file() {
            return Some(candidate);
        }
        if dir.join(".sops.yml").is_file() {
            tracing::warn!(dir = %dir.display(), "ignoring .sops.yml: the config file must be called .sops.yaml");
        }
        if !dir.pop() {
            break;
        }
    }
    None
}

fn cerr(path: &Path, detail: impl std::fmt::Display) -> SopsError {
    SopsError::Config(format!("invalid {}: {detail}", path.display()))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => std::str::from_utf8(s.expose()).ok().map(str::to_string),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(super::cipher::go_format_float(*f)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `age:` as a comma-separated string or a list of strings (each may itself hold commas).
fn key_list(v: &Value, path: &Path, field: &str) -> Result<Vec<String>, SopsError> {
    let items: Vec<String> = match v {
        Value::Null => vec![],
        Value::List(l) => l
            .iter()
            .filter(|i| !matches!(i, Value::Comment(_)))
            .map(|i| {
                text(i).ok_or_else(|| cerr(path, format!("'{field}' must be a list of strings")))
            })
            .collect::<Result<_, _>>()?,
        other => vec![
            text(other)
                .ok_or_else(|| cerr(path, format!("'{field}' must be a string or a list")))?,
        ],
    };
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

fn is_empty_source(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::List(l) => l.is_empty(),
        Value::Str(s) => s.is_empty(),
        _ => false,
    }
}

const OTHER_SOURCES: [&str; 7] = [
    "pgp",
    "kms",
    "gcp_kms",
    "azure_keyvault",
    "hc_vault_transit_uri",
    "hc_vault",
    "hckms",
];

fn parse_group(
    m: &Map,
    path: &Path,
    unsupported: &mut Vec<String>,
    depth: usize,
) -> Result<Vec<String>, SopsError> {
    if depth > 16 {
        return Err(cerr(path, "key group 'merge' nested too deeply"));
    }
    let mut out = Vec::new();
    for (k, v) in super::file::pairs(m) {
        match k {
            "merge" => {
                let Value::List(l) = v else {
                    return Err(cerr(path, "'merge' must be a list of key groups"));
                };
                for g in l {
                    if let Value::Map(gm) = g {
                        out.extend(parse_group(gm, path, unsupported, depth + 1)?);
                    }
                }
            }
            "age" => out.extend(key_list(v, path, "age")?),
            s if OTHER_SOURCES.contains(&s) && !is_empty_source(v) => {
                unsupported.push(s.to_string())
            }
            _ => {}
        }
    }
    let mut dedup: Vec<String> = Vec::new();
    for r in out {
        if !dedup.contains(&r) {
            dedup.push(r);
        }
    }
    Ok(dedup)
}

impl SopsConfig {
    /// Reads and validates a `.sops.yaml`.
    pub fn load(path: &Path) -> Result<SopsConfig, SopsError> {
        let bytes = std::fs::read(path).map_err(|e| SopsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        SopsConfig::parse(&bytes, path)
    }

    /// Parses config text; `path` is where it lives (rules match relative to its directory).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<SopsConfig, SopsError> {
        let tree = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            Tree::new_map()
        } else {
            Tree::parse(bytes, Format::Yaml).map_err(|e| cerr(path, e))?
        };
        let doc = tree.documents.first().cloned().unwrap_or_default();
        let mut cfg = SopsConfig {
            path: path.to_path_buf(),
            rules: vec![],
            compiled: vec![],
            unsupported: vec![],
        };
        let rules = match doc.get("creation_rules") {
            None | Some(Value::Null) => return Ok(cfg),
            Some(Value::List(l)) => l,
            Some(_) => return Err(cerr(path, "'creation_rules' must be a list")),
        };
        for (i, r) in rules.iter().enumerate() {
            if matches!(r, Value::Comment(_)) {
                continue;
            }
            let Value::Map(m) = r else {
                return Err(cerr(path, format!("creation_rules[{i}] must be a map")));
            };
            let at = |d: String| cerr(path, format!("creation_rules[{i}]: {d}"));
            let mut unsupported = Vec::new();
            let mut path_regex = None;
            let mut flat_age = Vec::new();
            let mut groups: Option<Vec<Vec<String>>> = None;
            let mut rule_fields = Vec::new();
            let mut mac_only = false;
            let mut threshold = None;
            for (k, v) in super::file::pairs(m) {
                match k {
                    "path_regex" => path_regex = text(v).filter(|s| !s.is_empty()),
                    "age" => flat_age = key_list(v, path, "age")?,
                    "key_groups" => {
                        let Value::List(l) = v else {
                            return Err(at("'key_groups' must be a list".into()));
                        };
                        let mut gs = Vec::new();
                        for g in l {
                            match g {
                                Value::Map(gm) => {
                                    gs.push(parse_group(gm, path, &mut unsupported, 0)?)
                                }
                                Value::Comment(_) => {}
                                _ => return Err(at("each key group must be a map".into())),
                            }
                        }
                        if !gs.is_empty() {
                            groups = Some(gs);
                        }
                    }
                    "shamir_threshold" => {
                        threshold = match v {
                            Value::Null => None,
                            Value::Int(n) if *n >= 0 => Some(*n as usize).filter(|n| *n > 0),
                            _ => {
                                return Err(at(
                                    "'shamir_threshold' must be a non-negative integer".into(),
                                ));
                            }
                        }
                    }
                    "mac_only_encrypted" => {
                        mac_only = match v {
                            Value::Bool(b) => *b,
                            Value::Null => false,
                            _ => {
                                return Err(
                                    at("'mac_only_encrypted' must be true or false".into()),
                                );
                            }
                        }
                    }
                    "unencrypted_suffix"
                    | "encrypted_suffix"
                    | "unencrypted_regex"
                    | "encrypted_regex"
                    | "unencrypted_comment_regex"
                    | "encrypted_comment_regex" => {
                        let t = text(v).unwrap_or_default();
                        if !t.is_empty() {
                            rule_fields.push(EncryptionRule::from_field(k, t));
                        }
                    }
                    s if OTHER_SOURCES.contains(&s) && !is_empty_source(v) => {
                        unsupported.push(s.to_string())
                    }
                    _ => {}
                }
            }
            if rule_fields.len() > 1 {
                return Err(at(
                    "cannot use more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, or unencrypted_comment_regex".into(),
                ));
            }
            let rule = rule_fields.pop().unwrap_or_default();
            rule.validate().map_err(|e| at(e.to_string()))?;
            let compiled = match &path_regex {
                Some(re) => Some(
                    Regex::new(re).map_err(|e| at(format!("can not compile path_regex: {e}")))?,
                ),
                None => None,
            };
            let key_groups = KeyGroups(groups.unwrap_or_else(|| vec![flat_age]));
            cfg.rules.push(CreationRule {
                path_regex,
                key_groups,
                rule,
                mac_only_encrypted: mac_only,
                shamir_threshold: threshold,
            });
            cfg.compiled.push(compiled);
            cfg.unsupported.push(unsupported);
        }
        Ok(cfg)
    }

    /// Where this config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All creation rules in order.
    pub fn rules(&self) -> &[CreationRule] {
        &self.rules
    }

    /// The string sops matches `path_regex` against: the absolute file path, relative to the
    /// config's directory when it lies inside it.
    pub fn match_path(&self, file: &Path) -> String {
        let abs = normalize(&std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()));
        let file_s = abs.to_string_lossy().into_owned();
        let dir = self.path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        let dir = dir.and_then(|d| std::path::absolute(d).ok());
        match dir {
            Some(d) => {
                let prefix = format!("{}/", normalize(&d).to_string_lossy());
                file_s
                    .strip_prefix(&prefix)
                    .map(str::to_string)
                    .unwrap_or(file_s)
            }
            None => file_s,
        }
    }

    fn index_for(&self, file: &Path) -> Option<usize> {
        let target = self.match_path(file);
        self.compiled
            .iter()
            .position(|re| re.as_ref().is_none_or(|re| re.is_match(&target)))
    }

    /// First rule whose path_regex matches `file` (as sops matches it), or None.
    pub fn rule_for(&self, file: &Path) -> Option<&CreationRule> {
        self.index_for(file).map(|i| &self.rules[i])
    }

    /// Like `rule_for`, but an error that explains when no rule matches or the rule names key
    /// sources clawdlets cannot use (so recipients are never silently dropped).
    pub fn usable_rule_for(&self, file: &Path) -> Result<&CreationRule, SopsError> {
        let i = self.index_for(file).ok_or_else(|| {
            SopsError::Config(format!(
                "no creation rule in {} matches '{}'",
                self.path.display(),
                self.match_path(file)
            ))
        })?;
        if !self.unsupported[i].is_empty() {
            return Err(SopsError::Config(format!(
                "the creation rule in {} for '{}' uses key sources clawdlets does not support ({}); only age keys are supported",
                self.path.display(),
                self.match_path(file),
                self.unsupported[i].join(", ")
            )));
        }
        Ok(&self.rules[i])
    }
}

/// Lexically removes `.` and `..` components (like Go's `filepath.Abs` cleaning).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
