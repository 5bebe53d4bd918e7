//! `clawdlets sops edit FILE`, like `sops edit`: the plaintext goes to a private RAM-backed
//! directory (`crate::editor`), $VISUAL/$EDITOR edits it, and a changed text that parses is
//! sealed again. An existing file keeps its recipients, rules and the ciphertext of every
//! unchanged value (only edited values, the MAC and `lastmodified` change); a new file is
//! encrypted like `encrypt` would (`--age` or the `.sops.yaml` rule). Text that does not parse
//! is offered back to the editor on a terminal; nothing is written until it parses.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use super::cli::{OpenArgs, encrypt_options, write_in_place};
use super::file::EncryptedFile;
use super::store::Format;
use super::tree::Tree;
use crate::editor::{private_dir, run_editor, with_interrupts_ignored, write_private_file};
use crate::exit::ExitCode;
use crate::secret::SecretBytes;

#[derive(Debug, Args)]
pub struct EditArgs {
    /// The encrypted file; created when it does not exist.
    pub file: PathBuf,
    /// For a new file: comma-separated age recipients (default: the `.sops.yaml` rule).
    #[arg(long, value_name = "R1,R2", env = "SOPS_AGE_RECIPIENTS")]
    pub age: Option<String>,
    /// For a new file: use this `.sops.yaml` instead of searching from the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Allow the plaintext on a disk-backed temp dir when no tmpfs is available (it may then
    /// survive on disk blocks).
    #[arg(long)]
    pub allow_persistent_tmp: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

pub fn run(a: EditArgs) -> anyhow::Result<ExitCode> {
    let format = a.open.format(&a.file);
    let shown = a.file.display();
    let existing = match std::fs::symlink_metadata(&a.file) {
        Ok(_) => Some(EncryptedFile::read(&a.file, format)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read '{shown}'")),
    };
    // Whatever can fail before the editor (keys, recipients) does, so nobody edits for nothing.
    let sealed = match existing {
        Some(mut file) => {
            let keys = a.open.keys.keyring()?;
            let changed = file
                .modify(&keys, |tree| -> anyhow::Result<bool> {
                    let plain = tree.emit(format)?;
                    match edit_until_parsed(&a.file, &plain, format, a.allow_persistent_tmp)? {
                        Some(edited) => {
                            *tree = edited;
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                })
                .with_context(|| format!("cannot edit '{shown}'"))?;
            changed.then_some(file)
        }
        None => {
            let opts = encrypt_options(
                &a.file,
                a.age.as_deref(),
                None,
                false,
                None,
                a.config.as_deref(),
            )
            .with_context(|| format!("cannot create '{shown}'"))?;
            edit_until_parsed(
                &a.file,
                &SecretBytes::default(),
                format,
                a.allow_persistent_tmp,
            )?
            .map(|tree| EncryptedFile::encrypt(&tree, format, &opts))
            .transpose()
            .with_context(|| format!("cannot encrypt '{shown}'"))?
        }
    };
    let Some(sealed) = sealed else {
        eprintln!("'{shown}': unchanged, nothing written");
        return Ok(ExitCode::Success);
    };
    write_in_place(&a.file, &sealed.to_bytes()?)?;
    tracing::info!(event = "sops_edited", file = %shown, "file edited");
    eprintln!("saved '{shown}'");
    Ok(ExitCode::Success)
}

/// Runs the editor on `original` until the text parses as `format`; `None` when it comes back
/// unchanged. On a terminal, text that does not parse goes back to the editor as the person
/// left it; elsewhere it is an error. The plaintext directory is wiped on every way out.
fn edit_until_parsed(
    name: &Path,
    original: &SecretBytes,
    format: Format,
    allow_persistent: bool,
) -> anyhow::Result<Option<Tree>> {
    let dir = private_dir(allow_persistent)?;
    // The file's own name, so the editor picks the right syntax.
    let path = dir.path.join(name.file_name().unwrap_or("file".as_ref()));
    write_private_file(&path, original.expose())?;
    loop {
        run_editor(&path)?;
        let edited = SecretBytes::new(
            std::fs::read(&path)
                .with_context(|| format!("cannot read back '{}'", path.display()))?,
        );
        if edited.ct_eq(original.expose()) {
            return Ok(None);
        }
        if edited.expose().trim_ascii().is_empty() {
            bail!("the edited text is empty; nothing written\nhint: to remove the file, delete it");
        }
        let problem = match Tree::parse(edited.expose(), format) {
            Ok(tree) => return Ok(Some(tree)),
            Err(e) => e,
        };
        eprintln!("error: the edited text is not valid {format}: {problem}");
        if !std::io::stdin().is_terminal() {
            bail!("nothing written");
        }
        eprint!("Enter: back to the editor; q then Enter: give up (nothing written): ");
        let mut answer = String::new();
        let read = with_interrupts_ignored(|| std::io::stdin().read_line(&mut answer));
        match read {
            Ok(0) => bail!("gave up; nothing written"),
            Ok(_) if answer.trim().eq_ignore_ascii_case("q") => bail!("gave up; nothing written"),
            Ok(_) => continue,
            Err(e) => return Err(e).context("cannot read the answer; nothing written"),
        }
    }
}
