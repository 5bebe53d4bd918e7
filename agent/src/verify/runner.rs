//! Running the host tools verify consults (nft, sshd, systemctl, systemd-analyze, nix-store)
//! behind a small trait, so unit tests can feed recorded output while integration tests and
//! real hosts use the real tools. Every run is bounded in time.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a tool printed and how it exited.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status; `None` when killed by a signal or the timeout.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Why a tool could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program is not installed (not on PATH).
    #[error("`{0}` is not installed")]
    NotFound(String),
    /// The program ran longer than allowed and was killed.
    #[error("`{program}` did not finish within {secs} s")]
    Timeout { program: String, secs: u64 },
    /// Spawning or reading from the program failed.
    #[error("cannot run `{program}`: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

impl RunError {
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::NotFound(_) => "not_found",
            RunError::Timeout { .. } => "timeout",
            RunError::Io { .. } => "io",
        }
    }
}

/// Runs a program with arguments and returns its output.
pub trait Runner: Send + Sync {
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, RunError>;
}

/// Runs real programs, killing them after `timeout`.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    pub timeout: Duration,
    /// Working directory of the programs (default: inherited).
    pub cwd: Option<std::path::PathBuf>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner {
            timeout: Duration::from_secs(20),
            cwd: None,
        }
    }
}

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, RunError> {
        let io = |source| RunError::Io {
            program: program.to_string(),
            source,
        };
        let mut cmd = Command::new(program);
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        let mut child = match cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunError::NotFound(program.to_string()));
            }
            Err(e) => return Err(io(e)),
        };
        // Drain both pipes on threads so a chatty tool cannot block on a full pipe.
        let mut out_pipe = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let out_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out_pipe.read_to_end(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err_pipe.read_to_end(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().map_err(io)? {
                break st;
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout {
                    program: program.to_string(),
                    secs: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
        Ok(Output {
            status: status.code(),
            stdout,
            stderr,
        })
    }
}

/// Replays recorded outputs keyed by the full command line (`program arg1 arg2`); for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordedRunner {
    pub outputs: HashMap<String, Output>,
}

impl RecordedRunner {
    pub fn with(mut self, cmdline: &str, stdout: &str) -> Self {
        self.outputs.insert(
            cmdline.to_string(),
            Output {
                status: Some(0),
                stdout: stdout.to_string(),
                stderr: String::new(),
            },
        );
        self
    }
}

impl Runner for RecordedRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, RunError> {
        let mut key = program.to_string();
        for a in args {
            key.push(' ');
            key.push_str(a);
        }
        self.outputs
            .get(&key)
            .cloned()
            .ok_or(RunError::NotFound(key))
    }
}
