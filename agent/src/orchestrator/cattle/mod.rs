//! Cattle: short-lived VMs that run one task. This module validates `cattle.spawn` payloads,
//! builds the VM's user_data (cloud-config carrying only the one-time bootstrap token, never a
//! secret value), and talks to a backend: `local` (a process per VM, for tests and the demo) or
//! `hcloud` (Hetzner Cloud). The VM side of the bootstrap is `agent`. Job bookkeeping lives in
//! `handler`.

pub mod agent;
pub mod handler;
pub mod hcloud;
pub mod local;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// Label every server we create carries; reap only ever touches servers with it.
pub const MANAGED_BY: &str = "clawdlets";
/// Hetzner's user_data limit.
pub const MAX_USER_DATA: usize = 32 * 1024;

/// Errors from cattle backends and payload validation.
#[derive(Debug, thiserror::Error)]
pub enum CattleError {
    /// The payload of a cattle job is invalid.
    #[error("invalid cattle payload: {0}")]
    Payload(String),
    /// The cloud API refused or failed the call.
    #[error("cloud api error ({code}): {message}")]
    Api { code: String, message: String },
    /// The backend could not be reached or the local process could not start.
    #[error("cattle backend unavailable: {0}")]
    Unavailable(String),
}

impl CattleError {
    pub fn kind(&self) -> &'static str {
        match self {
            CattleError::Payload(_) => "payload",
            CattleError::Api { .. } => "api",
            CattleError::Unavailable(_) => "unavailable",
        }
    }
}

/// `cattle.spawn` payload (clf v1 shape plus `envKeys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpawnPayload {
    pub persona: String,
    pub task: Value,
    pub ttl: Option<Value>,
    pub image: Option<String>,
    pub server_type: Option<String>,
    pub location: Option<String>,
    pub auto_shutdown: Option<bool>,
    pub with_github_token: Option<bool>,
    pub env_keys: Option<Vec<String>>,
}

/// `cattle.reap` payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReapPayload {
    pub dry_run: Option<bool>,
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a TTL: seconds as a number, or a string like "90s", "30m", "2h".
pub fn parse_ttl(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let (num, mul) = match s.chars().last()? {
                's' => (&s[..s.len() - 1], 1),
                'm' => (&s[..s.len() - 1], 60),
                'h' => (&s[..s.len() - 1], 3600),
                'd' => (&s[..s.len() - 1], 86_400),
                _ => (s, 1),
            };
            num.parse::<u64>().ok()?.checked_mul(mul)
        }
        _ => None,
    }
}

/// A validated spawn request.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub persona: String,
    pub task: Value,
    pub ttl_s: u64,
    pub image: Option<String>,
    pub server_type: Option<String>,
    pub location: Option<String>,
    pub auto_shutdown: bool,
    pub env_keys: Vec<String>,
    /// Options only root or the admin group may use.
    pub privileged: Vec<String>,
}

/// Validates a spawn payload against the configured env keys.
pub fn validate_spawn(
    payload: &Value,
    allowed_env: &[String],
    privileged_env: &[String],
    default_ttl: u64,
    max_ttl: u64,
) -> Result<Spawn, CattleError> {
    let p: SpawnPayload =
        serde_json::from_value(payload.clone()).map_err(|e| CattleError::Payload(e.to_string()))?;
    if !name_ok(&p.persona, 32) {
        return Err(CattleError::Payload(
            "persona must be 1-32 of [a-z0-9-]".into(),
        ));
    }
    let task_id = p.task.get("taskId").and_then(Value::as_str).unwrap_or("");
    if !p.task.is_object() || task_id.is_empty() || task_id.len() > 128 {
        return Err(CattleError::Payload(
            "task must be an object with a taskId (1-128 chars)".into(),
        ));
    }
    let ttl_s = match &p.ttl {
        None => default_ttl,
        Some(v) => parse_ttl(v)
            .ok_or_else(|| CattleError::Payload("ttl must be seconds or like \"2h\"".into()))?,
    };
    if !(60..=max_ttl).contains(&ttl_s) {
        return Err(CattleError::Payload(format!(
            "ttl must be within 60..{max_ttl} seconds"
        )));
    }
    let mut env_keys = p.env_keys.clone().unwrap_or_else(|| allowed_env.to_vec());
    if p.with_github_token == Some(true) && !env_keys.iter().any(|k| k == "GITHUB_TOKEN") {
        env_keys.push("GITHUB_TOKEN".into());
    }
    for k in &env_keys {
        if !allowed_env.contains(k) && !privileged_env.contains(k) {
            return Err(CattleError::Payload(format!(
                "env key '{k}' is not offered to cattle (see envKeys)"
            )));
        }
    }
    let mut privileged = super::limits::privileged_requests(&env_keys, privileged_env);
    if p.image.is_some() {
        privileged.push("image".into());
    }
    for (field, v) in [
        ("serverType", &p.server_type),
        ("location", &p.location),
        ("image", &p.image),
    ] {
        if let Some(v) = v
            && (v.is_empty()
                || v.len() > 64
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(CattleError::Payload(format!("{field} is not a valid name")));
        }
    }
    Ok(Spawn {
        persona: p.persona,
        task: p.task,
        ttl_s,
        image: p.image,
        server_type: p.server_type,
        location: p.location,
        auto_shutdown: p.auto_shutdown.unwrap_or(true),
        env_keys,
        privileged,
    })
}

/// What the VM learns from user_data.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    pub base_url: String,
    pub token: String,
    pub expires_at: String,
    pub one_time: bool,
    pub cattle_name: String,
    pub job_id: String,
}

pub const BOOTSTRAP_PATH: &str = "/run/clawdlets/cattle/bootstrap.json";
pub const TASK_PATH: &str = "/var/lib/clawdlets/cattle/task.json";
pub const ENV_PUBLIC_PATH: &str = "/run/clawdlets/cattle/env.public";

/// Builds cloud-config user_data. YAML is a superset of JSON, so the document is JSON after the
/// `#cloud-config` line: no YAML quoting pitfalls. The callback URL is blanked (results come back
/// through the signed API); the token is the only credential inside.
pub fn user_data(spawn: &Spawn, boot: &Bootstrap) -> Result<String, CattleError> {
    let mut task = spawn.task.clone();
    if task.get("callbackUrl").is_some() {
        task["callbackUrl"] = Value::String(String::new());
    }
    let doc = json!({
        "write_files": [
            {"path": TASK_PATH, "permissions": "0600", "content": task.to_string()},
            {"path": BOOTSTRAP_PATH, "permissions": "0400", "content": serde_json::to_string(boot).unwrap_or_default()},
            {"path": ENV_PUBLIC_PATH, "permissions": "0444",
             "content": format!("CLAWDLETS_CATTLE_AUTO_SHUTDOWN={}\n", if spawn.auto_shutdown { "1" } else { "0" })},
        ]
    });
    let s = format!("#cloud-config\n{doc}\n");
    if s.len() > MAX_USER_DATA {
        return Err(CattleError::Payload(format!(
            "user_data is {} bytes; the limit is {MAX_USER_DATA}",
            s.len()
        )));
    }
    Ok(s)
}

/// Reads a file's content back out of user_data (the VM side).
pub fn user_data_file(user_data: &str, path: &str) -> Option<String> {
    let json = user_data.strip_prefix("#cloud-config\n")?;
    let v: Value = serde_json::from_str(json).ok()?;
    v["write_files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == path)?["content"]
        .as_str()
        .map(str::to_string)
}

/// A server as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub user_data: String,
    pub labels: BTreeMap<String, String>,
    pub image: Option<String>,
    pub server_type: Option<String>,
    pub location: Option<String>,
}

/// The configured backend.
#[derive(Debug)]
pub enum Backend {
    Local(local::Local),
    Hcloud(Box<hcloud::Hcloud>),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Hcloud(_) => "hcloud",
        }
    }

    pub async fn create(&self, spec: &ServerSpec) -> Result<Server, CattleError> {
        match self {
            Backend::Local(l) => l.create(spec).await,
            Backend::Hcloud(h) => h.create(spec).await,
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), CattleError> {
        match self {
            Backend::Local(l) => l.delete(id).await,
            Backend::Hcloud(h) => h.delete(id).await,
        }
    }

    pub async fn list(&self) -> Result<Vec<Server>, CattleError> {
        match self {
            Backend::Local(l) => l.list().await,
            Backend::Hcloud(h) => h.list(&format!("managed-by={MANAGED_BY}")).await,
        }
    }
}

/// Labels for a new server (Hetzner label values: ≤63 chars of [a-zA-Z0-9._-]).
pub fn labels(
    extra: &BTreeMap<String, String>,
    name: &str,
    persona: &str,
    task_id: &str,
    now_s: i64,
    expires_s: i64,
) -> BTreeMap<String, String> {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .take(63)
            .collect()
    };
    let mut l = extra.clone();
    l.insert("managed-by".into(), MANAGED_BY.into());
    l.insert("cattle".into(), clean(name));
    l.insert("persona".into(), clean(persona));
    l.insert("task-id".into(), clean(task_id));
    l.insert("created-at".into(), now_s.to_string());
    l.insert("expires-at".into(), expires_s.to_string());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Value {
        json!({"persona": "rex", "task": {"schemaVersion": 1, "taskId": "t1", "type": "clawdbot.gateway.agent", "message": "hi", "callbackUrl": "http://x"}})
    }

    #[test]
    fn spawn_payload_is_validated() {
        let allowed = vec!["OPENAI_API_KEY".to_string()];
        let priv_ = vec!["GITHUB_TOKEN".to_string()];
        let s = validate_spawn(&payload(), &allowed, &priv_, 7200, 86_400).unwrap();
        assert_eq!(s.ttl_s, 7200);
        assert!(s.privileged.is_empty());
        let mut p = payload();
        p["withGithubToken"] = json!(true);
        assert_eq!(
            validate_spawn(&p, &allowed, &priv_, 7200, 86_400)
                .unwrap()
                .privileged,
            vec!["GITHUB_TOKEN"]
        );
        let mut p = payload();
        p["envKeys"] = json!(["AWS_SECRET"]);
        assert!(validate_spawn(&p, &allowed, &priv_, 7200, 86_400).is_err());
        let mut p = payload();
        p["persona"] = json!("../etc");
        assert!(validate_spawn(&p, &allowed, &priv_, 7200, 86_400).is_err());
        let mut p = payload();
        p["ttl"] = json!("2h");
        assert_eq!(
            validate_spawn(&p, &allowed, &priv_, 60, 86_400)
                .unwrap()
                .ttl_s,
            7200
        );
        let mut p = payload();
        p["extra"] = json!(1);
        assert!(validate_spawn(&p, &allowed, &priv_, 7200, 86_400).is_err());
    }

    #[test]
    fn user_data_round_trips_and_blanks_the_callback() {
        let s = validate_spawn(&payload(), &[], &[], 7200, 86_400).unwrap();
        let boot = Bootstrap {
            base_url: "http://127.0.0.1:1".into(),
            token: "clf_boot_x".into(),
            expires_at: "t".into(),
            one_time: true,
            cattle_name: "c".into(),
            job_id: "j".into(),
        };
        let ud = user_data(&s, &boot).unwrap();
        let b: Bootstrap =
            serde_json::from_str(&user_data_file(&ud, BOOTSTRAP_PATH).unwrap()).unwrap();
        assert_eq!(b.token, "clf_boot_x");
        let task: Value = serde_json::from_str(&user_data_file(&ud, TASK_PATH).unwrap()).unwrap();
        assert_eq!(task["callbackUrl"], "");
    }

    #[test]
    fn ttl_strings() {
        assert_eq!(parse_ttl(&json!("90s")), Some(90));
        assert_eq!(parse_ttl(&json!("30m")), Some(1800));
        assert_eq!(parse_ttl(&json!(120)), Some(120));
        assert_eq!(parse_ttl(&json!("soon")), None);
    }
}
