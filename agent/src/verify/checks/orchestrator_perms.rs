//! `orchestrator.perms`: the orchestrator's runtime directory and socket (0660, group
//! clf-bots), its state directory (0700) and database (0600), all owned by the service user,
//! and no ancestor writable by anyone but root (lynis permfile/permdir style).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::verify::host::Host;
use crate::verify::report::Check;

const ID: &str = "orchestrator.perms";

struct Ctx<'a> {
    host: &'a Host<'a>,
    uid: Option<u32>,
    user: String,
    bad: Vec<String>,
    ok: Vec<String>,
}

impl Ctx<'_> {
    fn describe(&self, md: &std::fs::Metadata) -> String {
        format!(
            "{:04o} {}:{}",
            md.mode() & 0o7777,
            self.host.user_name(md.uid()),
            self.host.group_name(md.gid())
        )
    }

    fn owner(&mut self, shown: &Path, md: &std::fs::Metadata) {
        if Some(md.uid()) != self.uid {
            self.bad.push(format!(
                "{} is owned by {} (want {})",
                shown.display(),
                self.host.user_name(md.uid()),
                self.user
            ));
        }
    }

    /// Ancestors of `p` up to `/`: owned by root or the service user, not group/world writable
    /// unless sticky.
    fn ancestors(&mut self, p: &Path) {
        let mut cur = p.parent();
        while let Some(dir) = cur {
            if let Ok(md) = std::fs::metadata(self.host.path(dir)) {
                let writable = md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0;
                if (md.uid() != 0 && Some(md.uid()) != self.uid) || writable {
                    self.bad.push(format!(
                        "ancestor {} is {} (others could replace what it holds)",
                        dir.display(),
                        self.describe(&md)
                    ));
                }
            }
            cur = dir.parent();
        }
    }
}

pub fn run(host: &Host) -> Check {
    let explicit = host.cfg.orchestrator.is_some();
    let o = host.cfg.orchestrator.clone().unwrap_or_default();
    let run_dir: PathBuf = o
        .socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "/".into());
    if !explicit && !host.path(&run_dir).exists() && !host.path(&o.state_dir).exists() {
        return Check::skip(
            ID,
            format!(
                "orchestrator not installed ({} and {} absent)",
                run_dir.display(),
                o.state_dir.display()
            ),
        );
    }
    let mut c = Ctx {
        host,
        uid: host.uid(&o.user),
        user: o.user.clone(),
        bad: Vec::new(),
        ok: Vec::new(),
    };
    if c.uid.is_none() {
        c.bad
            .push(format!("service user {} does not exist", o.user));
    }
    let gid = host.gid(&o.group);
    if gid.is_none() {
        c.bad.push(format!("group {} does not exist", o.group));
    }

    // Runtime directory and socket.
    match std::fs::symlink_metadata(host.path(&run_dir)) {
        Err(e) => c.bad.push(format!("{}: {e}", run_dir.display())),
        Ok(md) if !md.is_dir() => c
            .bad
            .push(format!("{} is not a directory", run_dir.display())),
        Ok(md) => {
            c.owner(&run_dir, &md);
            if md.mode() & 0o027 != 0 {
                c.bad.push(format!(
                    "{} is {} (want no group write and no world access, e.g. 0750)",
                    run_dir.display(),
                    c.describe(&md)
                ));
            } else {
                c.ok.push(format!("{} {}", run_dir.display(), c.describe(&md)));
            }
        }
    }
    match std::fs::symlink_metadata(host.path(&o.socket)) {
        Err(e) => c.bad.push(format!("{}: {e}", o.socket.display())),
        Ok(md) if !md.file_type().is_socket() => c
            .bad
            .push(format!("{} is not a socket", o.socket.display())),
        Ok(md) => {
            c.owner(&o.socket, &md);
            let mut fine = true;
            if md.mode() & 0o777 != 0o660 {
                c.bad.push(format!(
                    "{} is {} (want 0660)",
                    o.socket.display(),
                    c.describe(&md)
                ));
                fine = false;
            }
            if Some(md.gid()) != gid {
                c.bad.push(format!(
                    "{} group is {} (want {})",
                    o.socket.display(),
                    host.group_name(md.gid()),
                    o.group
                ));
                fine = false;
            }
            if fine {
                c.ok.push(format!("{} {}", o.socket.display(), c.describe(&md)));
            }
        }
    }
    c.ancestors(&o.socket);

    // State directory and database.
    match std::fs::symlink_metadata(host.path(&o.state_dir)) {
        Err(e) => c.bad.push(format!("{}: {e}", o.state_dir.display())),
        Ok(md) if !md.is_dir() => c
            .bad
            .push(format!("{} is not a directory", o.state_dir.display())),
        Ok(md) => {
            c.owner(&o.state_dir, &md);
            if md.mode() & 0o777 != 0o700 {
                c.bad.push(format!(
                    "{} is {} (want 0700)",
                    o.state_dir.display(),
                    c.describe(&md)
                ));
            } else {
                c.ok.push(format!("{} {}", o.state_dir.display(), c.describe(&md)));
            }
        }
    }
    c.ancestors(&o.state_dir);
    for (name, required) in [
        ("state.sqlite", true),
        ("state.sqlite-wal", false),
        ("state.sqlite-shm", false),
    ] {
        let p = o.state_dir.join(name);
        match std::fs::symlink_metadata(host.path(&p)) {
            Err(_) if !required => {}
            Err(e) => c.bad.push(format!("{}: {e}", p.display())),
            Ok(md) if !md.is_file() => c.bad.push(format!("{} is not a regular file", p.display())),
            Ok(md) => {
                c.owner(&p, &md);
                if md.mode() & 0o777 != 0o600 {
                    c.bad.push(format!(
                        "{} is {} (want 0600)",
                        p.display(),
                        c.describe(&md)
                    ));
                } else {
                    c.ok.push(format!("{} {}", p.display(), c.describe(&md)));
                }
            }
        }
    }
    if c.bad.is_empty() {
        Check::pass(ID, c.ok)
    } else {
        Check::fail(
            ID,
            c.bad,
            format!(
                "restart the orchestrator unit (it creates these with the right modes) or fix them: chown {} and chmod as shown",
                o.user
            ),
        )
    }
}
