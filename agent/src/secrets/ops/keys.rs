//! Age keys of the operator repo: the local operator key (`.clawdlets/keys/operators/<op>.agekey`),
//! host keys (encrypted in `secrets/keys/hosts/<host>.agekey.yaml`, plaintext only in the
//! extra-files `key.txt`), and the recipient lists each file must be encrypted to.
//! Secret keys stay in `SecretString`; only recipients (public) are ever printed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use anyhow::{Context as _, bail};

use super::engine::{self, Identity};
use super::repo::Repo;
use crate::fleet::Fleet;
use crate::secret::{SecretBytes, SecretString};

/// Keys of the host key file (layout of existing fleets).
pub const HOST_PUBLIC_KEY: &str = "age_public_key";
pub const HOST_SECRET_KEY: &str = "age_secret_key";

/// An age X25519 key pair.
#[derive(Debug, Clone)]
pub struct AgeKey {
    pub secret: SecretString,
    pub recipient: String,
}

impl AgeKey {
    /// A new key from the OS CSPRNG.
    pub fn generate() -> AgeKey {
        let id = age::x25519::Identity::generate();
        AgeKey {
            recipient: id.to_public().to_string(),
            secret: SecretString::new(id.to_string().expose_secret().to_string()),
        }
    }

    /// Parses an `AGE-SECRET-KEY-1...` line.
    pub fn from_secret(secret: &str) -> anyhow::Result<AgeKey> {
        let id = age::x25519::Identity::from_str(secret.trim())
            .map_err(|_| anyhow::anyhow!("not an age secret key"))?;
        Ok(AgeKey {
            recipient: id.to_public().to_string(),
            secret: SecretString::new(secret.trim().to_string()),
        })
    }

    /// Key-file text like `age-keygen` writes (comment lines + the key line).
    pub fn key_file_text(&self) -> SecretBytes {
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        SecretBytes::new(
            format!(
                "# created: {created}\n# public key: {}\n{}\n",
                self.recipient,
                self.secret.expose()
            )
            .into_bytes(),
        )
    }

    /// Just the key line, as sops-nix's `key.txt` on the host.
    pub fn key_line(&self) -> SecretBytes {
        SecretBytes::new(format!("{}\n", self.secret.expose()).into_bytes())
    }
}

/// Reads the first identity of an age key file (comment lines skipped). Refuses a file that
/// other users can read, like ssh does for private keys.
pub fn read_key_file(path: &Path) -> anyhow::Result<AgeKey> {
    check_key_file_mode(path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file '{}'", path.display()))?,
    );
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .with_context(|| format!("'{}' holds no AGE-SECRET-KEY-1 line", path.display()))?;
    AgeKey::from_secret(line)
        .with_context(|| format!("'{}' holds an invalid age key", path.display()))
}

/// Refuses a key file that other users can read or write.
fn check_key_file_mode(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read key file '{}'", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key file '{}' is accessible by other users (mode {:04o})\nhint: chmod 600 '{}'",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// The recipient of an operator key file: its first key, read through `identity` (which keeps
/// the keys for the rest of the command), so a passphrase-protected file (`age -p`, as sops
/// reads it) is asked for once and a plain one is read once.
fn operator_recipient(path: &Path, identity: &Identity) -> anyhow::Result<String> {
    check_key_file_mode(path)?;
    identity
        .recipients()?
        .into_iter()
        .next()
        .with_context(|| format!("'{}' holds no age key", path.display()))
}

/// The local operator: name, recipient and identity for decryption.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub recipient: String,
    pub identity: Identity,
}

/// Which fleet operator runs this command: `--operator`, else the only operator whose key
/// exists locally, else the only operator of the fleet.
pub fn operator_name(repo: &Repo, fleet: &Fleet, flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = flag {
        if !fleet.operators.iter().any(|o| o.name == name) {
            bail!("operator '{name}' is not listed in fleet/clawdlets.json operators");
        }
        return Ok(name.to_string());
    }
    let local: Vec<&str> = fleet
        .operators
        .iter()
        .filter(|o| repo.operator_key(&o.name).exists())
        .map(|o| o.name.as_str())
        .collect();
    match (local.as_slice(), fleet.operators.as_slice()) {
        ([one], _) => Ok(one.to_string()),
        ([], [only]) => Ok(only.name.clone()),
        _ => bail!(
            "cannot tell which operator you are\nhint: pass --operator NAME (or set CLAWDLETS_OPERATOR)"
        ),
    }
}

/// Loads the operator key and checks it against the fleet's recipient. Missing key → error.
pub fn load_operator(repo: &Repo, fleet: &Fleet, name: &str) -> anyhow::Result<Operator> {
    let path = repo.operator_key(name);
    if !path.exists() {
        bail!(
            "operator key '{}' is missing: refusing to write secrets that you could not read back\n\
             hint: copy your key there (mode 0600); a new operator runs `clawdlets secrets init` first",
            repo.rel(&path)
        );
    }
    let identity = Identity::new(path.clone());
    let recipient = operator_recipient(&path, &identity)?;
    let listed = fleet
        .operators
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.age_recipient.clone());
    match listed {
        Some(r) if r != recipient => bail!(
            "operator key '{}' has recipient {} but fleet/clawdlets.json lists {} for '{name}'",
            repo.rel(&path),
            recipient,
            r
        ),
        _ => {}
    }
    Ok(Operator {
        name: name.to_string(),
        recipient,
        identity,
    })
}

/// Recipients of every operator listed with a recipient (fleet order), plus `extra` (the local
/// operator's recipient before it is recorded in the fleet).
pub fn operator_recipients(
    fleet: &Fleet,
    extra: Option<(&str, &str)>,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, op) in fleet.operators.iter().enumerate() {
        match (&op.age_recipient, extra) {
            (Some(r), _) => out.push(r.clone()),
            (None, Some((name, r))) if name == op.name => out.push(r.to_string()),
            (None, _) => bail!(
                "operators[{i}] ('{}') has no ageRecipient: every operator must be able to read the secrets\n\
                 hint: add their age1... recipient to fleet/clawdlets.json (they get it from their own `secrets init`)",
                op.name
            ),
        }
    }
    Ok(out)
}

/// Decrypts a host's key file with the operator identity. None when the file does not exist.
pub fn read_host_key(
    repo: &Repo,
    host: &str,
    identity: &Identity,
) -> anyhow::Result<Option<AgeKey>> {
    let path = repo.host_key_file(host);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let label = repo.rel(&path).to_string();
    let entries = engine::decrypt(&bytes, identity, &label)?;
    let secret = entries
        .iter()
        .find(|(k, _)| k == HOST_SECRET_KEY)
        .with_context(|| format!("{label}: no '{HOST_SECRET_KEY}' key"))?;
    let text = std::str::from_utf8(secret.1.expose())
        .with_context(|| format!("{label}: '{HOST_SECRET_KEY}' is not text"))?;
    let key = AgeKey::from_secret(text).with_context(|| format!("{label}: '{HOST_SECRET_KEY}'"))?;
    if let Some((_, public)) = entries.iter().find(|(k, _)| k == HOST_PUBLIC_KEY)
        && public.expose() != key.recipient.as_bytes()
    {
        bail!("{label}: '{HOST_PUBLIC_KEY}' does not match '{HOST_SECRET_KEY}'");
    }
    Ok(Some(key))
}

/// Encrypts a host key pair into the host key file format, to the operators only.
pub fn encrypt_host_key(
    key: &AgeKey,
    operators: &[String],
    label: &str,
) -> anyhow::Result<SecretBytes> {
    let public = SecretBytes::new(key.recipient.clone().into_bytes());
    let secret = SecretBytes::new(key.secret.expose().as_bytes().to_vec());
    let bytes = engine::encrypt(
        &[(HOST_PUBLIC_KEY, &public), (HOST_SECRET_KEY, &secret)],
        operators,
        label,
    )?;
    Ok(SecretBytes::new(bytes))
}

/// Recipients of a host's secret files: the host key first, then the operators.
pub fn host_secret_recipients(host_recipient: &str, operators: &[String]) -> Vec<String> {
    let mut v = vec![host_recipient.to_string()];
    v.extend(operators.iter().filter(|r| *r != host_recipient).cloned());
    v
}

/// Renders `secrets/.sops.yaml`: per host, one rule for its key file (operators) and one for its
/// secrets directory (host + operators). Hosts in name order; deterministic bytes.
pub fn render_sops_yaml(hosts: &[(String, String)], operators: &[String]) -> String {
    let mut out = String::from(
        "# Written by `clawdlets secrets init` / `clawdlets secrets rekey` from fleet/clawdlets.json.\n\
         # The host rules are rewritten: change operators in the fleet config, then run `clawdlets secrets rekey`.\n\
         # Rules for other paths (and other keys) added after them are kept.\n\
         creation_rules:\n",
    );
    let list = |out: &mut String, rs: &[String]| {
        out.push_str("    key_groups:\n      - age:\n");
        for r in rs {
            out.push_str(&format!("          - {r}\n"));
        }
    };
    for (host, recipient) in hosts {
        let h = host; // host names are [a-z0-9-]: nothing to escape
        out.push_str(&format!(
            "  - path_regex: ^keys/hosts/{h}\\.agekey\\.yaml$\n"
        ));
        list(&mut out, operators);
        out.push_str(&format!("  - path_regex: ^hosts/{h}/[^/]+\\.yaml$\n"));
        list(&mut out, &host_secret_recipients(recipient, operators));
    }
    out
}

/// `render_sops_yaml`, keeping what an operator added to the current file (`existing`): creation
/// rules for other paths go after the generated ones (a generated rule only ever matches its own
/// host's paths, so none of theirs is shadowed), other top-level keys after that. Rules this
/// function generated (for any host, present or removed) are replaced. Returns the text and one
/// line per kept part, for the plan. Rendering over its own output changes nothing.
pub fn render_sops_yaml_over(
    existing: Option<&[u8]>,
    hosts: &[(String, String)],
    operators: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    use crate::sops::{Format, Map, MapItem, Tree, Value};
    let mut text = render_sops_yaml(hosts, operators);
    let Some(bytes) = existing else {
        return Ok((text, Vec::new()));
    };
    let tree = Tree::parse(bytes, Format::Yaml)
        .context("the current secrets/.sops.yaml does not parse; fix or remove it")?;
    let emit = |map: Map| -> anyhow::Result<String> {
        let out = Tree {
            documents: vec![map],
        }
        .emit(Format::Yaml)?;
        Ok(String::from_utf8_lossy(out.expose()).into_owned())
    };
    let generated = regex::Regex::new(
        r"^\^(keys/hosts/[a-z0-9-]+\\\.agekey\\\.yaml|hosts/[a-z0-9-]+/\[\^/\]\+\\\.yaml)\$$",
    )
    .expect("valid regex");
    let mut kept = Vec::new();
    let mut others = Map::default();
    for item in tree.documents.into_iter().next().unwrap_or_default().0 {
        let MapItem::Pair(key, value) = item else {
            continue; // comments at the top level: the header is ours
        };
        match (key.as_str(), value) {
            ("creation_rules", Value::List(rules)) => {
                for rule in rules {
                    let rule = match rule {
                        Value::Map(rule) => rule,
                        // A comment between the operator's rules stays with them.
                        Value::Comment(c) => {
                            text.push_str(&format!("  #{c}\n"));
                            continue;
                        }
                        _ => continue,
                    };
                    let regex = match rule.get("path_regex") {
                        Some(Value::Str(r)) => String::from_utf8_lossy(r.expose()).into_owned(),
                        _ => String::new(),
                    };
                    if generated.is_match(&regex) {
                        continue;
                    }
                    // The rule as a block, moved under the list's "  - ".
                    for (n, line) in emit(rule)?.lines().enumerate() {
                        let lead = if n == 0 {
                            "  - "
                        } else if line.is_empty() {
                            ""
                        } else {
                            "    "
                        };
                        text.push_str(lead);
                        text.push_str(line);
                        text.push('\n');
                    }
                    kept.push(if regex.is_empty() {
                        "a creation rule without path_regex".to_string()
                    } else {
                        format!("the creation rule for '{regex}'")
                    });
                }
            }
            ("creation_rules", _) => bail!("secrets/.sops.yaml: creation_rules is not a list"),
            (_, value) => {
                kept.push(format!("the top-level key '{key}'"));
                others.insert(&key, value);
            }
        }
    }
    if !others.0.is_empty() {
        text.push_str(&emit(others)?);
    }
    crate::sops::config::SopsConfig::parse(text.as_bytes(), Path::new("secrets/.sops.yaml"))
        .context("the merged secrets/.sops.yaml would not load; nothing written")?;
    Ok((text, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_roundtrips() {
        let k = AgeKey::generate();
        assert!(k.recipient.starts_with("age1"));
        let again = AgeKey::from_secret(k.secret.expose()).unwrap();
        assert_eq!(again.recipient, k.recipient);
        let text = String::from_utf8(k.key_file_text().expose().to_vec()).unwrap();
        assert!(text.contains(&format!("# public key: {}\n", k.recipient)));
        assert!(!format!("{k:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn sops_yaml_keeps_what_operators_added_and_is_stable() {
        let hosts = [("fleet-1".to_string(), "age1host".to_string())];
        let ops = ["age1op".to_string()];
        let ours = render_sops_yaml(
            &[
                ("fleet-1".into(), "age1old".into()),
                ("gone-host".into(), "age1gone".into()),
            ],
            &ops,
        );
        let existing = format!(
            "{ours}  # CI secrets, by hand\n  - path_regex: ^ci/.*\\.yaml$\n    age: age1ci\n  - age: age1catchall\nstores:\n    yaml:\n        indent: 4\n"
        );
        let (text, kept) = render_sops_yaml_over(Some(existing.as_bytes()), &hosts, &ops).unwrap();
        assert_eq!(
            kept,
            [
                "the creation rule for '^ci/.*\\.yaml$'",
                "a creation rule without path_regex",
                "the top-level key 'stores'"
            ]
        );
        // Generated rules: the current hosts only, first; the operator's after them.
        assert!(text.starts_with(&render_sops_yaml(&hosts, &ops)), "{text}");
        assert!(
            text.contains("  # CI secrets, by hand\n  - path_regex: ^ci/"),
            "{text}"
        );
        assert!(
            !text.contains("gone-host") && !text.contains("age1old"),
            "{text}"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".sops.yaml");
        std::fs::write(&p, &text).unwrap();
        let c = super::super::sopsconfig::load(&p).unwrap();
        assert_eq!(c.rule_for("ci/x.yaml").unwrap(), ["age1ci"]);
        assert_eq!(
            c.rule_for("hosts/fleet-1/x.yaml").unwrap(),
            ["age1host", "age1op"]
        );
        assert_eq!(c.rule_for("other/x").unwrap(), ["age1catchall"]);
        // Over its own output: byte for byte the same (no churn on every rekey).
        let (again, _) = render_sops_yaml_over(Some(text.as_bytes()), &hosts, &ops).unwrap();
        assert_eq!(again, text);
        // Without a file, or with nothing added: exactly the generated text.
        let plain = render_sops_yaml(&hosts, &ops);
        assert_eq!(render_sops_yaml_over(None, &hosts, &ops).unwrap().0, plain);
        let (same, kept) = render_sops_yaml_over(Some(plain.as_bytes()), &hosts, &ops).unwrap();
        assert_eq!((same, kept.len()), (plain, 0));
        assert!(render_sops_yaml_over(Some(b"creation_rules: ["), &hosts, &ops).is_err());
    }

    #[test]
    fn sops_yaml_is_deterministic_and_escaped() {
        let a = render_sops_yaml(&[("fleet-1".into(), "age1host".into())], &["age1op".into()]);
        let b = render_sops_yaml(&[("fleet-1".into(), "age1host".into())], &["age1op".into()]);
        assert_eq!(a, b);
        assert!(a.contains("  - path_regex: ^hosts/fleet-1/[^/]+\\.yaml$\n    key_groups:\n      - age:\n          - age1host\n          - age1op\n"));
        assert!(a.contains("^keys/hosts/fleet-1\\.agekey\\.yaml$\n    key_groups:\n      - age:\n          - age1op\n"));
    }

    #[test]
    fn too_open_key_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, AgeKey::generate().key_file_text().expose()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&p).unwrap_err().to_string();
        assert!(e.contains("accessible by other users"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        read_key_file(&p).unwrap();
    }
}
