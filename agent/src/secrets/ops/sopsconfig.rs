//! Reads `secrets/.sops.yaml` creation rules: for a file path (relative to the config's
//! directory, as sops matches it) the age recipients of the first rule whose `path_regex`
//! matches. Accepts both shapes sops writes and reads: `key_groups: [{age: [...]}]` and the
//! flat `age: "a,b"` string.
//!
//! INTERIM: a line parser for these two shapes, to be replaced by `crate::sops::config` once the
//! engine lands (same answers for the files `secrets init` renders).

use std::path::Path;

use regex::Regex;

/// One rule: its path regex (None = matches every file) and its age recipients.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path_regex: Option<Regex>,
    pub age: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub rules: Vec<Rule>,
}

/// Errors reading the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Missing or unreadable.
    #[error("cannot read {path}: {detail}")]
    Io { path: String, detail: String },
    /// A path_regex does not compile.
    #[error("{path}: creation rule {index}: invalid path_regex: {detail}")]
    Regex {
        path: String,
        index: usize,
        detail: String,
    },
    /// No creation_rules.
    #[error("{path}: no creation_rules")]
    Empty { path: String },
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && (s.starts_with('"') && s.ends_with('"') || s.starts_with('\'') && s.ends_with('\''))
    {
        let inner = &s[1..s.len() - 1];
        if s.starts_with('"') {
            inner.replace("\\\\", "\\")
        } else {
            inner.replace("''", "'")
        }
    } else {
        s.to_string()
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: label.clone(),
        detail: e.to_string(),
    })?;
    parse(&text, &label)
}

pub fn parse(text: &str, label: &str) -> Result<Config, ConfigError> {
    let mut rules: Vec<(Option<String>, Vec<String>)> = Vec::new();
    let mut in_rules = false;
    let mut rule_indent: Option<usize> = None;
    let mut in_age_list = false;
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent == 0 {
            in_rules = t.starts_with("creation_rules:");
            continue;
        }
        if !in_rules {
            continue;
        }
        // A new rule: "- " at the rules' item indent.
        if let Some(rest) = t.strip_prefix("- ") {
            if rule_indent.is_none() || rule_indent == Some(indent) {
                rule_indent = Some(indent);
                rules.push((None, Vec::new()));
                in_age_list = false;
                handle_kv(rest, &mut rules, &mut in_age_list);
                continue;
            }
            // A list item inside a rule.
            let item = rest.trim();
            if let Some(kv) = item.strip_prefix("age:").map(|_| item) {
                handle_kv(kv, &mut rules, &mut in_age_list);
            } else if in_age_list {
                if let Some(r) = rules.last_mut() {
                    r.1.push(unquote(item));
                }
            }
            continue;
        }
        handle_kv(t, &mut rules, &mut in_age_list);
    }
    if rules.is_empty() {
        return Err(ConfigError::Empty { path: label.into() });
    }
    let mut out = Vec::new();
    for (i, (re, age)) in rules.into_iter().enumerate() {
        let path_regex = match re {
            Some(r) => Some(Regex::new(&r).map_err(|e| ConfigError::Regex {
                path: label.into(),
                index: i,
                detail: e.to_string(),
            })?),
            None => None,
        };
        out.push(Rule { path_regex, age });
    }
    Ok(Config { rules: out })
}

fn handle_kv(t: &str, rules: &mut [(Option<String>, Vec<String>)], in_age_list: &mut bool) {
    let Some(rule) = rules.last_mut() else { return };
    if let Some(v) = t.strip_prefix("path_regex:") {
        rule.0 = Some(unquote(v));
        *in_age_list = false;
    } else if let Some(v) = t.strip_prefix("age:") {
        let v = v.trim();
        if v.is_empty() {
            *in_age_list = true;
        } else {
            *in_age_list = false;
            let v = unquote(v);
            let v = v.trim_start_matches('[').trim_end_matches(']');
            rule.1.extend(
                v.split(',')
                    .map(|s| unquote(s.trim()))
                    .filter(|s| !s.is_empty()),
            );
        }
    } else if t.contains(':') {
        *in_age_list = false;
    }
}

impl Config {
    /// Recipients of the first rule matching `rel_path`, or None.
    pub fn rule_for(&self, rel_path: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(rel_path)))
            .map(|r| r.age.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rendered_rules_and_flat_age_lists() {
        let text = super::super::keys::render_sops_yaml(
            &[("fleet-1".into(), "age1host".into())],
            &["age1a".into(), "age1b".into()],
        );
        let c = parse(&text, "x").unwrap();
        assert_eq!(
            c.rule_for("hosts/fleet-1/x.yaml").unwrap(),
            ["age1host", "age1a", "age1b"]
        );
        assert_eq!(
            c.rule_for("keys/hosts/fleet-1.agekey.yaml").unwrap(),
            ["age1a", "age1b"]
        );
        assert!(c.rule_for("hosts/other/x.yaml").is_none());

        let flat = "creation_rules:\n  - path_regex: hosts/h/.*\\.yaml$\n    age: 'age1x, age1y'\n  - age: age1z\n";
        let c = parse(flat, "x").unwrap();
        assert_eq!(c.rule_for("hosts/h/a.yaml").unwrap(), ["age1x", "age1y"]);
        assert_eq!(c.rule_for("other.yaml").unwrap(), ["age1z"]);
    }
}
