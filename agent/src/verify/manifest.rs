//! The subset of the sops-nix manifest JSON (`manifest.json`) that verify needs: where the
//! secrets mount and symlink are, and each secret's name, path, owner, group and mode. Other
//! keys are ignored on purpose (the installer owns and validates the full schema).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub secrets: Vec<SecretEntry>,
    /// Templates install like secrets, at `<generation>/rendered/<name>`, with their own owner,
    /// group and mode.
    #[serde(default)]
    pub templates: Vec<SecretEntry>,
    #[serde(default = "default_mount")]
    pub secrets_mount_point: PathBuf,
    #[serde(default = "default_symlink")]
    pub symlink_path: PathBuf,
}

fn default_mount() -> PathBuf {
    "/run/secrets.d".into()
}
fn default_symlink() -> PathBuf {
    "/run/secrets".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecretEntry {
    pub name: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub mode: Option<String>,
}

impl SecretEntry {
    /// The declared mode, `0400` when absent.
    pub fn mode_bits(&self) -> Result<u32, String> {
        let m = self.mode.as_deref().unwrap_or("0400");
        u32::from_str_radix(m, 8)
            .map_err(|_| format!("secret {}: mode {m:?} is not octal", self.name))
    }
}

/// Errors reading the manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read secrets manifest '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a sops-nix manifest.
    #[error("invalid secrets manifest '{path}': {source}")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl ManifestError {
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestError::Read { .. } => "manifest_read",
            ManifestError::Invalid { .. } => "manifest_invalid",
        }
    }
}

impl Manifest {
    /// Every file the installer puts in a generation: (path relative to the generation
    /// directory, its declaration). Secrets sit at their name, templates under `rendered/`.
    pub fn files(&self) -> impl Iterator<Item = (PathBuf, &SecretEntry)> {
        let secrets = self.secrets.iter().map(|s| (PathBuf::from(&s.name), s));
        let templates = self
            .templates
            .iter()
            .map(|t| (Path::new("rendered").join(&t.name), t));
        secrets.chain(templates)
    }

    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Invalid {
            path: path.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sops_nix_manifest_subset() {
        let m: Manifest = serde_json::from_str(
            r#"{"secrets":[{"name":"a","key":"a","path":"/run/secrets/a","owner":"bot","uid":0,"group":null,"gid":0,
                "sopsFile":"/nix/store/x","format":"yaml","mode":"0440","restartUnits":[],"reloadUnits":[]}],
                "templates":[],"placeholderBySecretName":{},"secretsMountPoint":"/run/secrets.d","symlinkPath":"/run/secrets",
                "keepGenerations":1,"sshKeyPaths":[],"gnupgHome":null,"ageKeyFile":"/var/lib/sops-nix/key.txt",
                "ageSshKeyPaths":[],"useTmpfs":false,"userMode":false,"logging":{"keyImport":true,"secretChanges":true}}"#,
        )
        .unwrap();
        assert_eq!(m.secrets[0].mode_bits().unwrap(), 0o440);
        assert_eq!(m.symlink_path, PathBuf::from("/run/secrets"));
    }

    #[test]
    fn templates_are_files_under_rendered() {
        let m: Manifest = serde_json::from_str(
            r#"{"secrets":[{"name":"db/pw","mode":"0400"}],
                "templates":[{"name":"app.env","content":"X=<SOPS:ab:PLACEHOLDER>","owner":"bot","mode":"0440"}]}"#,
        )
        .unwrap();
        let files: Vec<(PathBuf, &str)> = m.files().map(|(p, e)| (p, e.name.as_str())).collect();
        assert_eq!(
            files,
            vec![
                (PathBuf::from("db/pw"), "db/pw"),
                (PathBuf::from("rendered/app.env"), "app.env")
            ]
        );
    }
}
