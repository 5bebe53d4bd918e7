//! All integration tests in one binary (one link, fast CI). Each concern has its own module; the
//! shared harness lives in `common`. Tests drive the built `clawdlets` binary the way a user would.

mod common;
mod egress;
mod install;
mod nix_manifest;
mod nix_rules;
mod orchestrator;
mod secrets_ops;
mod sops;
mod sops_stores;
mod verify;
