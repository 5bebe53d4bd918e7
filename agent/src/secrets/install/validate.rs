//! Manifest → validated install plan. Every rule that can be checked without a private key lives
//! here and runs in every mode (including `--check-mode manifest` at build time): octal modes,
//! names that stay inside the generation, no duplicate or overlapping files, custom link paths,
//! placeholders, unit names, owners (resolved only when installing). No file is written here; the
//! only reads are template `file`s, as sops-nix does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::InstallError;
use super::manifest::{Logging, Manifest};
use super::users::Directory;

/// Subdirectory of a generation holding rendered templates (sops-nix's `RenderedSubdir`).
pub const RENDERED: &str = "rendered";

/// The sops file formats sops-nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Binary,
    Dotenv,
    Ini,
}

impl Format {
    fn parse(s: Option<&str>) -> Option<Format> {
        Some(match s.unwrap_or("") {
            "" | "yaml" => Format::Yaml,
            "json" => Format::Json,
            "binary" => Format::Binary,
            "dotenv" => Format::Dotenv,
            "ini" => Format::Ini,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Binary => "binary",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
        }
    }

    /// Whether a `key` selects a value inside the file (yaml/json) or is ignored (whole file).
    pub fn has_keys(self) -> bool {
        matches!(self, Format::Yaml | Format::Json)
    }
}

/// How owners are determined.
#[derive(Debug, Clone, Copy)]
pub enum OwnerMode<'a> {
    /// Look names up (install).
    Resolve(&'a Directory),
    /// Look names up, but unknown names become root with a warning (dry-activate runs before
    /// the new configuration's users exist).
    Lenient(&'a Directory),
    /// Everything is root:root (`--ignore-passwd`, the neededForUsers manifest).
    Root,
    /// Owners are not looked up (check modes: users may not exist at build time).
    Skip,
}

/// One distinct sops file, decrypted once however many secrets use it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path on this machine (with `--root` applied).
    pub path: PathBuf,
    /// The path as the manifest spells it, for messages.
    pub display: String,
    pub format: Format,
    /// The first secret that names this file, for messages about the file as a whole.
    pub first_secret: String,
}

/// What goes into an item's file.
#[derive(Debug, Clone)]
pub enum Content {
    /// A value of a sops file: `key` None = the whole decrypted file.
    Secret {
        source: usize,
        key: Option<Vec<String>>,
    },
    /// A template's text with placeholders still in it.
    Template { text: Vec<u8> },
}

/// A file of the generation: a secret or a rendered template.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    pub is_template: bool,
    /// Path components inside the generation directory.
    pub rel: Vec<String>,
    /// (uid, gid); None in check modes.
    pub ids: Option<(u32, u32)>,
    pub mode: u32,
    /// A custom `path` that gets a symlink (host path), and what that symlink points to.
    pub link: Option<(PathBuf, PathBuf)>,
    pub restart_units: Vec<String>,
    pub reload_units: Vec<String>,
    pub content: Content,
}

impl Item {
    pub fn what(&self) -> String {
        if self.is_template {
            format!("template '{}'", self.name)
        } else {
            format!("secret '{}'", self.name)
        }
    }

    pub fn rel_path(&self) -> String {
        self.rel.join("/")
    }
}

/// The validated manifest, with `--root` applied to every host path.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mount: PathBuf,
    pub link: PathBuf,
    /// What the `symlinkPath` link contains: `<secretsMountPoint>/<N>` (host path under --root).
    pub mount_for_links: PathBuf,
    pub keep_generations: u64,
    pub use_tmpfs: bool,
    pub logging: Logging,
    pub items: Vec<Item>,
    pub sources: Vec<Source>,
    /// placeholder bytes → index of the secret item in `items`.
    pub placeholders: Vec<(Vec<u8>, usize)>,
    pub age_key_file: Option<PathBuf>,
    pub age_ssh_key_paths: Vec<PathBuf>,
    /// PGP key sources named in the manifest (not supported; reported, then ignored).
    pub pgp_sources: Vec<String>,
}

/// Maps a manifest path to this machine: `--root` prefixes absolute paths.
pub fn host_path(root: Option<&Path>, p: &str) -> PathBuf {
    match root {
        Some(r) if p.starts_with('/') => r.join(p.trim_start_matches('/')),
        _ => PathBuf::from(p),
    }
}

/// Normalizes an absolute path: no empty or `.` components, `..` refused.
fn clean_abs(p: &str) -> Result<String, String> {
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if !p.starts_with('/') {
        return Err(format!("'{p}' is not an absolute path"));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("'{p}' contains '..'")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Splits a name into components that stay inside the generation directory.
fn rel_components(name: &str) -> Result<Vec<String>, String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains('\0') {
        return Err("the name contains a NUL byte".into());
    }
    if name.starts_with('/') {
        return Err(format!(
            "name '{name}' is absolute; names are relative to the secrets directory"
        ));
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" => return Err(format!("name '{name}' has an empty path component")),
            "." | ".." => {
                return Err(format!(
                    "name '{name}' contains '{c}' and would escape the secrets directory"
                ));
            }
            c if c.len() > 255 => {
                return Err(format!(
                    "name '{name}' has a component longer than 255 bytes"
                ));
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

fn parse_mode(mode: Option<&str>) -> Result<u32, String> {
    let m = mode.unwrap_or("0400");
    let v = u32::from_str_radix(m, 8).map_err(|_| format!("mode '{m}' is not an octal number"))?;
    if v > 0o7777 {
        return Err(format!("mode '{m}' is larger than 7777"));
    }
    Ok(v)
}

fn check_units(what: &str, units: &[String]) -> Result<(), InstallError> {
    for u in units {
        if u.is_empty()
            || u.starts_with('-')
            || u.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(InstallError::invalid(
                what,
                format!("unit name {u:?} is not a valid systemd unit name"),
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resolve_ids(
    what: &str,
    owners: OwnerMode<'_>,
    owner: Option<&str>,
    uid: Option<i64>,
    group: Option<&str>,
    gid: Option<i64>,
) -> Result<Option<(u32, u32)>, InstallError> {
    let to_id = |v: i64, field: &str| {
        u32::try_from(v)
            .map_err(|_| InstallError::invalid(what, format!("{field} {v} is out of range")))
    };
    // The module asserts "owner XOR uid" and "group XOR gid"; enforce it for hand-written files.
    if owner.is_some() && uid.is_some_and(|u| u != 0) {
        return Err(InstallError::invalid(
            what,
            "both owner and a non-zero uid are set; set only one",
        ));
    }
    if group.is_some() && gid.is_some_and(|g| g != 0) {
        return Err(InstallError::invalid(
            what,
            "both group and a non-zero gid are set; set only one",
        ));
    }
    let uid_n = to_id(uid.unwrap_or(0), "uid")?;
    let gid_n = to_id(gid.unwrap_or(0), "gid")?;
    let (dir, lenient) = match owners {
        OwnerMode::Skip => return Ok(None),
        OwnerMode::Root => return Ok(Some((0, 0))),
        OwnerMode::Resolve(d) => (d, false),
        OwnerMode::Lenient(d) => (d, true),
    };
    let unknown = |e: InstallError, fallback: u32| {
        if lenient {
            tracing::warn!(error = %e, "assuming id {fallback} for the dry run");
            Ok(fallback)
        } else {
            Err(e)
        }
    };
    let (u, primary) = match owner {
        Some(name) => match dir.user(name) {
            Some(ids) => (ids.uid, Some(ids.gid)),
            None => (
                unknown(
                    InstallError::UnknownUser {
                        what: what.into(),
                        name: name.into(),
                    },
                    0,
                )?,
                Some(0),
            ),
        },
        None => (uid_n, None),
    };
    let g = match group {
        Some(name) => match dir.group(name) {
            Some(g) => g,
            None => unknown(
                InstallError::UnknownGroup {
                    what: what.into(),
                    name: name.into(),
                },
                0,
            )?,
        },
        // Hand-written manifests may give only an owner; the module always fills `group` with
        // the owner's primary group, so do the same when no gid was given either.
        None if gid.is_none() => primary.unwrap_or(gid_n),
        None => gid_n,
    };
    Ok(Some((u, g)))
}

/// Validates the manifest and builds the plan. `root` is `--root`; `runtime_dir` substitutes `%r`
/// in user mode.
pub fn plan(
    m: &Manifest,
    root: Option<&Path>,
    owners: OwnerMode<'_>,
    runtime_dir: Option<&str>,
) -> Result<Plan, InstallError> {
    let subst = |p: &str| -> String {
        if !m.user_mode {
            return p.to_string();
        }
        // sops-nix: `%%` → `%`, `%r` → $XDG_RUNTIME_DIR.
        p.split("%%")
            .map(|part| part.replace("%r", runtime_dir.unwrap_or("%r")))
            .collect::<Vec<_>>()
            .join("%")
    };
    let mount_l = clean_abs(&subst(&m.secrets_mount_point))
        .map_err(|d| InstallError::invalid("secretsMountPoint", d))?;
    let link_l =
        clean_abs(&subst(&m.symlink_path)).map_err(|d| InstallError::invalid("symlinkPath", d))?;
    if mount_l == "/" || link_l == "/" {
        return Err(InstallError::invalid(
            "manifest",
            "secretsMountPoint and symlinkPath must not be '/'",
        ));
    }
    let inside = |p: &str, dir: &str| p == dir || p.starts_with(&format!("{dir}/"));
    if inside(&link_l, &mount_l) || inside(&mount_l, &link_l) {
        return Err(InstallError::invalid(
            "manifest",
            format!(
                "symlinkPath '{link_l}' and secretsMountPoint '{mount_l}' must not contain each other"
            ),
        ));
    }
    let keep_generations = u64::try_from(m.keep_generations).map_err(|_| {
        InstallError::invalid(
            "keepGenerations",
            format!("{} is negative", m.keep_generations),
        )
    })?;
    if m.gnupg_home.as_deref().is_some_and(|h| !h.is_empty()) {
        if !m.ssh_key_paths.is_empty() {
            return Err(InstallError::invalid(
                "manifest",
                "gnupgHome and sshKeyPaths are mutually exclusive",
            ));
        }
        if m.age_key_file.as_deref().is_some_and(|f| !f.is_empty()) {
            return Err(InstallError::invalid(
                "manifest",
                "gnupgHome and ageKeyFile are mutually exclusive",
            ));
        }
    }

    let mut items = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut source_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut names = BTreeSet::new();
    let has_templates = !m.templates.is_empty();
    let mut placeholders = Vec::new();
    let mut seen_placeholders = BTreeMap::new();

    for s in &m.secrets {
        let what = format!("secret '{}'", s.name);
        let rel = rel_components(&s.name).map_err(|d| InstallError::invalid(&what, d))?;
        if has_templates && rel[0] == RENDERED {
            return Err(InstallError::invalid(
                &what,
                format!("the name collides with the '{RENDERED}/' directory that holds templates"),
            ));
        }
        if !names.insert(s.name.clone()) {
            return Err(InstallError::invalid(&what, "the name is declared twice"));
        }
        let mode = parse_mode(s.mode.as_deref()).map_err(|d| InstallError::invalid(&what, d))?;
        let format = Format::parse(s.format.as_deref()).ok_or_else(|| {
            InstallError::invalid(
                &what,
                format!("unsupported format '{}'", s.format.as_deref().unwrap_or("")),
            )
        })?;
        if s.sops_file.is_empty() {
            return Err(InstallError::invalid(&what, "sopsFile is empty"));
        }
        let source = match source_index.get(&s.sops_file) {
            Some(&i) => {
                if sources[i].format != format {
                    return Err(InstallError::invalid(
                        &what,
                        format!(
                            "declares '{}' as {}, but secret '{}' declared it as {}",
                            s.sops_file,
                            format.name(),
                            sources[i].first_secret,
                            sources[i].format.name()
                        ),
                    ));
                }
                i
            }
            None => {
                sources.push(Source {
                    path: host_path(root, &s.sops_file),
                    display: s.sops_file.clone(),
                    format,
                    first_secret: s.name.clone(),
                });
                source_index.insert(s.sops_file.clone(), sources.len() - 1);
                sources.len() - 1
            }
        };
        let key_s = s.key.clone().unwrap_or_else(|| s.name.clone());
        let key = if !format.has_keys() || key_s.is_empty() {
            None
        } else {
            let parts: Vec<String> = key_s.split('/').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                return Err(InstallError::invalid(
                    &what,
                    format!("key '{key_s}' has an empty component"),
                ));
            }
            Some(parts)
        };
        check_units(&what, &s.restart_units)?;
        check_units(&what, &s.reload_units)?;
        let ids = resolve_ids(
            &what,
            owners,
            s.owner.as_deref(),
            s.uid,
            s.group.as_deref(),
            s.gid,
        )?;
        if has_templates {
            let ph = m.placeholder_by_secret_name.get(&s.name).ok_or_else(|| {
                InstallError::invalid(
                    &what,
                    "no entry in placeholderBySecretName (needed when templates exist)",
                )
            })?;
            if ph.is_empty() {
                return Err(InstallError::invalid(&what, "its placeholder is empty"));
            }
            if let Some(other) = seen_placeholders.insert(ph.clone(), s.name.clone()) {
                return Err(InstallError::invalid(
                    &what,
                    format!("shares its placeholder with secret '{other}'"),
                ));
            }
            placeholders.push((ph.as_bytes().to_vec(), items.len()));
        }
        items.push(Item {
            name: s.name.clone(),
            is_template: false,
            rel,
            ids,
            mode,
            link: None,
            restart_units: s.restart_units.clone(),
            reload_units: s.reload_units.clone(),
            content: Content::Secret { source, key },
        });
        let idx = items.len() - 1;
        items[idx].link = custom_link(
            root,
            &link_l,
            &mount_l,
            &items[idx],
            s.path.as_deref().map(&subst),
        )?;
    }

    let mut template_names = BTreeSet::new();
    for t in &m.templates {
        let what = format!("template '{}'", t.name);
        let mut rel = vec![RENDERED.to_string()];
        rel.extend(rel_components(&t.name).map_err(|d| InstallError::invalid(&what, d))?);
        if !template_names.insert(t.name.clone()) {
            return Err(InstallError::invalid(&what, "the name is declared twice"));
        }
        let mode = parse_mode(t.mode.as_deref()).map_err(|d| InstallError::invalid(&what, d))?;
        check_units(&what, &t.restart_units)?;
        check_units(&what, &t.reload_units)?;
        let text = match (t.content.as_deref(), t.file.as_deref()) {
            (Some(c), _) if !c.is_empty() => c.as_bytes().to_vec(),
            (_, Some(f)) if !f.is_empty() => {
                let p = host_path(root, f);
                std::fs::read(&p).map_err(|e| InstallError::Template {
                    template: t.name.clone(),
                    detail: format!("cannot read file '{}': {e}", p.display()),
                })?
            }
            _ => {
                return Err(InstallError::invalid(
                    &what,
                    "neither content nor file is set",
                ));
            }
        };
        let ids = resolve_ids(
            &what,
            owners,
            t.owner.as_deref(),
            t.uid,
            t.group.as_deref(),
            t.gid,
        )?;
        items.push(Item {
            name: t.name.clone(),
            is_template: true,
            rel,
            ids,
            mode,
            link: None,
            restart_units: t.restart_units.clone(),
            reload_units: t.reload_units.clone(),
            content: Content::Template { text },
        });
        let idx = items.len() - 1;
        items[idx].link = custom_link(
            root,
            &link_l,
            &mount_l,
            &items[idx],
            t.path.as_deref().map(&subst),
        )?;
    }

    check_overlaps(&items)?;
    let mut links = BTreeMap::new();
    for it in &items {
        if let Some((p, _)) = &it.link
            && let Some(other) = links.insert(p.clone(), it.what())
        {
            return Err(InstallError::invalid(
                it.what(),
                format!("path '{}' is also used by {other}", p.display()),
            ));
        }
    }

    let mount = host_path(root, &mount_l);
    Ok(Plan {
        link: host_path(root, &link_l),
        mount_for_links: mount.clone(),
        mount,
        keep_generations,
        use_tmpfs: m.use_tmpfs,
        logging: m.logging.clone(),
        items,
        sources,
        placeholders,
        age_key_file: m
            .age_key_file
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(|f| host_path(root, f)),
        age_ssh_key_paths: m
            .age_ssh_key_paths
            .iter()
            .map(|p| host_path(root, p))
            .collect(),
        pgp_sources: m
            .ssh_key_paths
            .iter()
            .cloned()
            .chain(m.gnupg_home.iter().filter(|h| !h.is_empty()).cloned())
            .collect(),
    })
}

/// The symlink for a custom `path`, if it differs from where the file is anyway.
fn custom_link(
    root: Option<&Path>,
    link_l: &str,
    mount_l: &str,
    item: &Item,
    path: Option<String>,
) -> Result<Option<(PathBuf, PathBuf)>, InstallError> {
    let Some(path) = path else { return Ok(None) };
    let default = format!("{link_l}/{}", item.rel_path());
    let p =
        clean_abs(&path).map_err(|d| InstallError::invalid(item.what(), format!("path: {d}")))?;
    if p == default {
        return Ok(None);
    }
    for (dir, label) in [(link_l, "symlinkPath"), (mount_l, "secretsMountPoint")] {
        if p == dir || p.starts_with(&format!("{dir}/")) {
            return Err(InstallError::invalid(
                item.what(),
                format!(
                    "path '{p}' lies inside {label} '{dir}'; only '{default}' is allowed there"
                ),
            ));
        }
    }
    // The link points through the stable symlinkPath, so it never needs updating on a switch.
    Ok(Some((host_path(root, &p), host_path(root, &default))))
}

/// Two items may not share a file, and no file may sit where another needs a directory.
fn check_overlaps(items: &[Item]) -> Result<(), InstallError> {
    let mut files: BTreeMap<&[String], String> = BTreeMap::new();
    for it in items {
        if let Some(other) = files.insert(&it.rel, it.what()) {
            return Err(InstallError::invalid(
                it.what(),
                format!("'{}' is also written by {other}", it.rel_path()),
            ));
        }
    }
    for it in items {
        for n in 1..it.rel.len() {
            if let Some(other) = files.get(&it.rel[..n]) {
                return Err(InstallError::invalid(
                    it.what(),
                    format!(
                        "'{}' needs '{}' to be a directory, but {other} is a file there",
                        it.rel_path(),
                        it.rel[..n].join("/")
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::manifest::parse;
    use super::*;

    fn plan_of(json: &str) -> Result<Plan, InstallError> {
        plan(
            &parse(json.as_bytes()).unwrap(),
            None,
            OwnerMode::Skip,
            None,
        )
    }

    fn err_of(json: &str) -> String {
        plan_of(json).unwrap_err().to_string()
    }

    #[test]
    fn nix_rendered_manifest_plans() {
        let p = plan(
            &parse(super::super::manifest::tests::NIX_RENDERED.as_bytes()).unwrap(),
            None,
            OwnerMode::Skip,
            None,
        );
        // The fixture's template file does not exist, but its content is non-empty.
        let p = p.unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[1].rel, vec!["rendered", "db.conf"]);
        assert!(p.items[0].link.is_none(), "default path needs no link");
        assert_eq!(p.items[0].mode, 0o440);
    }

    #[test]
    fn names_escaping_the_generation_are_refused() {
        for name in [
            "../etc/shadow",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "",
        ] {
            let e = err_of(&format!(
                r#"{{"secrets":[{{"name":"{name}","sopsFile":"/s.yaml"}}]}}"#
            ));
            assert!(e.contains("secret"), "{name}: {e}");
        }
    }

    #[test]
    fn duplicates_and_file_dir_overlaps_are_refused() {
        let e =
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s"},{"name":"a","sopsFile":"/s"}]}"#);
        assert!(e.contains("declared twice"), "{e}");
        let e =
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s"},{"name":"a/b","sopsFile":"/s"}]}"#);
        assert!(e.contains("to be a directory"), "{e}");
        let e = err_of(
            r#"{"secrets":[{"name":"a","sopsFile":"/s","path":"/etc/x"},{"name":"b","sopsFile":"/s","path":"/etc//x"}]}"#,
        );
        assert!(e.contains("also used by secret 'a'"), "{e}");
    }

    #[test]
    fn bad_modes_formats_paths_and_units_are_refused() {
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","mode":"0999"}]}"#).contains("octal")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","mode":"17777"}]}"#).contains("7777")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","format":"toml"}]}"#)
                .contains("toml")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","path":"/etc/../x"}]}"#)
                .contains("..")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","path":"/run/secrets.d/1/a"}]}"#)
                .contains("inside")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","restartUnits":["x\nb"]}]}"#)
                .contains("unit")
        );
        assert!(
            err_of(r#"{"secrets":[{"name":"a","sopsFile":"/s","reloadUnits":["--all"]}]}"#)
                .contains("unit")
        );
        assert!(err_of(r#"{"keepGenerations":-1}"#).contains("negative"));
        assert!(err_of(r#"{"symlinkPath":"/run/secrets.d/x"}"#).contains("contain"));
    }

    #[test]
    fn same_file_with_two_formats_is_refused() {
        let e = err_of(
            r#"{"secrets":[{"name":"a","sopsFile":"/s","format":"yaml"},{"name":"b","sopsFile":"/s","format":"json"}]}"#,
        );
        assert!(e.contains("declared it as yaml"), "{e}");
    }

    #[test]
    fn templates_need_placeholders_and_content() {
        let e = err_of(
            r#"{"secrets":[{"name":"a","sopsFile":"/s"}],"templates":[{"name":"t","content":"x"}]}"#,
        );
        assert!(e.contains("placeholderBySecretName"), "{e}");
        let e = err_of(r#"{"templates":[{"name":"t"}]}"#);
        assert!(e.contains("neither content nor file"), "{e}");
        let e = err_of(
            r#"{"secrets":[{"name":"rendered","sopsFile":"/s"}],"templates":[{"name":"t","content":"x"}],"placeholderBySecretName":{"rendered":"P"}}"#,
        );
        assert!(e.contains("collides"), "{e}");
    }

    #[test]
    fn keys_split_on_slash_and_empty_key_means_whole_file() {
        let p = plan_of(
            r#"{"secrets":[{"name":"a","key":"db/pw","sopsFile":"/s"},{"name":"b","key":"","sopsFile":"/t"},{"name":"c","key":"x","sopsFile":"/u","format":"binary"}]}"#,
        )
        .unwrap();
        let keys: Vec<_> = p
            .items
            .iter()
            .map(|i| match &i.content {
                Content::Secret { key, .. } => key.clone(),
                Content::Template { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            keys,
            vec![Some(vec!["db".to_string(), "pw".to_string()]), None, None]
        );
        assert_eq!(p.sources.len(), 3);
    }

    #[test]
    fn owners_resolve_and_unknown_ones_are_named() {
        let m =
            parse(br#"{"secrets":[{"name":"a","sopsFile":"/s","owner":"root","group":"12345"}]}"#)
                .unwrap();
        let d = Directory::new(None);
        let p = plan(&m, None, OwnerMode::Resolve(&d), None).unwrap();
        assert_eq!(p.items[0].ids, Some((0, 12345)));
        let m =
            parse(br#"{"secrets":[{"name":"a","sopsFile":"/s","owner":"nobody-clf-x"}]}"#).unwrap();
        let e = plan(&m, None, OwnerMode::Resolve(&d), None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "secret 'a': unknown user 'nobody-clf-x'");
        let m =
            parse(br#"{"secrets":[{"name":"a","sopsFile":"/s","owner":"root","uid":5}]}"#).unwrap();
        assert!(plan(&m, None, OwnerMode::Resolve(&d), None).is_err());
    }

    #[test]
    fn root_prefixes_every_host_path() {
        let m = parse(
            br#"{"secrets":[{"name":"a","sopsFile":"/var/lib/s.yaml","path":"/etc/app/a"}],"ageKeyFile":"/var/lib/sops-nix/key.txt"}"#,
        )
        .unwrap();
        let p = plan(&m, Some(Path::new("/sb")), OwnerMode::Skip, None).unwrap();
        assert_eq!(p.mount, PathBuf::from("/sb/run/secrets.d"));
        assert_eq!(p.link, PathBuf::from("/sb/run/secrets"));
        assert_eq!(p.sources[0].path, PathBuf::from("/sb/var/lib/s.yaml"));
        assert_eq!(
            p.age_key_file,
            Some(PathBuf::from("/sb/var/lib/sops-nix/key.txt"))
        );
        assert_eq!(
            p.items[0].link,
            Some((
                PathBuf::from("/sb/etc/app/a"),
                PathBuf::from("/sb/run/secrets/a")
            ))
        );
    }

    #[test]
    fn user_mode_substitutes_runtime_dir() {
        let m = parse(
            br#"{"userMode":true,"secretsMountPoint":"%r/secrets.d","symlinkPath":"%r/secrets"}"#,
        )
        .unwrap();
        let p = plan(&m, None, OwnerMode::Skip, Some("/run/user/1000")).unwrap();
        assert_eq!(p.mount, PathBuf::from("/run/user/1000/secrets.d"));
    }
}
