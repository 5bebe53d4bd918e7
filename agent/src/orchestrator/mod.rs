//! The orchestrator daemon (`clawdlets orchestrator serve`): the bots' control plane on a unix
//! socket with a SQLite state store. It owns caller identity (SO_PEERCRED, never the request
//! body), the job queue, cattle bootstrap tokens, per-VM request signing and the cattle
//! backends. It must not hold long-lived cloud credentials in memory beyond one API call, write
//! secret values to the database or logs, or trust any identity a client claims.
//!
//! Code map: `config` (three-stage config), `listen` (sockets), `peer` (identity), `http`/`api`
//! (server and routes), `store` (SQLite writer with group commit, migrations), `queue` (job semantics),
//! `limits`, `tokens`, `vmauth`, `cattle` (handlers, backends, VM agent), `schedule`, `notify`,
//! `audit`, `metrics`, `client` (small HTTP client for the CLI and the VM agent).

pub mod api;
pub mod audit;
pub mod cattle;
pub mod client;
pub mod clock;
pub mod config;
pub mod http;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod queue;
pub mod schedule;
pub mod store;
pub mod tokens;
pub mod vmauth;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// Errors of the orchestrator's setup (request-time errors are `api::ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A configuration value is invalid.
    #[error("invalid config: {field}: {message}")]
    Config { field: String, message: String },
    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A listening socket could not be set up safely.
    #[error("cannot listen on '{path}': {message}")]
    Listen { path: String, message: String },
}

impl OrchestratorError {
    pub fn kind(&self) -> &'static str {
        match self {
            OrchestratorError::Config { .. } => "config",
            OrchestratorError::Io { .. } => "io",
            OrchestratorError::Listen { .. } => "listen",
        }
    }
}

/// `clawdlets orchestrator ...`
#[derive(Debug, clap::Args)]
pub struct OrchestratorArgs {
    #[command(subcommand)]
    pub command: OrchestratorCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OrchestratorCommand {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Validate the configuration and print the effective settings (exit 2 when invalid).
    CheckConfig(ServeArgs),
    /// The VM side of the cattle bootstrap (run by the local backend or a cattle image).
    #[command(hide = true)]
    CattleAgent(cattle::agent::AgentArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Unix socket path.
    #[arg(long, default_value = config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// SQLite state file (its directory is made private, 0700).
    #[arg(long, default_value = config::DEFAULT_STATE)]
    pub state: PathBuf,
    /// Group that owns the socket (bots are members).
    #[arg(long, default_value = config::DEFAULT_GROUP)]
    pub group: String,
    /// TCP address for cattle (the tailnet address), e.g. 100.64.0.1 or 100.64.0.1:18337.
    #[arg(long)]
    pub cattle_listen: Option<String>,
    /// Allow a wildcard cattle listen address (0.0.0.0 / ::).
    #[arg(long)]
    pub allow_wildcard_cattle_listen: bool,
    /// JSON config file (camelCase; see docs/orchestrator.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Everything a request handler needs.
pub struct App {
    pub settings: config::Settings,
    pub store: store::Store,
    pub clock: clock::SharedClock,
    pub resolver: peer::Resolver,
    pub bot_limiter: limits::RateLimiter,
    pub vm_limiter: limits::RateLimiter,
    pub src_limiter: limits::RateLimiter,
    pub master_key: SecretBytes,
    pub backend: cattle::Backend,
    pub wake: tokio::sync::Notify,
    pub metrics: metrics::Metrics,
    pub cattle_base_url: Option<String>,
    pub daemon_actor: peer::Actor,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("socket", &self.settings.socket)
            .finish()
    }
}

pub fn run(args: OrchestratorArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        OrchestratorCommand::Serve(a) => serve(settings(&a)?),
        OrchestratorCommand::CheckConfig(a) => {
            let s = settings(&a)?;
            println!("{s:#?}");
            Ok(ExitCode::Success)
        }
        OrchestratorCommand::CattleAgent(a) => cattle::agent::run(a),
    }
}

fn settings(a: &ServeArgs) -> anyhow::Result<config::Settings> {
    let raw = match &a.config {
        Some(p) => config::read_raw(p)?,
        None => config::RawConfig::default(),
    };
    let flags = config::Flags {
        socket: Some(a.socket.clone()),
        state: Some(a.state.clone()),
        group: Some(a.group.clone()),
        cattle_listen: a.cattle_listen.clone(),
        allow_wildcard: a.allow_wildcard_cattle_listen,
    };
    Ok(config::settle(raw, &flags)?)
}

fn drop_capabilities() {
    use caps::CapSet;
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        if let Err(e) = caps::clear(None, set) {
            tracing::warn!(event = "orchestrator.caps", error = %e, "cannot clear capability set");
        }
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes no pointers and only restricts this process.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

fn serve(s: config::Settings) -> anyhow::Result<ExitCode> {
    // SAFETY: umask has no preconditions; nothing else runs yet.
    unsafe { libc::umask(0o077) };
    let (unix, inherited) = listen::unix_listener(&s)?;
    let tcp = s.cattle_listen.map(listen::tcp_listener).transpose()?;
    let cattle_base_url = s.cattle.base_url.clone().or_else(|| {
        tcp.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!("http://{a}"))
    });
    drop_capabilities();
    store::tune_sqlite_process();
    let (store, writer) = store::Store::open(&s.state)
        .with_context(|| format!("cannot open state '{}'", s.state.display()))?;
    let key_path = s.state.with_file_name("vm-auth.key");
    let master_key = vmauth::load_master_key(&key_path)
        .with_context(|| format!("cannot load '{}'", key_path.display()))?;
    let backend = match &s.cattle.backend {
        config::Backend::Local { command, work_dir } => {
            cattle::Backend::Local(cattle::local::Local::new(command.clone(), work_dir.clone()))
        }
        config::Backend::Hcloud {
            api_url,
            token_file,
            image,
            server_type,
            location,
        } => cattle::Backend::Hcloud(Box::new(cattle::hcloud::Hcloud::new(
            api_url.clone(),
            token_file.clone(),
            image.clone(),
            server_type.clone(),
            location.clone(),
        )?)),
    };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let app = Arc::new(App {
        resolver: peer::Resolver::new(s.admin_group.clone()),
        bot_limiter: limits::RateLimiter::new(s.limits.rate_per_second, s.limits.rate_burst),
        vm_limiter: limits::RateLimiter::new(s.vm_auth.rate_per_second, s.vm_auth.rate_burst),
        src_limiter: limits::RateLimiter::new(
            s.vm_auth.rate_per_second * 4.0,
            s.vm_auth.rate_burst * 4.0,
        ),
        clock: Arc::new(clock::SystemClock),
        store,
        master_key,
        backend,
        wake: tokio::sync::Notify::new(),
        metrics: metrics::Metrics::default(),
        cattle_base_url,
        daemon_actor: peer::Actor {
            uid: euid,
            name: "orchestrator".into(),
            admin: true,
        },
        settings: s,
    });
    // One event-loop thread for HTTP and the store's writer (see `store`): on two cores every
    // thread hop cost more than it bought (docs/PERFORMANCE.md). Identity lookups that miss the
    // cache go to the blocking pool, so a slow user directory never holds the loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = app.settings.socket.clone();
    rt.block_on(async move {
        let (close_writer, closed) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(writer.run(async {
            let _ = closed.await;
        }));
        let unix = tokio::net::UnixListener::from_std(unix)?;
        let tcp = tcp.map(tokio::net::TcpListener::from_std).transpose()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(app.clone(), unix, tcp, stop_rx.clone()));
        let worker = tokio::spawn(cattle::handler::worker_loop(app.clone(), stop_rx.clone()));
        let timers = tokio::spawn(schedule::run(app.clone(), stop_rx));
        let status = format!(
            "listening on {}{}{}",
            app.settings.socket.display(),
            if inherited { " (socket-activated)" } else { "" },
            app.cattle_base_url
                .as_deref()
                .map(|u| format!(", cattle at {u}"))
                .unwrap_or_default()
        );
        tracing::info!(event = "orchestrator.ready", "{status}");
        notify::ready(&status);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        notify::stopping();
        tracing::info!(
            event = "orchestrator.stopping",
            "stopping: finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
        let _ = server.await;
        let _ = worker.await;
        let _ = timers.await;
        if let cattle::Backend::Local(_) = &app.backend
            && let Ok(servers) = app.backend.list().await
        {
            for sv in servers {
                let _ = app.backend.delete(&sv.id).await;
            }
        }
        // Requests are finished; a straggling task (a connection past the grace period) gets
        // an error from the store from now on, and the writer checkpoints and ends.
        drop(app);
        let _ = close_writer.send(());
        let _ = writer.await;
        anyhow::Ok(())
    })?;
    if !inherited {
        let _ = std::fs::remove_file(&socket);
    }
    tracing::info!(event = "orchestrator.stopped", "stopped");
    Ok(ExitCode::Success)
}
