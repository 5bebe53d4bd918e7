//! The VM side of the bootstrap, as a hidden subcommand (`clawdlets orchestrator cattle-agent
//! --user-data FILE`). The local backend runs it as its "VM"; a cattle image can run it too. It
//! reads the bootstrap file from user_data, fetches its env once with the one-time token, then
//! signs a heartbeat and its result with the per-VM key from that response. It prints only names
//! of env keys, never values, and keeps the values in memory only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use super::{BOOTSTRAP_PATH, Bootstrap, TASK_PATH};
use crate::orchestrator::{client, vmauth};
use crate::secret::{SecretBytes, SecretString};

/// Arguments of the cattle agent.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The user_data file (cloud-config) the VM was created with.
    #[arg(long)]
    pub user_data: PathBuf,
}

struct Target {
    host: String,
    addr: String,
}

fn target(base_url: &str) -> anyhow::Result<Target> {
    let rest = base_url
        .strip_prefix("http://")
        .context("the cattle agent speaks plain http on the tailnet only")?;
    let host = rest.trim_end_matches('/').to_string();
    Ok(Target {
        addr: host.clone(),
        host,
    })
}

async fn call(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Value)> {
    let stream = tokio::net::TcpStream::connect(&t.addr)
        .await
        .with_context(|| format!("cannot connect to {}", t.addr))?;
    let req = client::request(method, &t.host, path, body, headers);
    let (status, bytes) = client::send(stream, req)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn signed(
    t: &Target,
    key_id: &str,
    key: &SecretBytes,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let body = body.to_string().into_bytes();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let nonce = vmauth::new_nonce();
    let sig = vmauth::sign(key.expose(), "POST", path, &body, ts, &nonce);
    let ts_s = ts.to_string();
    let headers = [
        (vmauth::H_KEY_ID, key_id),
        (vmauth::H_TIMESTAMP, ts_s.as_str()),
        (vmauth::H_NONCE, nonce.as_str()),
        (vmauth::H_SIGNATURE, sig.as_str()),
    ];
    call(t, "POST", path, Some(body), &headers).await
}

pub fn run(args: AgentArgs) -> anyhow::Result<crate::exit::ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: AgentArgs) -> anyhow::Result<crate::exit::ExitCode> {
    let ud = std::fs::read_to_string(&args.user_data)
        .with_context(|| format!("cannot read '{}'", args.user_data.display()))?;
    let boot_json =
        super::user_data_file(&ud, BOOTSTRAP_PATH).context("user_data has no bootstrap file")?;
    let boot: Bootstrap =
        serde_json::from_str(&boot_json).context("bootstrap file is not valid")?;
    let token = SecretString::new(boot.token.clone());
    drop(boot_json);
    let task: Value = super::user_data_file(&ud, TASK_PATH)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    // The token is single use: the user_data copy is useless from here on, remove it.
    let _ = std::fs::remove_file(&args.user_data);
    let t = target(&boot.base_url)?;
    let auth = format!("Bearer {}", token.expose());
    let mut attempt = 0;
    let (status, resp) = loop {
        attempt += 1;
        match call(
            &t,
            "GET",
            "/v1/cattle/env",
            None,
            &[("authorization", auth.as_str())],
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if attempt < 5 => {
                eprintln!("cattle-agent: {e:#}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    drop(auth);
    if status != 200 {
        bail!(
            "bootstrap refused with HTTP {status}: {}",
            resp["error"]["message"]
        );
    }
    let env: BTreeMap<String, SecretString> = resp["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        SecretString::new(v.as_str().unwrap_or("").to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for k in env.keys() {
        if !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("server sent an invalid env key name");
        }
    }
    let key_id = resp["vm"]["keyId"]
        .as_str()
        .context("response has no vm key id")?
        .to_string();
    let key = SecretBytes::new(
        base64::engine::general_purpose::STANDARD
            .decode(
                resp["vm"]["key"]
                    .as_str()
                    .context("response has no vm key")?,
            )
            .context("vm key is not base64")?,
    );
    eprintln!(
        "cattle-agent: bootstrapped {} with env keys {:?}",
        boot.cattle_name,
        env.keys().collect::<Vec<_>>()
    );
    let (hs, _) = signed(
        &t,
        &key_id,
        &key,
        "/v1/cattle/heartbeat",
        json!({"status": "running"}),
    )
    .await?;
    if hs != 200 {
        bail!("heartbeat refused with HTTP {hs}");
    }
    // The task itself: the local VM echoes it back; a real image runs the bot gateway here.
    let result = json!({
        "taskId": task["taskId"],
        "echo": task["message"],
        "envKeys": env.keys().collect::<Vec<_>>(),
        "envBytes": env.values().map(|v| v.expose().len()).sum::<usize>(),
    });
    let (rs, rbody) = signed(
        &t,
        &key_id,
        &key,
        "/v1/cattle/result",
        json!({"ok": true, "result": result}),
    )
    .await?;
    if rs != 200 {
        bail!(
            "result refused with HTTP {rs}: {}",
            rbody["error"]["message"]
        );
    }
    eprintln!("cattle-agent: result accepted for job {}", boot.job_id);
    Ok(crate::exit::ExitCode::Success)
}
