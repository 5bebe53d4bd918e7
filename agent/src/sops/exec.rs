//! `clawdlets sops exec-env` and `exec-file`, like sops': run a shell command with the decrypted
//! values in its environment, or with the decrypted file at the path `{}` stands for.
//!
//! Differences from sops, each to keep plaintext in fewer places: `exec-env` replaces this
//! process with the command (sops' `--same-process`), so no decrypted copy outlives the `exec`
//! here, and the command's exit status is the process's; a value that spans lines stays one
//! variable (sops splits it into stray entries). `exec-file` puts its FIFO (or, with
//! `--no-fifo`, its 0600 file) in a private directory on a RAM filesystem (`crate::editor`), not
//! under /tmp, and wipes it when the command ends, however it ends.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Args;

use super::cli::{OpenArgs, parse_format};
use super::file::EncryptedFile;
use super::store::Format;
use super::tree::{MapItem, Tree, Value};
use crate::editor::{private_dir, run_in_foreground, write_private_file};
use crate::exit::ExitCode;

#[derive(Debug, Args)]
pub struct ExecEnvArgs {
    /// The encrypted file; its top-level keys become variables.
    pub file: PathBuf,
    /// The command, run by /bin/sh -c.
    pub command: String,
    /// Start the command with only the decrypted variables, none of this environment.
    #[arg(long)]
    pub pristine: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct ExecFileArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// The command, run by /bin/sh -c; every `{}` is replaced by the plaintext file's path.
    pub command: String,
    /// A regular 0600 file instead of a FIFO (for commands that read the file more than once or
    /// seek in it).
    #[arg(long)]
    pub no_fifo: bool,
    /// The plaintext file's name (default `tmp-file`), e.g. to give the command an extension.
    #[arg(long, value_name = "NAME")]
    pub filename: Option<String>,
    /// Start the command without this environment.
    #[arg(long)]
    pub pristine: bool,
    /// Format of the plaintext file (default: the input format).
    #[arg(long, value_name = "T", value_parser = parse_format)]
    pub output_type: Option<Format>,
    /// Allow the plaintext on a disk-backed temp dir when no tmpfs is available.
    #[arg(long)]
    pub allow_persistent_tmp: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

fn decrypt(file: &Path, open: &OpenArgs) -> anyhow::Result<Tree> {
    let keys = open.keys.keyring()?;
    EncryptedFile::read(file, open.format(file))?
        .decrypt(&keys)
        .with_context(|| format!("cannot decrypt '{}'", file.display()))
}

fn shell(command: &str, pristine: bool) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    if pristine {
        cmd.env_clear();
    }
    cmd
}

/// The variables of `exec-env`: every top-level key with a scalar value (null: empty), in file
/// order. Complex values and names the environment cannot hold are refused by key, never by value.
fn variables(tree: &Tree) -> anyhow::Result<Vec<(OsString, OsString)>> {
    let mut out = Vec::new();
    let pairs = tree.documents.first().into_iter().flat_map(|doc| &doc.0);
    for item in pairs {
        let MapItem::Pair(key, value) = item else {
            continue;
        };
        let value = match value {
            Value::Null => Vec::new(),
            v => match v.to_secret_bytes() {
                Some(b) => b.expose().to_vec(),
                None => bail!("cannot use complex value in environment; offending key {key}"),
            },
        };
        if key.is_empty() || key.contains(['=', '\0']) {
            bail!("'{key}' cannot be an environment variable name");
        }
        if value.contains(&0) {
            bail!("the value of {key} contains a NUL byte, which the environment cannot hold");
        }
        out.push((OsString::from(key), OsString::from_vec(value)));
    }
    Ok(out)
}

pub fn exec_env(a: ExecEnvArgs) -> anyhow::Result<ExitCode> {
    let tree = decrypt(&a.file, &a.open)?;
    let vars = variables(&tree)?;
    drop(tree);
    let mut cmd = shell(&a.command, a.pristine);
    cmd.envs(vars);
    // Only returns when the exec failed.
    let e = cmd.exec();
    Err(e).context("cannot run /bin/sh")
}

pub fn exec_file(a: ExecFileArgs) -> anyhow::Result<ExitCode> {
    let output = a.output_type.unwrap_or(a.open.format(&a.file));
    let name = a.filename.as_deref().unwrap_or("tmp-file");
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("--filename must be a plain file name, got '{name}'");
    }
    let plaintext = decrypt(&a.file, &a.open)?.emit(output)?;
    let dir = private_dir(a.allow_persistent_tmp)?;
    let path = dir.path.join(name);
    let Some(shown) = path
        .to_str()
        .filter(|p| !p.contains(['\'', '"', ' ', '$', '`', '\\']))
    else {
        bail!(
            "the plaintext path '{}' has characters the command line would misread\nhint: set XDG_RUNTIME_DIR to a plain path",
            path.display()
        );
    };
    let command = a.command.replace("{}", shown);
    let status = if a.no_fifo {
        write_private_file(&path, plaintext.expose())?;
        run_in_foreground(&mut shell(&command, a.pristine))
    } else {
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .with_context(|| format!("cannot create the FIFO '{}'", path.display()))?;
        std::thread::scope(|s| {
            let feeder = s.spawn(|| feed_fifo(&path, plaintext.expose()));
            let status = run_in_foreground(&mut shell(&command, a.pristine));
            if !feeder.is_finished() {
                drain_fifo(&path, &feeder);
            }
            let _fed_or_not = feeder.join();
            status
        })
    };
    drop(dir);
    let status = status.context("cannot run /bin/sh")?;
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    Ok(match code {
        0 => ExitCode::Success,
        c => ExitCode::Passthrough(u8::try_from(c).unwrap_or(1)),
    })
}

/// The command ended without reading the whole FIFO: become its reader, so the feeder's open
/// (which may not even have started yet) and its writes return, and discard what it writes.
fn drain_fifo(path: &Path, feeder: &std::thread::ScopedJoinHandle<'_, std::io::Result<()>>) {
    use std::io::Read as _;
    let Ok(fd) = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    let mut sink = std::fs::File::from(fd);
    let mut buf = zeroize::Zeroizing::new([0u8; 8192]);
    while !feeder.is_finished() {
        match sink.read(&mut buf[..]) {
            Ok(n) if n > 0 => {}
            // No writer yet, or nothing to read yet.
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(_) => return,
        }
    }
}

/// Writes the plaintext into the FIFO once a reader opens it.
fn feed_fifo(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes)
}
