//! Packet-level proof of the nftables policy the NixOS modules install. The rulesets come from
//! the pure Nix generator (`modules/lib/firewall.nix`, evaluated with `nix-instantiate`, exactly
//! the text `networking.nftables.ruleset` receives), are loaded into real nft inside a network
//! namespace, and real packets show what passes: SSH per exposure mode and interface, bootstrap
//! expiry (kernel `meta time` and the runtime close command), and SMTP egress for the host and
//! for bot users matched by uid. It does not test NixOS wiring (the flake's VM tests do).

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::common::netns::{self, Netns};
use super::common::users::TestUser;
use super::common::{self, require_tool};

const HOST_WAN: &str = "203.0.113.1";
const PEER_WAN: &str = "203.0.113.2";
const HOST_TS: &str = "100.64.0.1";
const SMTP_PORTS: [u16; 4] = [25, 465, 587, 2525];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Evaluates a Nix expression with `nix-instantiate --eval --strict --json`, unprivileged-safe:
/// Nix state and logs go to a temp dir and the store is opened read-only.
fn nix_eval(expr: &str) -> serde_json::Value {
    let state = common::tempdir();
    let out = common::run(
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--readonly-mode"])
            .args(["--option", "build-users-group", ""])
            .arg("-E")
            .arg(expr)
            .env("NIX_STATE_DIR", state.path().join("state"))
            .env("NIX_LOG_DIR", state.path().join("log"))
            .env("NIX_PATH", ""),
    );
    assert!(
        out.status.success(),
        "nix-instantiate failed for {expr}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix-instantiate --json output")
}

/// The ruleset the NixOS module would install for `policy` (a Nix attrset expression).
fn render(policy: &str) -> String {
    let lib = repo_root().join("modules/lib/firewall.nix");
    let v = nix_eval(&format!("(import {}).render ({policy})", lib.display()));
    v.as_str().expect("ruleset is a string").to_owned()
}

fn available(test: &str) -> bool {
    netns::available(test)
        && require_tool(test, "nix-instantiate")
        && require_tool(test, "ncat")
        && require_tool(test, "setpriv")
}

/// A host namespace with `eth0` (the internet side) and `tailscale0` (the tailnet side), each
/// linked to a peer namespace that plays the internet / a tailnet node.
struct Topology {
    host: Netns,
    peer: Netns,
}

fn topology() -> Topology {
    let host = Netns::create("nxh");
    let peer = Netns::create("nxp");
    netns::link(
        &host,
        "eth0",
        "203.0.113.1/24",
        &peer,
        "wan0",
        "203.0.113.2/24",
    );
    netns::link(
        &host,
        "tailscale0",
        "100.64.0.1/24",
        &peer,
        "ts0",
        "100.64.0.2/24",
    );
    Topology { host, peer }
}

fn load(ns: &Netns, ruleset: &str) {
    let out = ns.load_nft(ruleset);
    assert!(
        out.status.success(),
        "nft rejected the generated ruleset:\n{ruleset}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into `ns`'s network namespace (namespaces are per thread).
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns on a valid namespace fd affects only the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

/// TCP and UDP listeners inside a namespace, on a thread of their own. Records which UDP ports
/// received a datagram, so dropped UDP can be told from delivered UDP.
struct Listeners {
    stop: Arc<AtomicBool>,
    udp_seen: Arc<Mutex<Vec<u16>>>,
    handle: Option<JoinHandle<()>>,
}

impl Listeners {
    fn start(ns: &Netns, bind: &str, tcp: &[u16], udp: &[u16]) -> Listeners {
        let (name, bind) = (ns.name.clone(), bind.to_owned());
        let (tcp, udp) = (tcp.to_vec(), udp.to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let udp_seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, seen2) = (stop.clone(), udp_seen.clone());
        let handle = std::thread::spawn(move || {
            enter(&name);
            let tcps: Vec<TcpListener> = tcp
                .iter()
                .map(|p| {
                    let l = TcpListener::bind(format!("{bind}:{p}")).expect("bind tcp");
                    l.set_nonblocking(true).unwrap();
                    l
                })
                .collect();
            let udps: Vec<(u16, UdpSocket)> = udp
                .iter()
                .map(|p| {
                    let s = UdpSocket::bind(format!("{bind}:{p}")).expect("bind udp");
                    s.set_nonblocking(true).unwrap();
                    (*p, s)
                })
                .collect();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::Relaxed) {
                for l in &tcps {
                    while let Ok((conn, _)) = l.accept() {
                        drop(conn);
                    }
                }
                for (p, s) in &udps {
                    while s.recv_from(&mut buf).is_ok() {
                        seen2.lock().unwrap().push(*p);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listeners ready");
        Listeners {
            stop,
            udp_seen,
            handle: Some(handle),
        }
    }

    fn udp_received(&self, port: u16) -> bool {
        // Give an in-flight datagram a moment to arrive.
        std::thread::sleep(Duration::from_millis(150));
        self.udp_seen.lock().unwrap().contains(&port)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Whether a TCP connection from inside `ns` (as root) to addr:port completes.
fn tcp_from(ns: &Netns, addr: &str, port: u16) -> bool {
    let (name, target): (String, SocketAddr) =
        (ns.name.clone(), format!("{addr}:{port}").parse().unwrap());
    std::thread::spawn(move || {
        enter(&name);
        TcpStream::connect_timeout(&target, Duration::from_millis(700)).is_ok()
    })
    .join()
    .unwrap()
}

/// A command run inside `ns`, as `user` when given (real setuid process, so nft sees its uid).
fn as_user(ns: &Netns, user: Option<&TestUser>, program: &str) -> Command {
    let mut cmd = ns.cmd("setpriv");
    match user {
        Some(u) => cmd.args([
            format!("--reuid={}", u.uid),
            format!("--regid={}", u.gid),
            "--clear-groups".to_owned(),
        ]),
        None => cmd.args(["--reuid=0".to_owned()]),
    };
    cmd.arg(program);
    cmd
}

/// Whether `user` (root when None) inside `ns` can open a TCP connection to addr:port.
fn tcp_as(ns: &Netns, user: Option<&TestUser>, addr: &str, port: u16) -> bool {
    let out = common::run(
        as_user(ns, user, "ncat")
            .args(["-z", "-w", "1", addr, &port.to_string()])
            .stdin(Stdio::null()),
    );
    out.status.success()
}

/// Sends one UDP datagram from `user` inside `ns` to addr:port (delivery is checked at the peer).
fn udp_as(ns: &Netns, user: Option<&TestUser>, addr: &str, port: u16) {
    let mut child = as_user(ns, user, "ncat")
        .args(["-u", "--send-only", "-w", "1", addr, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ncat");
    let _ = child.stdin.take().unwrap().write_all(b"probe\n");
    let _ = child.wait();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// --- inbound: SSH exposure -------------------------------------------------------------------

#[test]
fn nix_rules_tailnet_ssh_only_via_tailscale0() {
    if !available("nix_rules_tailnet_ssh_only_via_tailscale0") {
        return;
    }
    let t = topology();
    load(
        &t.host,
        &render(r#"{ sshExposure.mode = "tailnet"; tailnet.mode = "tailscale"; }"#),
    );
    let _l = Listeners::start(&t.host, "0.0.0.0", &[22, 80], &[]);
    assert!(
        tcp_from(&t.peer, HOST_TS, 22),
        "tailnet mode must accept SSH on tailscale0"
    );
    assert!(
        !tcp_from(&t.peer, HOST_WAN, 22),
        "tailnet mode must drop SSH on eth0"
    );
    assert!(
        !tcp_from(&t.peer, HOST_WAN, 80),
        "unlisted ports are dropped"
    );
    assert!(
        !tcp_from(&t.peer, HOST_TS, 80),
        "tailscale0 is not a trusted interface"
    );
}

#[test]
fn nix_rules_bootstrap_open_then_closed_by_expiry_command() {
    if !available("nix_rules_bootstrap_open_then_closed_by_expiry_command") {
        return;
    }
    let t = topology();
    load(&t.host, &render(r#"{ sshExposure.mode = "bootstrap"; }"#));
    let _l = Listeners::start(&t.host, "0.0.0.0", &[22], &[]);
    assert!(
        tcp_from(&t.peer, HOST_WAN, 22),
        "bootstrap mode must accept SSH on eth0"
    );
    assert!(
        tcp_from(&t.peer, HOST_TS, 22),
        "bootstrap mode must accept SSH on tailscale0"
    );

    // What clawdlets-bootstrap-expiry.service runs when the window is over.
    let close = nix_eval(&format!(
        "(import {}).closeBootstrapCommand \"clawdlets\"",
        repo_root().join("modules/lib/firewall.nix").display()
    ));
    let close: Vec<&str> = close.as_str().unwrap().split(' ').collect();
    common::run_ok(t.host.cmd("nft").args(&close));
    assert!(
        !tcp_from(&t.peer, HOST_WAN, 22),
        "expired bootstrap must drop SSH on eth0"
    );
    assert!(
        tcp_from(&t.peer, HOST_TS, 22),
        "expired bootstrap keeps the tailnet path"
    );
}

#[test]
fn nix_rules_bootstrap_deadline_enforced_by_kernel() {
    if !available("nix_rules_bootstrap_deadline_enforced_by_kernel") {
        return;
    }
    let t = topology();
    let _l = Listeners::start(&t.host, "0.0.0.0", &[22], &[]);
    let future = now() + 3600;
    load(
        &t.host,
        &render(&format!(
            r#"{{ sshExposure = {{ mode = "bootstrap"; bootstrapUntil = {future}; }}; }}"#
        )),
    );
    assert!(
        tcp_from(&t.peer, HOST_WAN, 22),
        "bootstrap before its deadline accepts SSH on eth0"
    );

    let past = now() - 60;
    load(
        &t.host,
        &render(&format!(
            r#"{{ sshExposure = {{ mode = "bootstrap"; bootstrapUntil = {past}; }}; }}"#
        )),
    );
    assert!(
        !tcp_from(&t.peer, HOST_WAN, 22),
        "bootstrap after its deadline drops SSH on eth0 with no unit involved"
    );
    assert!(
        tcp_from(&t.peer, HOST_TS, 22),
        "the tailnet path survives the deadline"
    );
}

#[test]
fn nix_rules_public_and_source_ranges() {
    if !available("nix_rules_public_and_source_ranges") {
        return;
    }
    let t = topology();
    let _l = Listeners::start(&t.host, "0.0.0.0", &[22], &[]);
    load(
        &t.host,
        &render(r#"{ sshExposure.mode = "public"; tailnet.mode = "none"; }"#),
    );
    assert!(
        tcp_from(&t.peer, HOST_WAN, 22),
        "public mode accepts SSH on eth0"
    );

    load(
        &t.host,
        &render(&format!(
            r#"{{ sshExposure = {{ mode = "public"; sourceRanges = [ "{PEER_WAN}/32" ]; }}; tailnet.mode = "none"; }}"#
        )),
    );
    assert!(
        tcp_from(&t.peer, HOST_WAN, 22),
        "an address inside sourceRanges is accepted"
    );
    load(
        &t.host,
        &render(
            r#"{ sshExposure = { mode = "public"; sourceRanges = [ "198.51.100.0/24" ]; }; tailnet.mode = "none"; }"#,
        ),
    );
    assert!(
        !tcp_from(&t.peer, HOST_WAN, 22),
        "an address outside sourceRanges is dropped"
    );
}

// --- outbound: egress ------------------------------------------------------------------------

fn assert_smtp_blocked(t: &Topology, l: &Listeners, user: Option<&TestUser>, who: &str) {
    for p in SMTP_PORTS {
        assert!(
            !tcp_as(&t.host, user, PEER_WAN, p),
            "{who}: TCP {p} must be blocked"
        );
    }
    udp_as(&t.host, user, PEER_WAN, 25);
    udp_as(&t.host, user, PEER_WAN, 587);
    assert!(
        !l.udp_received(25) && !l.udp_received(587),
        "{who}: UDP to mail ports must be blocked"
    );
}

#[test]
fn nix_rules_smtp_only_host_wide_blocks_tcp_and_udp_passes_https() {
    if !available("nix_rules_smtp_only_host_wide_blocks_tcp_and_udp_passes_https") {
        return;
    }
    let t = topology();
    let bot = TestUser::create("nxb", &[]);
    load(
        &t.host,
        &render(&format!(
            r#"{{ egress = {{ mode = "smtp-only"; botUsers = [ "{}" ]; }}; }}"#,
            bot.name
        )),
    );
    let l = Listeners::start(
        &t.peer,
        "0.0.0.0",
        &[25, 465, 587, 2525, 443],
        &[25, 587, 443],
    );
    assert_smtp_blocked(&t, &l, None, "root (host-wide)");
    assert_smtp_blocked(&t, &l, Some(&bot), "bot user");
    assert!(
        tcp_as(&t.host, None, PEER_WAN, 443),
        "HTTPS egress passes for root"
    );
    assert!(
        tcp_as(&t.host, Some(&bot), PEER_WAN, 443),
        "HTTPS egress passes for the bot"
    );
    udp_as(&t.host, Some(&bot), PEER_WAN, 443);
    assert!(l.udp_received(443), "non-mail UDP passes");

    // A local relay: reachable for the host, never for a bot (it would relay the bot's spam).
    let _relay = Listeners::start(&t.host, "127.0.0.1", &[25], &[]);
    assert!(
        tcp_as(&t.host, None, "127.0.0.1", 25),
        "root reaches a loopback relay"
    );
    assert!(
        !tcp_as(&t.host, Some(&bot), "127.0.0.1", 25),
        "a bot cannot reach a loopback relay"
    );
}

#[test]
fn nix_rules_smtp_bots_only_is_scoped_by_uid() {
    if !available("nix_rules_smtp_bots_only_is_scoped_by_uid") {
        return;
    }
    let t = topology();
    let bot = TestUser::create("nxb", &[]);
    let other = TestUser::create("nxo", &[]);
    load(
        &t.host,
        &render(&format!(
            r#"{{ egress = {{ mode = "smtp-only"; smtpHostWide = false; botUsers = [ "{}" ]; }}; }}"#,
            bot.name
        )),
    );
    let l = Listeners::start(&t.peer, "0.0.0.0", &[25, 465, 587, 2525, 443], &[25, 587]);
    assert_smtp_blocked(&t, &l, Some(&bot), "bot user");
    assert!(
        tcp_as(&t.host, Some(&other), PEER_WAN, 25),
        "a non-bot user may reach port 25 when hostWide = false"
    );
    assert!(
        tcp_as(&t.host, None, PEER_WAN, 587),
        "root may reach port 587 when hostWide = false"
    );
    udp_as(&t.host, Some(&other), PEER_WAN, 25);
    assert!(
        l.udp_received(25),
        "a non-bot user's UDP to 25 passes when hostWide = false"
    );
}

#[test]
fn nix_rules_smtp_exempt_user_only() {
    if !available("nix_rules_smtp_exempt_user_only") {
        return;
    }
    let t = topology();
    let mta = TestUser::create("nxm", &[]);
    load(
        &t.host,
        &render(&format!(
            r#"{{ egress = {{ mode = "smtp-only"; exemptUsers = [ {} ]; }}; }}"#,
            mta.uid
        )),
    );
    let _l = Listeners::start(&t.peer, "0.0.0.0", &[25], &[]);
    assert!(
        tcp_as(&t.host, Some(&mta), PEER_WAN, 25),
        "the exempt MTA user reaches port 25"
    );
    assert!(
        !tcp_as(&t.host, None, PEER_WAN, 25),
        "everyone else is still blocked"
    );
}

#[test]
fn nix_rules_proxy_allowlist_bots_reach_only_the_proxy() {
    if !available("nix_rules_proxy_allowlist_bots_reach_only_the_proxy") {
        return;
    }
    let t = topology();
    let bot = TestUser::create("nxb", &[]);
    load(
        &t.host,
        &render(&format!(
            r#"{{ egress = {{ mode = "proxy-allowlist"; botUsers = [ "{}" ]; botLoopbackTcpPorts = [ 3128 ]; }}; }}"#,
            bot.name
        )),
    );
    let _peer = Listeners::start(&t.peer, "0.0.0.0", &[443, 25], &[]);
    let _proxy = Listeners::start(&t.host, "127.0.0.1", &[3128, 8080], &[]);
    assert!(
        !tcp_as(&t.host, Some(&bot), PEER_WAN, 443),
        "a bot cannot reach the internet directly"
    );
    assert!(
        tcp_as(&t.host, Some(&bot), "127.0.0.1", 3128),
        "a bot reaches the loopback proxy"
    );
    assert!(
        !tcp_as(&t.host, Some(&bot), "127.0.0.1", 8080),
        "a bot cannot reach other loopback services"
    );
    assert!(
        tcp_as(&t.host, None, PEER_WAN, 443),
        "the proxy's (non-bot) traffic goes out"
    );
    assert!(
        !tcp_as(&t.host, None, PEER_WAN, 25),
        "mail ports stay blocked host-wide"
    );
}

#[test]
fn nix_rules_egress_none_restricts_nothing() {
    if !available("nix_rules_egress_none_restricts_nothing") {
        return;
    }
    let t = topology();
    let bot = TestUser::create("nxb", &[]);
    load(
        &t.host,
        &render(&format!(
            r#"{{ egress = {{ mode = "none"; botUsers = [ "{}" ]; }}; }}"#,
            bot.name
        )),
    );
    let _l = Listeners::start(&t.peer, "0.0.0.0", &[25], &[]);
    assert!(
        tcp_as(&t.host, Some(&bot), PEER_WAN, 25),
        "egress none leaves SMTP open (the module warns)"
    );
}

#[test]
fn nix_rules_reject_injection_before_nft() {
    // Pure: a hostile user name never reaches nft; evaluation fails instead.
    if !require_tool("nix_rules_reject_injection_before_nft", "nix-instantiate") {
        return;
    }
    let lib = repo_root().join("modules/lib/firewall.nix");
    let expr = format!(
        r#"(builtins.tryEval (builtins.deepSeq ((import {}).render {{ egress.botUsers = [ "x\" }} accept; #" ]; }}) true)).success"#,
        lib.display()
    );
    assert_eq!(nix_eval(&expr), serde_json::Value::Bool(false));
}

/// The cgroup v2 hierarchy root, when this machine has one (pure v2 or the hybrid `unified` mount).
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// A leaf cgroup `<unique>/bot.service` (level 2, like `system.slice/x.service`), removed on drop.
struct TestCgroup {
    root: PathBuf,
    rel: String,
}

impl TestCgroup {
    fn create(root: &Path) -> TestCgroup {
        let rel = format!("{}/bot.service", common::unique_name("clwcg"));
        std::fs::create_dir_all(root.join(&rel)).expect("create cgroup");
        TestCgroup {
            root: root.to_path_buf(),
            rel,
        }
    }

    fn procs(&self) -> PathBuf {
        self.root.join(&self.rel).join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let leaf = self.root.join(&self.rel);
        let _ = std::fs::remove_dir(&leaf);
        if let Some(parent) = leaf.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[test]
fn nix_rules_bot_cgroup_set_blocks_smtp_whatever_the_uid() {
    let test = "nix_rules_bot_cgroup_set_blocks_smtp_whatever_the_uid";
    if !available(test) || !require_tool(test, "nsenter") || !require_tool(test, "unshare") {
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("SKIP {test}: no cgroup v2 hierarchy on this machine");
        return;
    };
    let t = topology();
    // No bot uids: only the cgroup rules can match, as for a DynamicUser bot unit.
    load(
        &t.host,
        &render(r#"{ egress = { mode = "smtp-only"; smtpHostWide = false; botUsers = [ ]; }; }"#),
    );
    let _l = Listeners::start(&t.peer, "0.0.0.0", &[25, 443], &[]);
    let cg = TestCgroup::create(&root);

    // What systemd does for NFTSet=cgroup:inet:clawdlets:bot_cgroups. nft resolves the path
    // under /sys/fs/cgroup, so on a hybrid layout the v2 mount is bound there privately.
    let netns_path = format!("/run/netns/{}", t.host.name);
    let add = format!(
        "mount --bind {} /sys/fs/cgroup && nsenter --net={netns_path} nft add element inet clawdlets bot_cgroups '{{ \"{}\" }}'",
        root.display(),
        cg.rel
    );
    common::run_ok(Command::new("unshare").args(["-m", "sh", "-c", &add]));

    // `ip netns exec` would remount /sys (hiding the cgroup mount); nsenter keeps it.
    let in_cgroup = |port: u16| {
        let script = format!(
            "echo $$ > {} && exec ncat -z -w 1 {PEER_WAN} {port}",
            cg.procs().display()
        );
        common::run(
            Command::new("nsenter")
                .arg(format!("--net={netns_path}"))
                .args(["sh", "-c", &script]),
        )
        .status
        .success()
    };
    assert!(
        !in_cgroup(25),
        "a process in a bot unit's cgroup is blocked from SMTP even as root"
    );
    assert!(in_cgroup(443), "the same process reaches HTTPS");
    assert!(
        tcp_as(&t.host, None, PEER_WAN, 25),
        "outside the bot cgroup SMTP passes (hostWide = false)"
    );
}

#[test]
fn nix_rules_ipv6_follows_the_same_policy() {
    if !available("nix_rules_ipv6_follows_the_same_policy") {
        return;
    }
    let t = topology();
    t.host.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    t.peer.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "wan0",
        "nodad",
    ]);
    t.host.ip(&[
        "-6",
        "addr",
        "add",
        "fd7a:115c:a1e0::1/64",
        "dev",
        "tailscale0",
        "nodad",
    ]);
    t.peer.ip(&[
        "-6",
        "addr",
        "add",
        "fd7a:115c:a1e0::2/64",
        "dev",
        "ts0",
        "nodad",
    ]);
    // Neighbour discovery must pass the input policy, or nothing below could connect at all.
    load(&t.host, &render(r#"{ sshExposure.mode = "tailnet"; }"#));
    let _l = Listeners::start(&t.host, "[::]", &[22], &[]);
    assert!(
        tcp_from(&t.peer, "[fd7a:115c:a1e0::1]", 22),
        "tailnet SSH over IPv6 on tailscale0"
    );
    assert!(
        !tcp_from(&t.peer, "[2001:db8:1::1]", 22),
        "tailnet mode drops IPv6 SSH on eth0"
    );

    load(
        &t.host,
        &render(
            r#"{ sshExposure = { mode = "public"; sourceRanges = [ "2001:db8:1::2/128" ]; }; tailnet.mode = "none"; }"#,
        ),
    );
    assert!(
        tcp_from(&t.peer, "[2001:db8:1::1]", 22),
        "an IPv6 source inside sourceRanges is accepted"
    );
    load(
        &t.host,
        &render(
            r#"{ sshExposure = { mode = "public"; sourceRanges = [ "2001:db8:9::/48" ]; }; tailnet.mode = "none"; }"#,
        ),
    );
    assert!(
        !tcp_from(&t.peer, "[2001:db8:1::1]", 22),
        "an IPv6 source outside sourceRanges is dropped"
    );
}
