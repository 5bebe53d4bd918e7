//! `clawdlets egress-proxy`: flags, config loading, `--check-config`, listeners, SIGHUP reload.
//!
//! This module wires things together; it holds no policy logic of its own.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::config::{self, Mode, Overrides, Settings};
use super::metrics::Metrics;
use super::proxy::{self, Shared};
use super::resolve::SystemResolver;
use crate::exit::ExitCode;

/// Runs the loopback egress proxy that lets bots reach only allowlisted domains.
///
/// Settings come from --config (TOML or JSON by extension, camelCase keys; see docs/egress.md)
/// and/or the flags below. SIGHUP reloads the config file; a bad file keeps the old config.
/// Exit codes: 0 clean stop or valid config; 2 invalid config or cannot listen.
#[derive(Debug, Args)]
pub struct EgressArgs {
    /// Config file (*.toml or *.json).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address (loopback only); repeatable; replaces `listen` from the file.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Allowlist pattern (`example.com`, `*.example.com`, `.example.com`); repeatable; added to `allow`.
    #[arg(long = "allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Allowed destination port; repeatable; replaces `ports` (default 443 and 80).
    #[arg(long = "port", value_name = "N")]
    pub port: Vec<u16>,
    /// Address range that may be dialled although private/loopback/...; repeatable.
    #[arg(long = "allow-range", value_name = "CIDR")]
    pub allow_range: Vec<String>,
    /// Metrics listen address (loopback only), or `off`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// enforce (deny what is not allowed) or report (allow, log would-deny).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Validate the config and exit: 0 valid, 2 invalid.
    #[arg(long)]
    pub check_config: bool,
    /// With --check-config: print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

impl EgressArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            allow: self.allow.clone(),
            ports: self.port.clone(),
            allow_ranges: self.allow_range.clone(),
            metrics_listen: self.metrics_listen.clone(),
            mode: self.mode,
        }
    }
}

/// Entry point of `clawdlets egress-proxy`.
pub fn run(args: EgressArgs) -> anyhow::Result<ExitCode> {
    let over = args.overrides();
    let settings =
        config::load(args.config.as_deref(), &over).context("cannot load egress proxy config")?;
    for w in &settings.warnings {
        eprintln!("warning: {w}");
    }
    if args.check_config {
        print_summary(&settings, args.json);
        return Ok(ExitCode::Success);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    rt.block_on(serve(settings, args.config, over))
}

fn print_summary(s: &Settings, json: bool) {
    if json {
        let v = serde_json::json!({
            "valid": true,
            "listen": s.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "metricsListen": s.metrics_listen.map(|a| a.to_string()),
            "mode": s.mode.as_str(),
            "ports": s.default_policy.ports,
            "allowEntries": s.default_policy.allow.len(),
            "bots": s.bots.iter().map(|b| serde_json::json!({
                "name": b.name, "allowEntries": b.policy.allow.len(), "ports": b.policy.ports,
                "passwordAuth": b.password.is_some(), "maxConns": b.max_conns,
            })).collect::<Vec<_>>(),
            "allowRanges": s.address.allow_ranges.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "warnings": s.warnings,
        });
        println!("{v:#}");
    } else {
        eprintln!(
            "config ok: mode {}, {} default entries, {} bots, listen {}",
            s.mode.as_str(),
            s.default_policy.allow.len(),
            s.bots.len(),
            s.listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

async fn serve(
    settings: Settings,
    path: Option<PathBuf>,
    over: Overrides,
) -> anyhow::Result<ExitCode> {
    let mut listeners = Vec::new();
    for addr in &settings.listen {
        match TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            // The default [::1] may be missing on hosts without IPv6; an explicit address may not.
            Err(e) if !settings.listen_explicit && addr.is_ipv6() => {
                tracing::warn!(%addr, error = %e, "skipping default IPv6 listen address");
            }
            Err(source) => {
                return Err(super::Error::Listen {
                    addr: *addr,
                    source,
                }
                .into());
            }
        }
    }
    let metrics = Arc::new(Metrics::default());
    if let Some(m) = settings.metrics_listen {
        let l = TcpListener::bind(m)
            .await
            .map_err(|source| super::Error::Listen { addr: m, source })?;
        tokio::spawn(super::metrics::serve(l, metrics.clone()));
    }
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    tracing::info!(event = "egress.start", listen = %bound.join(" "), mode = settings.mode.as_str(), "egress proxy listening");
    eprintln!("egress proxy listening on {}", bound.join(" "));
    let shared = Shared::new(settings, Arc::new(SystemResolver), metrics.clone());
    for l in listeners {
        tokio::spawn(proxy::serve(l, shared.clone()));
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&shared, path.as_deref(), &over),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(event = "egress.stop", "egress proxy stopping");
    Ok(ExitCode::Success)
}

/// Loads the config again; installs it only when it is valid. Open connections keep theirs.
fn reload(shared: &Shared, path: Option<&std::path::Path>, over: &Overrides) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    match config::load(path, over) {
        Ok(new) => {
            let old = shared.config.load();
            if new.listen != old.settings.listen
                || new.metrics_listen != old.settings.metrics_listen
            {
                tracing::warn!(
                    event = "egress.reload",
                    "listen addresses changed; they take effect at the next restart"
                );
            }
            for w in &new.warnings {
                tracing::warn!(event = "egress.reload", warning = %w, "config warning");
            }
            let generation = shared.swap(new);
            shared
                .metrics
                .reloads_ok
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                event = "egress.reload",
                result = "ok",
                generation,
                "config reloaded"
            );
        }
        Err(e) => {
            shared
                .metrics
                .reloads_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(event = "egress.reload", result = "failed", error = %e, "config reload failed; keeping the previous config");
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}
