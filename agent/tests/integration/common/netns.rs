//! Network namespaces joined by veth pairs, for tests that send real packets through real nft
//! rulesets or real proxies. Everything is removed on drop. Addresses used by tests are from the
//! documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) or
//! "public-looking" ranges inside namespaces only, so no packet ever leaves the machine.

use std::process::Command;

/// A named network namespace with loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(prefix: &str) -> Netns {
        let name = super::unique_name(prefix);
        super::run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        super::run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Loads an nft ruleset (text) into the namespace, replacing whatever was there.
    pub fn load_nft(&self, ruleset: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .cmd("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        let full = format!("flush ruleset\n{ruleset}");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(full.as_bytes())
            .unwrap();
        child.wait_with_output().expect("nft output")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Connects two namespaces with a veth pair. `a_if`/`b_if` are the interface names inside each
/// namespace (e.g. "eth0", "tailscale0"); the addresses are CIDRs like "203.0.113.1/24".
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    // Create with temporary unique names in the root namespace, then move and rename, so two
    // tests using "eth0" in different namespaces never collide.
    let tmp_a = super::unique_name("va");
    let tmp_b = super::unique_name("vb");
    super::run_ok(Command::new("ip").args([
        "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
    ]));
    super::run_ok(Command::new("ip").args(["link", "set", &tmp_a, "netns", &a.name]));
    super::run_ok(Command::new("ip").args(["link", "set", &tmp_b, "netns", &b.name]));
    a.ip(&["link", "set", &tmp_a, "name", a_if]);
    b.ip(&["link", "set", &tmp_b, "name", b_if]);
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if addr.contains(':') {
            ns.ip(&["-6", "addr", "add", addr, "dev", ifname, "nodad"]);
        } else {
            ns.ip(&["addr", "add", addr, "dev", ifname]);
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// True when network namespaces can be created here (root and `ip netns` available).
pub fn available(test: &str) -> bool {
    super::require_root(test) && super::require_tool(test, "ip") && super::require_tool(test, "nft")
}
