//! Check results and their two renderings: a human table on stderr-or-stdout (colour only on a
//! TTY) and the stable JSON document described in docs/verify.md and
//! docs/verify.schema.json (`schemaVersion` 1). Rendering never decides a status.

use std::io::Write;

use serde::Serialize;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The property holds, and the evidence says how it was proven.
    Pass,
    /// The property is violated.
    Fail,
    /// The check ran but could not decide (unknown construct, timeout, unreadable input).
    Inconclusive,
    /// The check does not apply here (feature disabled by policy, no systemd as PID 1...).
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Inconclusive => "inconclusive",
            Status::Skip => "skip",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable id, e.g. `ssh.firewall`.
    pub id: String,
    pub status: Status,
    /// Facts that support the status, one per line; never a secret value.
    pub evidence: Vec<String>,
    /// What to change when the status is not pass; `null` otherwise.
    pub hint: Option<String>,
    /// Wall time the check took.
    pub duration_ms: u64,
}

impl Check {
    pub fn new(id: &str, status: Status) -> Check {
        Check {
            id: id.to_string(),
            status,
            evidence: Vec::new(),
            hint: None,
            duration_ms: 0,
        }
    }

    pub fn pass(id: &str, evidence: Vec<String>) -> Check {
        Check {
            evidence,
            ..Check::new(id, Status::Pass)
        }
    }

    pub fn fail(id: &str, evidence: Vec<String>, hint: impl Into<String>) -> Check {
        Check {
            evidence,
            hint: Some(hint.into()),
            ..Check::new(id, Status::Fail)
        }
    }

    pub fn inconclusive(id: &str, evidence: Vec<String>, hint: impl Into<String>) -> Check {
        Check {
            evidence,
            hint: Some(hint.into()),
            ..Check::new(id, Status::Inconclusive)
        }
    }

    pub fn skip(id: &str, reason: impl Into<String>) -> Check {
        Check {
            evidence: vec![reason.into()],
            ..Check::new(id, Status::Skip)
        }
    }
}

/// Counts per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub inconclusive: usize,
    pub skip: usize,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: u32,
    /// `host` for checks of this machine, `remote` for `--remote`.
    pub mode: String,
    /// The host name (or the remote target).
    pub target: String,
    pub checks: Vec<Check>,
    pub summary: Summary,
    pub duration_ms: u64,
}

impl Report {
    pub fn new(mode: &str, target: String, checks: Vec<Check>, duration_ms: u64) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Inconclusive => summary.inconclusive += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Report {
            schema_version: 1,
            mode: mode.to_string(),
            target,
            checks,
            summary,
            duration_ms,
        }
    }

    /// Exit code: 0 when nothing failed or was inconclusive, 1 otherwise.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        if self.summary.fail + self.summary.inconclusive == 0 {
            crate::exit::ExitCode::Success
        } else {
            crate::exit::ExitCode::Failure
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// Writes the human table; `colour` adds ANSI colours to the status column.
    pub fn write_human(&self, w: &mut dyn Write, colour: bool) -> std::io::Result<()> {
        let width = self
            .checks
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(10)
            .max(10);
        writeln!(w, "clawdlets verify ({}: {})", self.mode, self.target)?;
        for c in &self.checks {
            let (code, label) = match c.status {
                Status::Pass => ("32", "PASS"),
                Status::Fail => ("31;1", "FAIL"),
                Status::Inconclusive => ("33;1", "INCONCLUSIVE"),
                Status::Skip => ("2", "SKIP"),
            };
            let status = if colour {
                format!("\x1b[{code}m{label:<12}\x1b[0m")
            } else {
                format!("{label:<12}")
            };
            let first = c.evidence.first().map(String::as_str).unwrap_or("");
            writeln!(w, "{:<width$}  {status}  {first}", c.id)?;
            for e in c.evidence.iter().skip(1) {
                writeln!(w, "{:<width$}  {:<12}  {e}", "", "")?;
            }
            if let Some(h) = &c.hint
                && c.status != Status::Pass
            {
                writeln!(w, "{:<width$}  {:<12}  hint: {h}", "", "")?;
            }
        }
        let s = &self.summary;
        writeln!(
            w,
            "{} pass, {} fail, {} inconclusive, {} skip in {} ms",
            s.pass, s.fail, s.inconclusive, s.skip, self.duration_ms
        )
    }
}
