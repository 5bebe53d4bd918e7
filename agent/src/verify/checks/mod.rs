//! The checks, one file per id, and the registry that lists them in report order. A check is a
//! function of the `Host`; it proves its verdict from what the host really does and returns
//! evidence a human can re-verify. Checks never print and never show a secret value.

mod egress_proxy;
mod egress_smtp;
pub(crate) mod firewall;
mod orchestrator_perms;
mod secrets_mount;
pub(crate) mod secrets_store;
mod ssh_firewall;
mod ssh_tailnet_only;
mod sshd_config;
mod tailnet_udp;
mod units_sandbox;

use super::host::Host;
use super::report::Check;

/// A check: its stable id and the function that runs it.
pub struct Def {
    pub id: &'static str,
    pub run: fn(&Host) -> Check,
}

/// All host checks, in report order.
pub const ALL: &[Def] = &[
    Def {
        id: "ssh.firewall",
        run: ssh_firewall::run,
    },
    Def {
        id: "ssh.tailnet-only",
        run: ssh_tailnet_only::run,
    },
    Def {
        id: "sshd.config",
        run: sshd_config::run,
    },
    Def {
        id: "orchestrator.perms",
        run: orchestrator_perms::run,
    },
    Def {
        id: "secrets.mount",
        run: secrets_mount::run,
    },
    Def {
        id: "secrets.store",
        run: secrets_store::run,
    },
    Def {
        id: "egress.smtp",
        run: egress_smtp::run,
    },
    Def {
        id: "egress.proxy",
        run: egress_proxy::run,
    },
    Def {
        id: "tailnet.udp",
        run: tailnet_udp::run,
    },
    Def {
        id: "units.sandbox",
        run: units_sandbox::run,
    },
];
