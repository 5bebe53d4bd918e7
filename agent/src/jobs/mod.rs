//! `clawdlets jobs`: the bots' client for the orchestrator socket. Each command sends one clf v1
//! request and prints the JSON response on stdout. Identity comes from the kernel (the socket's
//! peer credentials), so the client never sends or needs a requester name or a token.
//! Exit codes: 0 the request succeeded; 1 the orchestrator refused it (the error JSON is printed);
//! 2 the orchestrator could not be reached or the input was invalid.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::exit::ExitCode;
use crate::orchestrator::client;

/// `clawdlets jobs ...`
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The orchestrator socket.
    #[arg(
        long,
        global = true,
        env = "CLF_ORCHESTRATOR_SOCKET",
        default_value = "/run/clf/orchestrator.sock"
    )]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Enqueue a job; prints {protocolVersion, jobId, existing}.
    Enqueue {
        /// Job kind, e.g. cattle.spawn.
        #[arg(long)]
        kind: String,
        /// Payload JSON; `@FILE` reads a file, `-` reads stdin.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Makes retries of the same request return the same job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// RFC 3339 time before which the job is not run.
        #[arg(long)]
        run_at: Option<String>,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long)]
        max_attempts: Option<i64>,
    },
    /// List your jobs (root and the admin group see all).
    List {
        /// Comma-separated statuses: queued,running,done,failed,canceled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Only for root and the admin group: another requester's jobs.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one job with its payload.
    Show { job_id: String },
    /// Cancel a queued or running job.
    Cancel { job_id: String },
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read_payload(arg: &str) -> anyhow::Result<Value> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read payload from stdin")?
    } else if let Some(p) = arg.strip_prefix('@') {
        std::fs::read_to_string(p).with_context(|| format!("cannot read payload file '{p}'"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).context("payload is not valid JSON")
}

pub fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match &args.command {
        JobsCommand::Enqueue {
            kind,
            payload,
            idempotency_key,
            run_at,
            priority,
            max_attempts,
        } => {
            let mut b =
                json!({"protocolVersion": 1, "kind": kind, "payload": read_payload(payload)?});
            if let Some(k) = idempotency_key {
                b["idempotencyKey"] = json!(k);
            }
            if let Some(t) = run_at {
                b["runAt"] = json!(t);
            }
            if let Some(p) = priority {
                b["priority"] = json!(p);
            }
            if let Some(m) = max_attempts {
                b["maxAttempts"] = json!(m);
            }
            ("POST", "/v1/jobs/enqueue".to_string(), Some(b))
        }
        JobsCommand::List {
            status,
            kind,
            requester,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("status", status), ("kind", kind), ("requester", requester)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode(v)));
                }
            }
            ("GET", format!("/v1/jobs?{}", q.join("&")), None)
        }
        JobsCommand::Show { job_id } => ("GET", format!("/v1/jobs/{}", encode(job_id)), None),
        JobsCommand::Cancel { job_id } => (
            "POST",
            format!("/v1/jobs/{}/cancel", encode(job_id)),
            Some(json!({"protocolVersion": 1})),
        ),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, bytes) = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&args.socket)
            .await
            .with_context(|| format!("cannot connect to '{}'; hint: is the orchestrator running, and are you in its group?", args.socket.display()))?;
        let req = client::request(method, "localhost", &path, body.map(|b| b.to_string().into_bytes()), &[]);
        client::send(stream, req).await.map_err(anyhow::Error::msg)
    })?;
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => bail!("orchestrator answered HTTP {status} with a non-JSON body"),
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    if (200..300).contains(&status) {
        Ok(ExitCode::Success)
    } else {
        eprintln!(
            "error: HTTP {status}: {}",
            v["error"]["message"].as_str().unwrap_or("request refused")
        );
        Ok(ExitCode::Failure)
    }
}
