//! The fleet config `fleet/clawdlets.json`: its raw serde shape (`raw`), semantic validation
//! (`validate`) and loading with errors that name the file and the field path. The JSON Schema
//! in `docs/fleet.schema.json` describes the same shape; a test keeps both in step.
//!
//! Owns reading and validating the fleet file and editing the one field the tools maintain
//! (`operators[].ageRecipient`). Must not hold or print any secret value: the fleet is public.

pub mod raw;
pub mod validate;

use std::path::{Path, PathBuf};

pub use raw::{Fleet, Host, Operator, Secret, ValueSpec};
pub use validate::Problem;

/// Errors loading the fleet config.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The file could not be read.
    #[error("cannot read fleet config '{path}': {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed or does not have the documented shape.
    #[error("{path}: {field}: {detail}")]
    Parse {
        path: PathBuf,
        field: String,
        detail: String,
    },
    /// The shape is right but values break the rules; one line per problem.
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl FleetError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FleetError::Io { .. } => "fleet_io",
            FleetError::Parse { .. } => "fleet_parse",
            FleetError::Invalid { .. } => "fleet_invalid",
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    lines.join("\n")
}

/// Parses and validates fleet JSON text; `path` only labels errors.
pub fn parse(text: &str, path: &Path) -> Result<Fleet, FleetError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let fleet: Fleet = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." || p.is_empty() => "(top level)".to_string(),
            p => p,
        };
        FleetError::Parse {
            path: path.to_path_buf(),
            field,
            detail: e.into_inner().to_string(),
        }
    })?;
    let problems = validate::validate(&fleet);
    if problems.is_empty() {
        Ok(fleet)
    } else {
        Err(FleetError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Reads, parses and validates the fleet file.
pub fn load(path: &Path) -> Result<Fleet, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Returns the fleet file text with `operators[index].ageRecipient` set, keeping every other
/// field and the key order. Output is 2-space indented JSON with a trailing newline.
pub fn with_operator_recipient(
    text: &str,
    operator: &str,
    recipient: &str,
) -> Result<String, FleetError> {
    let mut doc: serde_json::Value = serde_json::from_str(text).map_err(|e| FleetError::Parse {
        path: PathBuf::from("fleet/clawdlets.json"),
        field: "(top level)".into(),
        detail: e.to_string(),
    })?;
    let ops = doc.get_mut("operators").and_then(|o| o.as_array_mut());
    let Some(op) = ops.and_then(|ops| {
        ops.iter_mut()
            .find(|o| o.get("name").and_then(|n| n.as_str()) == Some(operator))
    }) else {
        return Err(FleetError::Parse {
            path: PathBuf::from("fleet/clawdlets.json"),
            field: "operators".into(),
            detail: format!("no operator named '{operator}'"),
        });
    };
    if let Some(obj) = op.as_object_mut() {
        obj.insert(
            "ageRecipient".into(),
            serde_json::Value::String(recipient.to_string()),
        );
    }
    let mut out = serde_json::to_string_pretty(&doc).expect("json value serializes");
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../fleet/clawdlets.json");

    #[test]
    fn example_fleet_is_valid() {
        let fleet = parse(EXAMPLE, Path::new("fleet/clawdlets.json")).expect("example validates");
        assert!(fleet.hosts.contains_key("fleet-1"));
        let host = &fleet.hosts["fleet-1"];
        assert!(
            host.secrets
                .values()
                .any(|s| s.value == ValueSpec::Provided)
        );
        assert!(host.secrets.values().any(|s| s.value.is_generated()));
    }

    fn err_of(text: &str) -> String {
        parse(text, Path::new("f.json")).unwrap_err().to_string()
    }

    fn example_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn errors_name_the_field_path() {
        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "hex", "bytes": 8}});
        });
        assert!(
            err_of(&t).contains("hosts.fleet-1.secrets.x.value.bytes: must be between 16"),
            "{}",
            err_of(&t)
        );

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "hex", "bytes": "32"}});
        });
        let e = err_of(&t);
        assert!(e.contains("hosts.fleet-1.secrets.x.value"), "{e}");

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["tailnet"]["bogus"] = serde_json::json!(1);
        });
        let e = err_of(&t);
        assert!(
            e.contains("hosts.fleet-1.tailnet") && e.contains("unknown field `bogus`"),
            "{e}"
        );

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["bots"]["maren"]["secrets"] = serde_json::json!(["nope"]);
        });
        assert!(err_of(&t).contains("hosts.fleet-1.bots.maren.secrets[0]: 'nope' is not declared"));

        let t = example_with(|v| {
            v["operators"][0]["ageRecipient"] = serde_json::json!("age1nope");
        });
        assert!(err_of(&t).contains("operators[0].ageRecipient"));

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "provided"}, "mode": "0644"});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.secrets.x.mode"));

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] = serde_json::json!({"value": {"kind": "rot13"}});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.secrets.x.value"));
    }

    #[test]
    fn password_hash_kind_and_the_plaintext_login_password_mistake() {
        let host = &parse(EXAMPLE, Path::new("f")).unwrap().hosts["fleet-1"];
        let admin = &host.secrets["admin_password_hash"];
        assert!(admin.needed_for_users);
        assert_eq!(admin.value.kind(), "password-hash");
        assert!(!admin.value.is_generated(), "the example asks the operator");

        let ok = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] = serde_json::json!({"value":
                {"kind": "password-hash", "generate": true, "length": 32, "rounds": 100000},
                "neededForUsers": true});
        });
        let f = parse(&ok, Path::new("f.json")).expect("generated password-hash is valid");
        let x = &f.hosts["fleet-1"].secrets["x"].value;
        assert!(x.is_generated() && !x.rotates_by_default());

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["admin_password_hash"]["value"] =
                serde_json::json!({"kind": "password", "length": 24});
        });
        let e = err_of(&t);
        assert!(
            e.contains("hosts.fleet-1.secrets.admin_password_hash.value.kind")
                && e.contains("password-hash"),
            "{e}"
        );

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "password-hash", "length": 20}});
        });
        assert!(
            err_of(&t).contains("hosts.fleet-1.secrets.x.value.length: only applies with"),
            "{}",
            err_of(&t)
        );
        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] = serde_json::json!({"value":
                {"kind": "password-hash", "generate": true, "length": 8}});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.secrets.x.value.length: must be between 12"));
        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "password-hash", "rounds": 1000}});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.secrets.x.value.rounds: must be between 5000"));
        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["secrets"]["x"] =
                serde_json::json!({"value": {"kind": "password-hash", "bytes": 16}});
        });
        let e = err_of(&t);
        assert!(
            e.contains("hosts.fleet-1.secrets.x.value") && e.contains("bytes"),
            "{e}"
        );
    }

    #[test]
    fn ssh_exposure_fields_the_nixos_module_reads_are_checked() {
        let ok = example_with(|v| {
            v["hosts"]["fleet-1"]["sshExposure"] = serde_json::json!({
                "mode": "bootstrap", "bootstrapUntil": 1893456000,
                "sourceRanges": ["203.0.113.0/24", "2001:db8::/32"]
            });
        });
        parse(&ok, Path::new("f.json")).expect("bootstrap deadline and ranges are valid");

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["sshExposure"] = serde_json::json!({"mode": "public"});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.sshExposure.acknowledgePublic: must be true"));

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["sshExposure"] =
                serde_json::json!({"mode": "tailnet", "bootstrapUntil": 1893456000});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.sshExposure.bootstrapUntil: only applies"));

        let t = example_with(|v| {
            v["hosts"]["fleet-1"]["sshExposure"] =
                serde_json::json!({"mode": "bootstrap", "sourceRanges": ["10.0.0.0/33"]});
        });
        assert!(err_of(&t).contains("hosts.fleet-1.sshExposure.sourceRanges[0]"));
    }

    #[test]
    fn set_recipient_keeps_other_fields() {
        let out = with_operator_recipient(
            EXAMPLE,
            "alice",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        )
        .unwrap();
        let f = parse(&out, Path::new("f.json")).unwrap();
        assert_eq!(
            f.operators[0].age_recipient.as_deref(),
            Some("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
        );
        assert_eq!(
            f.hosts.len(),
            parse(EXAMPLE, Path::new("f")).unwrap().hosts.len()
        );
    }
}
