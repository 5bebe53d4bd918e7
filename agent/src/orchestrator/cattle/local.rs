//! The `local` backend: each "VM" is a child process. It gets its user_data as a 0600 file in a
//! private per-cattle directory and, by default, runs `clawdlets orchestrator cattle-agent
//! --user-data FILE`, which performs the real bootstrap over TCP. Deleting a server kills the
//! process and removes its directory. Nothing here is meant for production isolation.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use super::{CattleError, Server, ServerSpec};

#[derive(Debug)]
struct Vm {
    name: String,
    labels: BTreeMap<String, String>,
    child: tokio::process::Child,
    dir: PathBuf,
}

/// Local process "cloud".
#[derive(Debug)]
pub struct Local {
    command: Vec<String>,
    work_dir: PathBuf,
    vms: Mutex<HashMap<String, Vm>>,
}

impl Local {
    /// `command` empty means "this binary's cattle-agent".
    pub fn new(command: Vec<String>, work_dir: PathBuf) -> Self {
        Local {
            command,
            work_dir,
            vms: Mutex::new(HashMap::new()),
        }
    }

    pub async fn create(&self, spec: &ServerSpec) -> Result<Server, CattleError> {
        let unavailable = |e: std::io::Error| {
            CattleError::Unavailable(format!("local cattle '{}': {e}", spec.name))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.work_dir)
            .map_err(unavailable)?;
        let dir = self.work_dir.join(&spec.name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(unavailable)?;
        let ud = dir.join("user-data");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&ud)
            .map_err(unavailable)?;
        f.write_all(spec.user_data.as_bytes())
            .map_err(unavailable)?;
        drop(f);
        let argv: Vec<String> = if self.command.is_empty() {
            let exe = std::env::current_exe().map_err(unavailable)?;
            vec![
                exe.display().to_string(),
                "orchestrator".into(),
                "cattle-agent".into(),
                "--user-data".into(),
                ud.display().to_string(),
            ]
        } else {
            self.command
                .iter()
                .map(|a| a.replace("{userData}", &ud.display().to_string()))
                .collect()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("console.log"))
            .map_err(unavailable)?;
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(unavailable)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(unavailable)?;
        let id = format!("local-{}", child.id().unwrap_or(0));
        let server = Server {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
        };
        if let Ok(mut vms) = self.vms.lock() {
            vms.insert(
                id,
                Vm {
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    child,
                    dir,
                },
            );
        }
        Ok(server)
    }

    pub async fn delete(&self, id: &str) -> Result<(), CattleError> {
        let vm = self.vms.lock().ok().and_then(|mut v| v.remove(id));
        if let Some(mut vm) = vm {
            // Give a VM that has just reported a moment to exit on its own.
            let exited =
                tokio::time::timeout(std::time::Duration::from_secs(3), vm.child.wait()).await;
            if exited.is_err() {
                let _ = vm.child.start_kill();
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), vm.child.wait()).await;
            let _ = std::fs::remove_dir_all(&vm.dir);
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Server>, CattleError> {
        let vms = self
            .vms
            .lock()
            .map_err(|_| CattleError::Unavailable("lock poisoned".into()))?;
        Ok(vms
            .iter()
            .map(|(id, vm)| Server {
                id: id.clone(),
                name: vm.name.clone(),
                labels: vm.labels.clone(),
            })
            .collect())
    }
}
