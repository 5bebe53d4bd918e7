//! clawdlets: the host agent of a fleet of bot servers.
//!
//! Each concern owns one module with a single `run` entry that the CLI calls; see
//! `docs/ARCHITECTURE.md` for the map and the invariants every module keeps.

pub mod cli;
pub mod editor;
pub mod egress;
pub mod exit;
pub mod fleet;
pub mod jobs;
pub mod logging;
pub mod orchestrator;
pub mod secret;
pub mod secrets;
pub mod sops;
pub mod verify;
