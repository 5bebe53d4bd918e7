//! Change detection against the active generation and the unit restart/reload requests that
//! follow from it. Lists are written exactly where and how sops-nix writes them: appended lines in
//! `/run/nixos/activation-{restart,reload}-list` (`dry-activation-*` on dry-activate), only if
//! `/run/nixos` exists, which switch-to-configuration consumes; or, with
//! `SOPS_RESTART_UNITS_VIA_SYSTEMCTL=1`, `systemctl --no-block try-restart|try-reload-or-restart`.
//! Unlike sops-nix, an owner or mode change counts as a change too. Never logs values.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::InstallError;
use super::generation::OldGeneration;
use super::validate::Item;
use crate::secret::SecretBytes;

/// Why an item counts as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Added,
    Modified,
    /// Same content, other owner, group or mode.
    Metadata,
}

/// The difference between the active generation and the new one.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Changes {
    /// (item description, kind), in manifest order.
    pub changed: Vec<(String, ChangeKind)>,
    /// Files of the old generation that the new one no longer has (relative paths).
    pub removed: Vec<String>,
    /// Units to restart / reload, deduplicated, in first-mention order.
    pub restart: Vec<String>,
    pub reload: Vec<String>,
}

fn push_unique(list: &mut Vec<String>, seen: &mut BTreeSet<String>, units: &[String]) {
    for u in units {
        if seen.insert(u.clone()) {
            list.push(u.clone());
        }
    }
}

/// Compares every item's new bytes and ids with the old generation. `old` None = nothing to
/// compare with (first boot: sops-nix requests no restarts then, and neither do we).
pub fn detect(
    old: Option<&OldGeneration>,
    items: &[Item],
    values: &[SecretBytes],
    chown: bool,
) -> Changes {
    let Some(old) = old else {
        return Changes::default();
    };
    let mut c = Changes::default();
    let (mut seen_restart, mut seen_reload) = (BTreeSet::new(), BTreeSet::new());
    for (item, value) in items.iter().zip(values) {
        let kind = match old.read(&item.rel) {
            None => Some(ChangeKind::Added),
            Some(f) if !value.ct_eq(f.bytes.expose()) => Some(ChangeKind::Modified),
            Some(f) => {
                let ids_differ = chown && item.ids.is_some_and(|(u, g)| (u, g) != (f.uid, f.gid));
                (ids_differ || f.mode != item.mode).then_some(ChangeKind::Metadata)
            }
        };
        if let Some(kind) = kind {
            c.changed.push((item.what(), kind));
            push_unique(&mut c.restart, &mut seen_restart, &item.restart_units);
            push_unique(&mut c.reload, &mut seen_reload, &item.reload_units);
        }
    }
    let new: BTreeSet<&[String]> = items.iter().map(|i| i.rel.as_slice()).collect();
    c.removed = old
        .files()
        .into_iter()
        .filter(|f| !new.contains(f.as_slice()))
        .map(|f| f.join("/"))
        .collect();
    c.removed.sort();
    c
}

/// How restart requests are delivered.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Append to `<root>/run/nixos/{dry-,}activation-*-list`.
    ActivationLists { nixos_dir: PathBuf, dry: bool },
    /// Run `systemctl --no-block ...` (program overridable for tests); dry only prints.
    Systemctl { program: PathBuf, dry: bool },
    /// Sandbox without a systemctl override: print what would be requested.
    Report,
}

/// Delivers the requests. Returns human lines describing what was requested.
pub fn deliver(changes: &Changes, how: &Delivery) -> Result<Vec<String>, InstallError> {
    let mut said = Vec::new();
    match how {
        Delivery::ActivationLists { nixos_dir, dry } => {
            let prefix = if *dry { "dry-activation" } else { "activation" };
            for (units, which) in [(&changes.restart, "restart"), (&changes.reload, "reload")] {
                if units.is_empty() || !nixos_dir.is_dir() {
                    continue;
                }
                let file = nixos_dir.join(format!("{prefix}-{which}-list"));
                append_lines(&file, units)?;
                said.push(format!(
                    "{which}: {} (via {})",
                    units.join(" "),
                    file.display()
                ));
            }
        }
        Delivery::Systemctl { program, dry } => {
            for (units, verb) in [
                (&changes.restart, "try-restart"),
                (&changes.reload, "try-reload-or-restart"),
            ] {
                if units.is_empty() {
                    continue;
                }
                if *dry {
                    for u in units.iter() {
                        said.push(format!(
                            "would {} {u}",
                            if verb == "try-restart" {
                                "restart"
                            } else {
                                "reload"
                            }
                        ));
                    }
                    continue;
                }
                let status = std::process::Command::new(program)
                    .arg("--no-block")
                    .arg(verb)
                    .args(units.iter())
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| InstallError::Units {
                        detail: format!("cannot run '{}': {e}", program.display()),
                    })?;
                if !status.success() {
                    return Err(InstallError::Units {
                        detail: format!(
                            "'{} --no-block {verb} {}' failed with {status}",
                            program.display(),
                            units.join(" ")
                        ),
                    });
                }
                said.push(format!("{verb}: {}", units.join(" ")));
            }
        }
        Delivery::Report => {
            for (units, which) in [(&changes.restart, "restart"), (&changes.reload, "reload")] {
                if !units.is_empty() {
                    said.push(format!(
                        "would {which} (sandbox, not requested): {}",
                        units.join(" ")
                    ));
                }
            }
        }
    }
    Ok(said)
}

fn append_lines(file: &Path, units: &[String]) -> Result<(), InstallError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| InstallError::Units {
            detail: format!("cannot open '{}': {e}", file.display()),
        })?;
    let text: String = units.iter().map(|u| format!("{u}\n")).collect();
    f.write_all(text.as_bytes())
        .map_err(|e| InstallError::Units {
            detail: format!("cannot write '{}': {e}", file.display()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_lists_are_appended_only_when_the_nixos_dir_exists() {
        let d = tempfile::tempdir().unwrap();
        let nixos = d.path().join("run/nixos");
        let c = Changes {
            restart: vec!["a.service".into(), "b.service".into()],
            reload: vec!["c.service".into()],
            ..Default::default()
        };
        let how = Delivery::ActivationLists {
            nixos_dir: nixos.clone(),
            dry: false,
        };
        assert!(deliver(&c, &how).unwrap().is_empty());
        std::fs::create_dir_all(&nixos).unwrap();
        std::fs::write(nixos.join("activation-restart-list"), "x.service\n").unwrap();
        deliver(&c, &how).unwrap();
        assert_eq!(
            std::fs::read_to_string(nixos.join("activation-restart-list")).unwrap(),
            "x.service\na.service\nb.service\n"
        );
        assert_eq!(
            std::fs::read_to_string(nixos.join("activation-reload-list")).unwrap(),
            "c.service\n"
        );
        deliver(
            &c,
            &Delivery::ActivationLists {
                nixos_dir: nixos.clone(),
                dry: true,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(nixos.join("dry-activation-reload-list")).unwrap(),
            "c.service\n"
        );
    }
}
