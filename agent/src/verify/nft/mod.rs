//! The nftables ruleset evaluator: a typed model of `nft -j list ruleset` (`model`), a
//! three-valued packet evaluator (`eval`) and client-visible predictions for probes (`flow`).
//! It never touches the kernel itself; callers hand it the JSON text. Anything outside the
//! modelled subset yields `Inconclusive` naming the construct, never a pass.

pub mod bytecode;
pub mod eval;
pub mod flow;
pub mod model;

pub use eval::{CtState, Decision, Outcome, Packet, Path, evaluate};
pub use model::{Ruleset, parse};

#[cfg(test)]
mod tests;
