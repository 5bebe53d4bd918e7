//! `secrets.mount`: the secrets mount is ramfs or tmpfs (statfs magic) mounted
//! nodev,nosuid,noexec (mountinfo), the symlink (`/run/secrets`) points into it, every declared
//! secret is a regular file on that mount with the manifest's owner, group and mode, and no file
//! on the mount is world-readable unless declared so.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::verify::host::Host;
use crate::verify::manifest::Manifest;
use crate::verify::report::Check;

const ID: &str = "secrets.mount";
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The filesystem magic of the filesystem holding `p`.
pub fn fs_magic(p: &Path) -> Result<i64, String> {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0)
        .map_err(|e| format!("statfs {}: {e}", p.display()))
}

pub fn magic_name(m: i64) -> String {
    match m {
        RAMFS_MAGIC => "ramfs".into(),
        TMPFS_MAGIC => "tmpfs".into(),
        0xef53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x794c_7630 => "overlayfs".into(),
        other => format!("fs magic {other:#x}"),
    }
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The per-mount options of the topmost mount at exactly `mountpoint`, from /proc/self/mountinfo.
pub fn mount_options(mountpoint: &Path) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 || Path::new(&unescape_mountinfo(f[4])) != mountpoint {
            continue;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        let fstype = f.get(dash + 1).copied().unwrap_or("?").to_string();
        found = Some((fstype, f[5].split(',').map(str::to_string).collect()));
    }
    found
}

fn expected_ids(
    host: &Host,
    s: &crate::verify::manifest::SecretEntry,
) -> (Option<u32>, Option<u32>) {
    let uid = match &s.owner {
        Some(o) => host.uid(o),
        None => Some(s.uid.unwrap_or(0)),
    };
    let gid = match (&s.group, &s.owner) {
        (Some(g), _) => host.gid(g),
        (None, _) => Some(s.gid.unwrap_or(0)),
    };
    (uid, gid)
}

pub fn run(host: &Host) -> Check {
    let manifest = match host.manifest_file() {
        Some(p) => match Manifest::load(&p) {
            Ok(m) => Some(m),
            Err(e) => {
                return Check::inconclusive(
                    ID,
                    vec![e.to_string()],
                    "pass --manifest with the sops-nix manifest.json the host uses",
                );
            }
        },
        None => None,
    };
    let (mp, link): (PathBuf, PathBuf) = match &manifest {
        Some(m) => (m.secrets_mount_point.clone(), m.symlink_path.clone()),
        None => ("/run/secrets.d".into(), "/run/secrets".into()),
    };
    let (mp_h, link_h) = (host.path(&mp), host.path(&link));
    if manifest.is_none() && !mp_h.exists() && std::fs::symlink_metadata(&link_h).is_err() {
        return Check::skip(
            ID,
            format!(
                "no secrets manifest given and neither {} nor {} exists",
                mp.display(),
                link.display()
            ),
        );
    }
    let mut bad = Vec::new();
    let mut ok = Vec::new();

    // The mount itself.
    let mp_dev = std::fs::metadata(&mp_h).map(|m| m.dev()).ok();
    match fs_magic(&mp_h) {
        Err(e) => bad.push(e),
        Ok(m) if m == RAMFS_MAGIC || m == TMPFS_MAGIC => {
            ok.push(format!("{} is {} (statfs)", mp.display(), magic_name(m)))
        }
        Ok(m) => bad.push(format!(
            "{} is on {} — secrets are on persistent storage",
            mp.display(),
            magic_name(m)
        )),
    }
    let canon = std::fs::canonicalize(&mp_h).unwrap_or(mp_h.clone());
    match mount_options(&canon) {
        None => bad.push(format!(
            "{} is not a mount point (it inherits its parent's filesystem and options)",
            mp.display()
        )),
        Some((fstype, opts)) => {
            let missing: Vec<&str> = ["nodev", "nosuid", "noexec"]
                .into_iter()
                .filter(|o| !opts.iter().any(|x| x == o))
                .collect();
            if missing.is_empty() {
                ok.push(format!("mounted {fstype} {}", opts.join(",")));
            } else {
                bad.push(format!(
                    "{} mounted {fstype} {} lacks {}",
                    mp.display(),
                    opts.join(","),
                    missing.join(",")
                ));
            }
        }
    }

    // The symlink points into the mount.
    let mut gen_dir: Option<PathBuf> = None;
    match std::fs::read_link(&link_h) {
        Err(e) => bad.push(format!(
            "{} is not a symlink into {}: {e}",
            link.display(),
            mp.display()
        )),
        Ok(target) => {
            let abs = if target.is_absolute() {
                target.clone()
            } else {
                link.parent().unwrap_or(Path::new("/")).join(&target)
            };
            if abs.starts_with(&mp)
                && !abs
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                ok.push(format!("{} -> {}", link.display(), abs.display()));
                gen_dir = Some(abs);
            } else {
                bad.push(format!(
                    "{} -> {} points outside {}",
                    link.display(),
                    abs.display(),
                    mp.display()
                ));
            }
        }
    }

    // Declared secrets.
    let mut declared: HashSet<PathBuf> = HashSet::new();
    let mut checked = 0usize;
    if let (Some(m), Some(gen_dir)) = (&manifest, &gen_dir) {
        for (rel, s) in m.files() {
            // Messages name the file as the installer lays it out (`rendered/x` for templates).
            let name = rel.display().to_string();
            let file = host.path(gen_dir.join(&rel));
            declared.insert(file.clone());
            let md = match std::fs::symlink_metadata(&file) {
                Ok(md) => md,
                Err(e) => {
                    bad.push(format!(
                        "secret {name}: {}: {e}",
                        gen_dir.join(&rel).display()
                    ));
                    continue;
                }
            };
            checked += 1;
            if !md.file_type().is_file() {
                bad.push(format!("secret {name} is not a regular file"));
                continue;
            }
            match fs_magic(&file) {
                Ok(mg) if mg == RAMFS_MAGIC || mg == TMPFS_MAGIC => {}
                Ok(mg) => bad.push(format!(
                    "secret {} is on {} (on disk)",
                    name,
                    magic_name(mg)
                )),
                Err(e) => bad.push(e),
            }
            if mp_dev.is_some() && Some(md.dev()) != mp_dev {
                bad.push(format!(
                    "secret {} is not on the secrets mount {}",
                    name,
                    mp.display()
                ));
            }
            let (uid, gid) = expected_ids(host, s);
            if uid != Some(md.uid()) {
                bad.push(format!(
                    "secret {} owner is {} (manifest: {})",
                    name,
                    host.user_name(md.uid()),
                    s.owner
                        .clone()
                        .unwrap_or_else(|| s.uid.unwrap_or(0).to_string())
                ));
            }
            if gid != Some(md.gid()) {
                bad.push(format!(
                    "secret {} group is {} (manifest: {})",
                    name,
                    host.group_name(md.gid()),
                    s.group
                        .clone()
                        .unwrap_or_else(|| s.gid.unwrap_or(0).to_string())
                ));
            }
            match s.mode_bits() {
                Err(e) => bad.push(e),
                Ok(want) => {
                    let have = md.mode() & 0o7777;
                    if have & 0o004 != 0 && want & 0o004 == 0 {
                        bad.push(format!(
                            "secret {} is world-readable ({have:04o}, manifest {want:04o})",
                            name
                        ));
                    } else if have != want {
                        bad.push(format!(
                            "secret {} mode is {have:04o} (manifest {want:04o})",
                            name
                        ));
                    }
                }
            }
            // A custom path must lead to the same file.
            if let Some(p) = &s.path
                && p != &link.join(&rel)
            {
                match (std::fs::metadata(host.path(p)), std::fs::metadata(&file)) {
                    (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev() => {}
                    _ => bad.push(format!(
                        "secret {}: {} does not lead to the installed file",
                        name,
                        p.display()
                    )),
                }
            }
        }
        ok.push(format!(
            "{checked} of {} declared secrets and templates match owner, group and mode",
            m.secrets.len() + m.templates.len()
        ));
    }

    // Nothing else on the mount is world-readable.
    let mut stack = vec![mp_h.clone()];
    let mut walked = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                walked += 1;
                if md.mode() & 0o004 != 0 && !declared.contains(&p) {
                    let shown = p
                        .strip_prefix(&host.root)
                        .map(|r| Path::new("/").join(r))
                        .unwrap_or(p.clone());
                    bad.push(format!(
                        "{} is world-readable ({:04o}) and not declared so",
                        shown.display(),
                        md.mode() & 0o7777
                    ));
                }
            }
        }
    }
    ok.push(format!(
        "{walked} files on the mount walked, none world-readable beyond the manifest"
    ));

    if !bad.is_empty() {
        let mut ev = bad;
        if ev.len() > 20 {
            let n = ev.len() - 20;
            ev.truncate(20);
            ev.push(format!("… and {n} more"));
        }
        return Check::fail(
            ID,
            ev,
            "reinstall secrets with `clawdlets secrets install` (it mounts ramfs nodev,nosuid,noexec and sets owner/mode from the manifest); remove stray files",
        );
    }
    if manifest.is_none() {
        ok.push("no manifest: owners and modes not compared".into());
        return Check::inconclusive(
            ID,
            ok,
            "pass --manifest (or set secretsManifest) to compare owners and modes",
        );
    }
    Check::pass(ID, ok)
}
