//! `clawdlets verify`: hardening checks of a live host (or of a sandbox tree under `--root`),
//! each proven against the real thing it judges — the live nftables ruleset through our own
//! evaluator, sshd's effective config, statfs/mountinfo, file owners and modes, the Nix closure,
//! systemd's view of the units — and `--remote HOST` from an operator's machine.
//!
//! Owns: the check registry, the report (human + stable JSON) and exit codes (0 all pass, 1 any
//! fail or inconclusive, 2 could not run). Must not: change the host, print secret values, or
//! turn anything it does not understand into a pass.

pub mod checks;
pub mod config;
pub mod host;
pub mod manifest;
pub mod nft;
pub mod remote;
pub mod report;
pub mod runner;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::exit::ExitCode;
use config::VerifyConfig;
use host::Host;
use report::{Check, Report};
use runner::SystemRunner;

/// Default location of the policy file the NixOS module installs.
pub const DEFAULT_CONFIG: &str = "/etc/clawdlets/verify.json";

/// Hardening checks of this host (or `--remote HOST`).
///
/// Exit codes: 0 every check passed or was skipped; 1 a check failed or was inconclusive;
/// 2 verify could not run (bad arguments, unreadable config).
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Print the JSON report (schemaVersion 1, see docs/verify.md) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Prefix every host path with DIR (check a sandbox tree instead of /).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Run only these check ids (repeatable).
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub only: Vec<String>,
    /// The sops-nix manifest.json (overrides secretsManifest from the config).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Policy file (default /etc/clawdlets/verify.json under --root, optional there).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Judge a recorded `nft -j list ruleset` document instead of the live ruleset.
    #[arg(long, value_name = "FILE")]
    pub ruleset: Option<PathBuf>,
    /// Check HOST from this machine: TCP/22 reachability and repo secret hygiene.
    #[arg(long, value_name = "HOST")]
    pub remote: Option<String>,
    /// Fleet repository for the hygiene part of --remote (default: the current directory or the
    /// nearest parent with fleet/clawdlets.json).
    #[arg(long, value_name = "DIR", requires = "remote")]
    pub repo: Option<PathBuf>,
}

/// Errors that stop verify before any check runs.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `--only` named an id that does not exist.
    #[error("unknown check id '{0}' (known: {1})")]
    UnknownCheck(String, String),
    /// The policy file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

impl VerifyError {
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::UnknownCheck(..) => "unknown_check",
            VerifyError::Config(e) => e.kind(),
        }
    }
}

/// Runs the selected checks in parallel and returns them in registry order.
pub fn run_checks(host: &Host, only: &[String]) -> Result<Vec<Check>, VerifyError> {
    let known: Vec<&str> = checks::ALL.iter().map(|d| d.id).collect();
    for id in only {
        if !known.contains(&id.as_str()) {
            return Err(VerifyError::UnknownCheck(id.clone(), known.join(", ")));
        }
    }
    let selected: Vec<&checks::Def> = checks::ALL
        .iter()
        .filter(|d| only.is_empty() || only.iter().any(|o| o == d.id))
        .collect();
    let mut out: Vec<Check> = std::thread::scope(|s| {
        let handles: Vec<_> = selected
            .iter()
            .map(|d| {
                s.spawn(move || {
                    let t = Instant::now();
                    let mut c = (d.run)(host);
                    c.id = d.id.to_string();
                    c.duration_ms = t.elapsed().as_millis() as u64;
                    c
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(&selected)
            .map(|(h, d)| {
                h.join().unwrap_or_else(|_| {
                    Check::inconclusive(
                        d.id,
                        vec!["the check panicked".into()],
                        "report this as a bug",
                    )
                })
            })
            .collect()
    });
    for c in &out {
        if c.status == report::Status::Fail {
            tracing::info!(event = "verify_check_failed", check = %c.id, "verify check failed");
        }
    }
    out.shrink_to_fit();
    Ok(out)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

fn emit(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", report.to_json());
    } else {
        let stdout = std::io::stdout();
        let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        report
            .write_human(&mut stdout.lock(), colour)
            .context("cannot write the report")?;
    }
    Ok(())
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let runner = SystemRunner::default();
    if let Some(target) = &args.remote {
        let cfg = match &args.config {
            Some(p) => VerifyConfig::load(p, false)?,
            None => VerifyConfig::default(),
        };
        let checks = remote::run(target, &cfg, args.repo.as_deref());
        let report = Report::new(
            "remote",
            target.clone(),
            checks,
            start.elapsed().as_millis() as u64,
        );
        emit(&report, args.json)?;
        return Ok(report.exit_code());
    }
    let cfg = match &args.config {
        Some(p) => VerifyConfig::load(p, false)?,
        None => {
            let p = args.root.join(DEFAULT_CONFIG.trim_start_matches('/'));
            VerifyConfig::load(&p, true)?
        }
    };
    let mut host = Host::new(args.root.clone(), cfg, &runner);
    if let Some(m) = args.manifest {
        // --manifest is a path on this machine, not under --root.
        host.manifest = Some(std::path::absolute(&m).context("cannot resolve --manifest")?);
        host.manifest_outside_root = true;
    }
    host.ruleset_file = args.ruleset;
    let checks = run_checks(&host, &args.only)?;
    let report = Report::new(
        "host",
        hostname(),
        checks,
        start.elapsed().as_millis() as u64,
    );
    emit(&report, args.json)?;
    Ok(report.exit_code())
}
