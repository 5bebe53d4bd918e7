//! Integration tests of `clawdlets verify`: the nft evaluator against the real kernel, and the
//! host checks against real sshd, real mounts, real users and files.

mod differential;
mod host_checks;
mod rulesets;
