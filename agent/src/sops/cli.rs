//! `clawdlets sops decrypt|encrypt|filestatus|updatekeys|rotate|keygen` (and the entry points of
//! `edit`, `exec-env`/`exec-file` and `set`/`unset`, which have modules of their own):
//! sops-compatible commands on top of the engine. Output is built completely before a single
//! write, so a failure never leaves partial plaintext on stdout; in-place writes go through a
//! temp file + rename that keeps the original mode and owner.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};

use super::config::{SopsConfig, find_config};
use super::file::{EncryptOptions, EncryptedFile, KeyGroups};
use super::keys::{Keyring, generate_age_keypair};
use super::store::{Format, store_for};
use super::tree::{Tree, Value};
use super::walk::EncryptionRule;
use crate::exit::ExitCode;

/// Read and write SOPS files (YAML, JSON, dotenv, INI, binary) with age keys, like `sops`.
#[derive(Debug, Args)]
pub struct SopsCmd {
    #[command(subcommand)]
    pub command: SopsSub,
}

#[derive(Debug, Subcommand)]
pub enum SopsSub {
    /// Decrypt a file to stdout (identical to `sops -d`). The MAC is always verified.
    Decrypt(DecryptArgs),
    /// Encrypt a plaintext file to stdout (or in place) for age recipients.
    Encrypt(EncryptArgs),
    /// Edit an encrypted file (or create one) in $EDITOR, like `sops edit`; the plaintext stays
    /// on a private RAM filesystem and only changed values are re-encrypted.
    Edit(super::edit::EditArgs),
    /// Run a command with the file's top-level values as environment variables (like
    /// `sops exec-env`); the command replaces this process.
    ExecEnv(super::exec::ExecEnvArgs),
    /// Run a command with the decrypted file at the path `{}` stands for (like
    /// `sops exec-file`): a FIFO on a private RAM filesystem, wiped when the command ends.
    ExecFile(super::exec::ExecFileArgs),
    /// Set one value or branch in place, given as JSON (like `sops set`).
    Set(super::set::SetArgs),
    /// Remove one value or branch in place (like `sops unset`).
    Unset(super::set::UnsetArgs),
    /// Print `{"encrypted":true}` or `{"encrypted":false}` for a file, like `sops filestatus`
    /// (for hooks that refuse plaintext); needs no key.
    Filestatus(FilestatusArgs),
    /// Re-wrap the data key for the recipients `.sops.yaml` now asks for (values untouched).
    Updatekeys(UpdateKeysArgs),
    /// Generate a new data key and re-encrypt every value for the same recipients.
    Rotate(RotateArgs),
    /// Generate an age X25519 key pair (like age-keygen), or print the recipient of a key file.
    Keygen(KeygenArgs),
}

/// Where identities come from; merged with sops' environment lookup.
#[derive(Debug, Args, Default)]
pub struct KeyArgs {
    /// An age key file (AGE-SECRET-KEY-1… lines).
    #[arg(long, value_name = "FILE")]
    pub age_key_file: Vec<PathBuf>,
    /// An OpenSSH ed25519 (or RSA) private key, used both natively and converted like ssh-to-age.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
}

impl KeyArgs {
    pub(super) fn keyring(&self) -> anyhow::Result<Keyring> {
        let mut k = Keyring::interactive();
        for f in &self.age_key_file {
            k.add_age_key_file(f)?;
        }
        for f in &self.ssh_key {
            k.add_ssh_key_file(f)?;
        }
        k.add_sops_env()?;
        Ok(k)
    }
}

/// A sops file's format and the keys that open it (commands that use or change one file).
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Input format (default: from the file extension).
    #[arg(long, value_name = "T", value_parser = parse_format)]
    pub input_type: Option<Format>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

impl OpenArgs {
    /// The format of `file`: as given, else from its extension.
    pub(super) fn format(&self, file: &Path) -> Format {
        self.input_type.unwrap_or_else(|| Format::from_path(file))
    }
}

#[derive(Debug, Args)]
pub struct TypeArgs {
    /// Input format (default: from the file extension).
    #[arg(long, value_name = "T", value_parser = parse_format)]
    pub input_type: Option<Format>,
    /// Output format (default: from the file extension).
    #[arg(long, value_name = "T", value_parser = parse_format)]
    pub output_type: Option<Format>,
}

impl TypeArgs {
    /// The input and output formats for `file`: as given, else from its extension.
    fn resolve(&self, file: &Path) -> (Format, Format) {
        let from_path = || Format::from_path(file);
        (
            self.input_type.unwrap_or_else(from_path),
            self.output_type.unwrap_or_else(from_path),
        )
    }
}

pub(super) fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Print only this part of the tree, e.g. '["db"]["password"]' or '["hosts"][0]'.
    #[arg(long, value_name = "PATH")]
    pub extract: Option<String>,
    #[command(flatten)]
    pub types: TypeArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Debug, Args)]
#[group(id = "rule", multiple = false)]
pub struct RuleArgs {
    /// Encrypt only values whose key matches this regex (RE2 search).
    #[arg(long, value_name = "RE", group = "rule")]
    pub encrypted_regex: Option<String>,
    /// Leave values whose key matches this regex in plaintext.
    #[arg(long, value_name = "RE", group = "rule")]
    pub unencrypted_regex: Option<String>,
    /// Encrypt only values whose key ends with this suffix.
    #[arg(long, value_name = "S", group = "rule")]
    pub encrypted_suffix: Option<String>,
    /// Leave values whose key ends with this suffix in plaintext (default `_unencrypted`).
    #[arg(long, value_name = "S", group = "rule")]
    pub unencrypted_suffix: Option<String>,
    /// Encrypt only values after a comment matching this regex.
    #[arg(long, value_name = "RE", group = "rule")]
    pub encrypted_comment_regex: Option<String>,
    /// Leave values after a comment matching this regex in plaintext.
    #[arg(long, value_name = "RE", group = "rule")]
    pub unencrypted_comment_regex: Option<String>,
}

impl RuleArgs {
    fn rule(&self) -> Option<EncryptionRule> {
        let r = if let Some(s) = &self.encrypted_regex {
            EncryptionRule::EncryptedRegex(s.clone())
        } else if let Some(s) = &self.unencrypted_regex {
            EncryptionRule::UnencryptedRegex(s.clone())
        } else if let Some(s) = &self.encrypted_suffix {
            EncryptionRule::EncryptedSuffix(s.clone())
        } else if let Some(s) = &self.unencrypted_suffix {
            EncryptionRule::UnencryptedSuffix(s.clone())
        } else if let Some(s) = &self.encrypted_comment_regex {
            EncryptionRule::EncryptedCommentRegex(s.clone())
        } else if let Some(s) = &self.unencrypted_comment_regex {
            EncryptionRule::UnencryptedCommentRegex(s.clone())
        } else {
            return None;
        };
        Some(r)
    }
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The plaintext file.
    pub file: PathBuf,
    /// Comma-separated age recipients (age1… or ssh-ed25519 …). Default: the matching
    /// `.sops.yaml` creation rule.
    #[arg(long, value_name = "R1,R2", env = "SOPS_AGE_RECIPIENTS")]
    pub age: Option<String>,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Compute the MAC over encrypted values only (sops ≥ 3.9).
    #[arg(long)]
    pub mac_only_encrypted: bool,
    /// Shamir threshold when the creation rule has several key groups.
    #[arg(long, value_name = "N")]
    pub shamir_secret_sharing_threshold: Option<usize>,
    /// Write the result over FILE instead of stdout.
    #[arg(short = 'i', long)]
    pub in_place: bool,
    /// Use this `.sops.yaml` instead of searching from the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub types: TypeArgs,
}

#[derive(Debug, Args)]
pub struct UpdateKeysArgs {
    /// The encrypted file (always rewritten in place, like sops).
    pub file: PathBuf,
    /// Apply without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Show what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accepted for symmetry with the other commands; updatekeys always writes in place.
    #[arg(short = 'i', long, hide = true)]
    pub in_place: bool,
    /// Use this `.sops.yaml` instead of searching from the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Also add these age recipients (comma-separated) to the first key group, like sops.
    #[arg(long, value_name = "R1,R2")]
    pub add_age: Option<String>,
    /// Also remove these age recipients (comma-separated) from every key group, like sops: the
    /// new data key is never wrapped for them.
    #[arg(long, value_name = "R1,R2")]
    pub rm_age: Option<String>,
    /// Write the result over FILE instead of stdout.
    #[arg(short = 'i', long)]
    pub in_place: bool,
    #[command(flatten)]
    pub types: TypeArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Debug, Args)]
pub struct FilestatusArgs {
    /// The file to look at.
    pub file: PathBuf,
    /// Input format (default: from the file extension).
    #[arg(long, value_name = "T", value_parser = parse_format)]
    pub input_type: Option<Format>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key file here (mode 0600, refuses to overwrite) instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the recipient of an existing key file instead (like `age-keygen -y`).
    #[arg(short = 'y', long, value_name = "KEYFILE", conflicts_with = "output")]
    pub recipient_of: Option<PathBuf>,
}

/// Runs one `clawdlets sops` command.
pub fn run(cmd: SopsCmd) -> anyhow::Result<ExitCode> {
    match cmd.command {
        SopsSub::Decrypt(a) => decrypt(a),
        SopsSub::Encrypt(a) => encrypt(a),
        SopsSub::Edit(a) => super::edit::run(a),
        SopsSub::ExecEnv(a) => super::exec::exec_env(a),
        SopsSub::ExecFile(a) => super::exec::exec_file(a),
        SopsSub::Filestatus(a) => filestatus(a),
        SopsSub::Set(a) => super::set::set(a),
        SopsSub::Unset(a) => super::set::unset(a),
        SopsSub::Updatekeys(a) => updatekeys(a),
        SopsSub::Rotate(a) => rotate(a),
        SopsSub::Keygen(a) => keygen(a),
    }
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .context("cannot write to stdout")
}

/// sops' `--extract` syntax: `["key"]['key'][0]…`.
pub fn parse_extract(arg: &str) -> anyhow::Result<Vec<PathItem>> {
    let mut out = Vec::new();
    for comp in arg.split('[') {
        if comp.is_empty() {
            continue;
        }
        let inner = comp
            .strip_suffix(']')
            .ok_or_else(|| anyhow!("--extract component '{comp}' doesn't end with ]"))?;
        if let Some(q) = inner.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let s = inner[1..]
                .strip_suffix(q)
                .ok_or_else(|| anyhow!("--extract component '{comp}' has no closing quote"))?;
            out.push(PathItem::Key(s.to_string()));
        } else {
            let i = inner.parse::<usize>().map_err(|_| {
                anyhow!("--extract component '{inner}' is neither a quoted key nor an index")
            })?;
            out.push(PathItem::Index(i));
        }
    }
    Ok(out)
}

/// One `--extract` step.
#[derive(Debug, Clone, PartialEq)]
pub enum PathItem {
    Key(String),
    Index(usize),
}

fn show_extract(path: &[PathItem]) -> String {
    path.iter()
        .map(|p| match p {
            PathItem::Key(k) => format!("[\"{k}\"]"),
            PathItem::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// The output of `sops -d --extract`: a map is printed as a whole document, a string raw, any
/// other value in the output format.
pub fn extract_output(tree: &Tree, path: &[PathItem], format: Format) -> anyhow::Result<Vec<u8>> {
    let doc = tree
        .documents
        .first()
        .ok_or_else(|| anyhow!("the file has no document"))?;
    let mut cur = Value::Map(doc.clone());
    for (n, step) in path.iter().enumerate() {
        let here = || show_extract(&path[..=n]);
        cur = match (step, cur) {
            (PathItem::Key(k), Value::Map(m)) => m
                .get(k)
                .cloned()
                .ok_or_else(|| anyhow!("key not found: {}", here()))?,
            (PathItem::Index(i), Value::List(l)) => l
                .into_iter()
                .nth(*i)
                .ok_or_else(|| anyhow!("key not found: {} (index out of bounds)", here()))?,
            (PathItem::Index(_), _) => bail!("key not found: {} (the value is not a list)", here()),
            (PathItem::Key(_), _) => bail!("key not found: {} (the value is not a map)", here()),
        };
    }
    match cur {
        Value::Map(m) => {
            let mut t = tree.clone();
            t.documents[0] = m;
            Ok(t.emit(format)?.expose().to_vec())
        }
        Value::Str(s) => Ok(s.expose().to_vec()),
        other => Ok(store_for(format)?.emit_value(&other)?),
    }
}

fn decrypt(a: DecryptArgs) -> anyhow::Result<ExitCode> {
    let (input, output) = a.types.resolve(&a.file);
    let extract = a.extract.as_deref().map(parse_extract).transpose()?;
    let keys = a.keys.keyring()?;
    let bytes = read_input(&a.file)?;
    let file = EncryptedFile::parse(&bytes, input)
        .with_context(|| format!("cannot read '{}'", a.file.display()))?;
    let tree = file
        .decrypt(&keys)
        .with_context(|| format!("cannot decrypt '{}'", a.file.display()))?;
    let out = match extract {
        Some(path) => extract_output(&tree, &path, output)?,
        None => tree.emit(output)?.expose().to_vec(),
    };
    write_stdout(&out)?;
    Ok(ExitCode::Success)
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<Option<SopsConfig>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match find_config(
            &std::env::current_dir().context("cannot determine the current directory")?,
        ) {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    Ok(Some(SopsConfig::load(&path)?))
}

fn split_recipients(s: &str) -> Vec<String> {
    s.split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// How a new file is encrypted: recipients from `age` (comma-separated) or the matching
/// `.sops.yaml` creation rule, whose encryption rule, MAC mode and Shamir threshold apply unless
/// given on the command line.
pub(super) fn encrypt_options(
    file: &Path,
    age: Option<&str>,
    cli_rule: Option<EncryptionRule>,
    mac_only_encrypted: bool,
    shamir_threshold: Option<usize>,
    config: Option<&Path>,
) -> anyhow::Result<EncryptOptions> {
    let config = load_config(config)?;
    let rule = match &config {
        Some(c) => {
            if age.is_some() {
                c.rule_for(file).cloned()
            } else {
                Some(c.usable_rule_for(file)?.clone())
            }
        }
        None => None,
    };
    let key_groups = match (age, &rule) {
        (Some(list), _) => KeyGroups::single(split_recipients(list)),
        (None, Some(r)) => r.key_groups.clone(),
        (None, None) => bail!(
            "no recipients: pass --age (or SOPS_AGE_RECIPIENTS), or add a .sops.yaml with creation_rules\nhint: clawdlets sops keygen creates a key pair"
        ),
    };
    Ok(EncryptOptions {
        key_groups,
        rule: cli_rule
            .or_else(|| rule.as_ref().map(|r| r.rule.clone()))
            .unwrap_or_default(),
        mac_only_encrypted: mac_only_encrypted
            || rule.as_ref().is_some_and(|r| r.mac_only_encrypted),
        shamir_threshold: shamir_threshold.or(rule.as_ref().and_then(|r| r.shamir_threshold)),
    })
}

fn encrypt(a: EncryptArgs) -> anyhow::Result<ExitCode> {
    let (input, output) = a.types.resolve(&a.file);
    let opts = encrypt_options(
        &a.file,
        a.age.as_deref(),
        a.rule.rule(),
        a.mac_only_encrypted,
        a.shamir_secret_sharing_threshold,
        a.config.as_deref(),
    )?;
    let bytes = read_input(&a.file)?;
    let tree = Tree::parse(&bytes, input)
        .with_context(|| format!("cannot parse '{}'", a.file.display()))?;
    let file = EncryptedFile::encrypt_from(&tree, input, output, &opts)
        .with_context(|| format!("cannot encrypt '{}'", a.file.display()))?;
    let out = file.to_bytes()?;
    if a.in_place {
        write_in_place(&a.file, &out)?;
        eprintln!("encrypted '{}' in place", a.file.display());
    } else {
        write_stdout(&out)?;
    }
    Ok(ExitCode::Success)
}

fn rotate(a: RotateArgs) -> anyhow::Result<ExitCode> {
    let (input, output) = a.types.resolve(&a.file);
    let keys = a.keys.keyring()?;
    let mut file = EncryptedFile::read(&a.file, input)?;
    if a.add_age.is_some() || a.rm_age.is_some() {
        let groups = changed_groups(
            file.key_groups(),
            &split_recipients(a.add_age.as_deref().unwrap_or_default()),
            &split_recipients(a.rm_age.as_deref().unwrap_or_default()),
        )?;
        file.update_keys(&keys, groups)
            .with_context(|| format!("cannot change the recipients of '{}'", a.file.display()))?;
    }
    file.rotate(&keys)
        .with_context(|| format!("cannot rotate '{}'", a.file.display()))?;
    let out = file.with_format(output).to_bytes()?;
    if a.in_place {
        write_in_place(&a.file, &out)?;
        tracing::info!(event = "sops_rotated", file = %a.file.display(), "data key rotated");
        eprintln!("rotated the data key of '{}'", a.file.display());
    } else {
        write_stdout(&out)?;
    }
    Ok(ExitCode::Success)
}

/// `rotate --add-age/--rm-age`: additions go to the first group, removals leave every group;
/// a group left empty (no one could open its share) is refused.
fn changed_groups(
    mut groups: KeyGroups,
    add: &[String],
    remove: &[String],
) -> anyhow::Result<KeyGroups> {
    for r in add {
        super::keys::age_key::parse_recipient(r).map_err(|e| anyhow!("--add-age: {e}"))?;
    }
    let first = groups
        .0
        .first_mut()
        .ok_or_else(|| anyhow!("the file has no key group to add recipients to"))?;
    for r in add {
        if !first.contains(r) {
            first.push(r.clone());
        }
    }
    for (n, group) in groups.0.iter_mut().enumerate() {
        group.retain(|r| !remove.contains(r));
        if group.is_empty() {
            bail!(
                "removing {} would leave key group {n} without a recipient; nothing written",
                remove.join(", ")
            );
        }
    }
    Ok(groups)
}

fn updatekeys(a: UpdateKeysArgs) -> anyhow::Result<ExitCode> {
    let input = a.open.format(&a.file);
    let config = load_config(a.config.as_deref())?.ok_or_else(|| {
        anyhow!("no .sops.yaml found from the current directory up\nhint: pass --config FILE")
    })?;
    let rule = config.usable_rule_for(&a.file)?.clone();
    let mut file = EncryptedFile::read(&a.file, input)?;
    let old = file.key_groups();
    let new = KeyGroups(
        rule.key_groups
            .0
            .iter()
            .map(|g| {
                g.iter().fold(Vec::new(), |mut acc, r| {
                    if !acc.contains(r) {
                        acc.push(r.clone());
                    }
                    acc
                })
            })
            .collect(),
    );
    let new_threshold = if new.0.len() > 1 {
        rule.shamir_threshold
            .unwrap_or(file.metadata().shamir_threshold)
    } else {
        0
    };
    let old_threshold = if old.0.len() > 1 {
        file.metadata().shamir_threshold
    } else {
        0
    };
    if old == new && old_threshold == new_threshold {
        eprintln!(
            "'{}': key groups already match {}; nothing to do",
            a.file.display(),
            config.path().display()
        );
        return Ok(ExitCode::Success);
    }
    eprintln!(
        "The following changes will be made to the key groups of '{}':",
        a.file.display()
    );
    let groups = old.0.len().max(new.0.len());
    for g in 0..groups {
        eprintln!("Group {}", g + 1);
        let o = old.0.get(g).cloned().unwrap_or_default();
        let n = new.0.get(g).cloned().unwrap_or_default();
        for r in &n {
            eprintln!("{} {r}", if o.contains(r) { "   " } else { "+++" });
        }
        for r in o.iter().filter(|r| !n.contains(r)) {
            eprintln!("--- {r}");
        }
    }
    if old_threshold != new_threshold {
        eprintln!("Shamir threshold: {old_threshold} -> {new_threshold}");
    }
    if a.dry_run {
        eprintln!("dry run: nothing written");
        return Ok(ExitCode::Success);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to change the keys of '{}' without confirmation\nhint: review the changes above and pass --yes",
                a.file.display()
            );
        }
        eprint!("Is this okay? (y/n): ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("aborted: nothing written");
            return Ok(ExitCode::Failure);
        }
    }
    let keys = a.open.keys.keyring()?;
    file.update_keys_with_threshold(&keys, new, rule.shamir_threshold)
        .with_context(|| format!("cannot update the keys of '{}'", a.file.display()))?;
    write_in_place(&a.file, &file.to_bytes()?)?;
    tracing::info!(event = "sops_keys_updated", file = %a.file.display(), "data key re-wrapped");
    eprintln!("updated the keys of '{}'", a.file.display());
    Ok(ExitCode::Success)
}

/// A file is encrypted when it parses in its format and carries sops metadata; a file that does
/// not parse at all is an error, as in sops.
fn filestatus(a: FilestatusArgs) -> anyhow::Result<ExitCode> {
    let format = a.input_type.unwrap_or_else(|| Format::from_path(&a.file));
    let bytes = read_input(&a.file)?;
    let encrypted = match EncryptedFile::parse(&bytes, format) {
        Ok(_) => true,
        Err(super::SopsError::NotSops) => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read '{}'", a.file.display())),
    };
    write_stdout(format!("{{\"encrypted\":{encrypted}}}\n").as_bytes())?;
    Ok(ExitCode::Success)
}

fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = a.recipient_of {
        let mut k = Keyring::interactive();
        k.add_age_key_file(&path)?;
        k.open_protected()?;
        write_stdout(format!("{}\n", k.recipients().join("\n")).as_bytes())?;
        return Ok(ExitCode::Success);
    }
    let kp = generate_age_keypair();
    let created = super::metadata::now_rfc3339();
    let text = zeroize::Zeroizing::new(format!(
        "# created: {created}\n# public key: {}\n{}\n",
        kp.recipient,
        kp.secret.expose()
    ));
    match a.output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| {
                    format!("cannot create '{}' (it must not exist yet)", path.display())
                })?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write '{}'", path.display()))?;
            eprintln!("Public key: {}", kp.recipient);
        }
        None => {
            if std::io::stdout().is_terminal() {
                eprintln!("warning: writing a secret key to a terminal");
            }
            write_stdout(text.as_bytes())?;
            eprintln!("Public key: {}", kp.recipient);
        }
    }
    Ok(ExitCode::Success)
}

/// Replaces `path` atomically: a temp file in the same directory, created with the original mode
/// (0600 for new files) and owner, fsynced, then renamed over the original.
pub fn write_in_place(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Through a symlink to the file it names (as sops writes through it): renaming over the
    // link itself would replace it with a copy and leave the real file stale.
    let resolved;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve the symlink '{}'", path.display()))?;
        resolved.as_path()
    } else {
        path
    };
    let meta = std::fs::metadata(path).ok();
    let mode = meta.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("'{}' is not a file path", path.display()))?;
    let mut rnd = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
    let tmp = dir.join(format!(
        ".{}.clawdlets-{}",
        name.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot create '{}'", tmp.display()))?;
        if let Some(m) = &meta {
            // Keep the owner when we can (root); ignore EPERM for ordinary users.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of '{}'", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write '{}'", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace '{}'", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_paths_parse_like_sops() {
        assert_eq!(
            parse_extract(r#"["a"]['b'][2]"#).unwrap(),
            vec![
                PathItem::Key("a".into()),
                PathItem::Key("b".into()),
                PathItem::Index(2)
            ]
        );
        assert!(parse_extract(r#"["a"#).is_err());
        assert!(parse_extract(r#"[x]"#).is_err());
        assert!(parse_extract(r#"[""#).is_err());
    }
}
