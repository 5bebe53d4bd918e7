//! The sops-nix installer manifest (`manifest.json`, `manifest-for-users.json`): serde types with
//! exactly the field set sops-nix's NixOS module renders (see docs/secrets-install.md for the
//! sops-nix commit matched). Unknown fields are rejected, so a typo or a newer module never goes
//! unnoticed. This file only describes the JSON; it does no I/O and no validation beyond types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole manifest. `builtins.toJSON` of the module's attrset: every key is always present in
/// what Nix renders, but hand-written manifests may omit anything that has a sops-nix default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default, deserialize_with = "null_as_default")]
    pub secrets: Vec<Secret>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub templates: Vec<Template>,
    /// Secret name → placeholder string; filled by the module only when templates exist.
    #[serde(default, deserialize_with = "null_as_default")]
    pub placeholder_by_secret_name: BTreeMap<String, String>,
    #[serde(default = "default_mount_point")]
    pub secrets_mount_point: String,
    #[serde(default = "default_symlink_path")]
    pub symlink_path: String,
    #[serde(default = "default_keep_generations")]
    pub keep_generations: i64,
    /// RSA SSH keys imported as PGP keys by sops-nix. PGP is not supported here (see docs).
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssh_key_paths: Vec<String>,
    #[serde(default)]
    pub gnupg_home: Option<String>,
    #[serde(default)]
    pub age_key_file: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub age_ssh_key_paths: Vec<String>,
    #[serde(default)]
    pub use_tmpfs: bool,
    #[serde(default)]
    pub user_mode: bool,
    #[serde(default)]
    pub logging: Logging,
}

/// `logging = { keyImport, secretChanges }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    #[serde(default = "yes")]
    pub key_import: bool,
    #[serde(default = "yes")]
    pub secret_changes: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            key_import: true,
            secret_changes: true,
        }
    }
}

/// One `sops.secrets.<name>` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    pub name: String,
    /// Lookup path in the decrypted tree, `/`-separated; `""` = the whole file. Defaults to `name`.
    #[serde(default)]
    pub key: Option<String>,
    /// Where the secret should appear; a symlink is made when it differs from `symlinkPath/name`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub uid: Option<i64>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub gid: Option<i64>,
    pub sops_file: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub restart_units: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub reload_units: Vec<String>,
    /// Emitted by the module for `restartTriggers`; not used by the installer.
    #[allow(dead_code)]
    #[serde(default)]
    pub sops_file_hash: Option<String>,
    /// Emitted by the module (such secrets go to the for-users manifest); informational here.
    #[allow(dead_code)]
    #[serde(default)]
    pub needed_for_users: Option<bool>,
}

/// One `sops.templates.<name>` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub content: Option<String>,
    /// Template source file; used when `content` is empty (the module defaults it to a store
    /// file holding `content`).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub uid: Option<i64>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub gid: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub restart_units: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub reload_units: Vec<String>,
}

fn default_mount_point() -> String {
    "/run/secrets.d".into()
}
fn default_symlink_path() -> String {
    "/run/secrets".into()
}
fn default_keep_generations() -> i64 {
    1
}
fn yes() -> bool {
    true
}

/// Nix renders empty lists/maps as `[]`/`{}`, but hand-written manifests (and Go's encoder for
/// nil slices) use `null`; both mean "none".
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Parses manifest JSON. The error text is serde's (line and column, the unknown field name).
pub fn parse(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A manifest exactly as sops-nix's `manifest-for.nix` renders it (every key it emits).
    pub const NIX_RENDERED: &str = r#"{"ageKeyFile":"/var/lib/sops-nix/key.txt","ageSshKeyPaths":["/etc/ssh/ssh_host_ed25519_key"],"gnupgHome":null,"keepGenerations":1,"logging":{"keyImport":true,"secretChanges":true},"placeholderBySecretName":{"db":"<SOPS:1b2c:PLACEHOLDER>"},"secrets":[{"format":"yaml","gid":0,"group":"keys","key":"db","mode":"0440","name":"db","neededForUsers":false,"owner":null,"path":"/run/secrets/db","reloadUnits":[],"restartUnits":["postgresql.service"],"sopsFile":"/nix/store/abc-secrets.yaml","sopsFileHash":"00ff","uid":0}],"secretsMountPoint":"/run/secrets.d","sshKeyPaths":["/etc/ssh/ssh_host_rsa_key"],"symlinkPath":"/run/secrets","templates":[{"content":"pw=<SOPS:1b2c:PLACEHOLDER>","file":"/nix/store/xyz-db.conf","gid":0,"group":null,"mode":"0400","name":"db.conf","owner":"postgres","path":"/run/secrets/rendered/db.conf","reloadUnits":[],"restartUnits":[],"uid":0}],"useTmpfs":false,"userMode":false}"#;

    #[test]
    fn parses_nix_rendered_manifest() {
        let m = parse(NIX_RENDERED.as_bytes()).unwrap();
        assert_eq!(m.secrets.len(), 1);
        assert_eq!(m.secrets[0].restart_units, vec!["postgresql.service"]);
        assert_eq!(m.templates[0].owner.as_deref(), Some("postgres"));
        assert_eq!(m.age_ssh_key_paths, vec!["/etc/ssh/ssh_host_ed25519_key"]);
        assert!(m.logging.secret_changes);
    }

    #[test]
    fn rejects_unknown_fields_naming_them() {
        let err = parse(br#"{"secrets":[],"symlinkPaht":"/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlinkPaht"), "{err}");
        let err = parse(br#"{"secrets":[{"name":"a","sopsFile":"/f","colour":1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn nulls_and_missing_fields_take_sops_nix_defaults() {
        let m = parse(br#"{"secrets":null,"templates":null,"ageSshKeyPaths":null}"#).unwrap();
        assert_eq!(m.secrets_mount_point, "/run/secrets.d");
        assert_eq!(m.symlink_path, "/run/secrets");
        assert_eq!(m.keep_generations, 1);
        assert!(m.secrets.is_empty());
    }
}
