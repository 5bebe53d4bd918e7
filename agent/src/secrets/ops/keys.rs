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

/// The recipient of an operator key file. A passphrase-protected file (`age -p`, as sops reads
/// it) is opened through `identity`, which keeps it open for the rest of the command.
fn operator_recipient(path: &Path, identity: &Identity) -> anyhow::Result<String> {
    check_key_file_mode(path)?;
    let head = std::fs::read(path)
        .with_context(|| format!("cannot read key file '{}'", path.display()))?;
    if !crate::sops::keys::is_age_file(&zeroize::Zeroizing::new(head)) {
        return Ok(read_key_file(path)?.recipient);
    }
    let recipients = identity.recipients()?;
    match recipients.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "the protected key file '{}' holds {} age keys; an operator key file holds one",
            path.display(),
            recipients.len()
        ),
    }
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
         # Edits are overwritten: change operators in the fleet config, then run `clawdlets secrets rekey`.\n\
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
