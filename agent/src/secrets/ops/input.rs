//! Where operator-provided values come from: `--from-json FILE` (`{"secrets": {"NAME": "VALUE"}}`,
//! `-` = stdin), a no-echo terminal prompt, or stdin. Never the command line: argv is visible to
//! every user through /proc. Values go straight into `SecretBytes`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromJsonFile {
    secrets: BTreeMap<String, serde_json::Value>,
}

/// Values read from a `--from-json` file.
#[derive(Debug, Default)]
pub struct Provided {
    values: BTreeMap<String, SecretBytes>,
    /// Where they came from, for plan notes ("--from-json").
    pub source: String,
}

impl Provided {
    /// Reads `{"secrets": {"NAME": "VALUE"}}` from `path` (`-` = stdin). Only string values.
    pub fn load(path: &Path) -> anyhow::Result<Provided> {
        let mut text = Zeroizing::new(Vec::new());
        if path == Path::new("-") {
            std::io::stdin()
                .read_to_end(&mut text)
                .context("cannot read --from-json from stdin")?;
        } else {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read --from-json '{}'", path.display()))?;
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(event = "secrets_input_world_readable", path = %path.display(), "--from-json file is world-readable");
                eprintln!(
                    "warning: '{}' is readable by every user; keep value files 0600 and delete them after use",
                    path.display()
                );
            }
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut text))
                .with_context(|| format!("cannot read --from-json '{}'", path.display()))?;
        }
        // serde_json's error mentions line/column only, never the value.
        let parsed: FromJsonFile = serde_json::from_slice(&text).map_err(|e| {
            anyhow::anyhow!(
                "--from-json '{}': expected {{\"secrets\": {{\"NAME\": \"VALUE\"}}}}: {e}",
                path.display()
            )
        })?;
        let mut values = BTreeMap::new();
        for (name, v) in parsed.secrets {
            match v {
                serde_json::Value::String(s) if !s.is_empty() => {
                    values.insert(name, SecretBytes::new(s.into_bytes()));
                }
                serde_json::Value::String(_) => {
                    bail!("--from-json '{}': secrets.{name} is empty", path.display())
                }
                _ => bail!(
                    "--from-json '{}': secrets.{name} must be a string",
                    path.display()
                ),
            }
        }
        Ok(Provided {
            values,
            source: "--from-json".into(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&SecretBytes> {
        self.values.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.values.keys()
    }
}

/// Prompts on the terminal without echo. Empty input is refused.
pub fn prompt_secret(label: &str) -> anyhow::Result<SecretBytes> {
    let v = rpassword::prompt_password(format!("{label}: "))
        .context("cannot read from the terminal")?;
    let v = SecretBytes::new(v.into_bytes());
    if v.is_empty() {
        bail!("empty value for {label}");
    }
    Ok(v)
}

/// Prompts twice without echo; refuses when the two entries differ (a typo in a login password
/// would lock the operator out).
pub fn prompt_confirmed(label: &str) -> anyhow::Result<SecretBytes> {
    let v = prompt_secret(label)?;
    let again = prompt_secret("again, to confirm")?;
    if !v.ct_eq(again.expose()) {
        bail!("the two entries differ; nothing written");
    }
    Ok(v)
}

/// Reads a value from stdin (not a terminal). One trailing newline is removed unless `raw`.
pub fn read_stdin_value(raw: bool) -> anyhow::Result<SecretBytes> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read the value from stdin")?;
    let mut v = SecretBytes::new(buf);
    if !raw {
        v = strip_one_newline(v);
    }
    if v.is_empty() {
        bail!("no value on stdin (the value is read from stdin, never from the command line)");
    }
    Ok(v)
}

pub fn strip_one_newline(v: SecretBytes) -> SecretBytes {
    let b = v.expose();
    let cut = if b.ends_with(b"\r\n") {
        2
    } else if b.ends_with(b"\n") {
        1
    } else {
        0
    };
    if cut == 0 {
        v
    } else {
        SecretBytes::new(b[..b.len() - cut].to_vec())
    }
}
