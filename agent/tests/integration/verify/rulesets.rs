//! Rulesets for the differential tests: NixOS-shaped firewalls (the nftables firewall NixOS
//! generates, per SSH exposure and egress mode) and random rulesets from the grammar subset
//! the evaluator models. Text in nft syntax, loaded with `nft -f`.

use rand::Rng;
use rand::seq::SliceRandom;

/// Ports the generator mentions (a superset of the probed ones).
const PORT_POOL: &[u16] = &[22, 25, 53, 80, 443, 465, 587, 2525, 5000, 8080, 41641];

/// A NixOS-style `networking.nftables` firewall (`table inet nixos-fw`) plus, per egress mode,
/// the output rules clawdlets adds.
pub fn nixos(exposure: &str, egress: &str, tailscale: bool, reject: bool) -> String {
    let mut input_allow = String::new();
    match exposure {
        "bootstrap" | "public" => input_allow.push_str("    tcp dport { 22 } accept\n"),
        _ => input_allow.push_str("    iifname \"tailscale0\" tcp dport { 22 } accept\n"),
    }
    input_allow.push_str("    tcp dport { 80, 443 } accept\n");
    if tailscale {
        input_allow.push_str("    udp dport { 41641 } accept\n");
    }
    input_allow.push_str("    icmp type echo-request accept comment \"allow ping\"\n");
    input_allow.push_str("    icmpv6 type != { nd-redirect, 139 } accept comment \"Accept all ICMPv6 messages except redirects and node information queries (type 139).  See RFC 4890, section 4.4.\"\n");
    input_allow
        .push_str("    ip6 daddr fe80::/64 udp dport 546 accept comment \"DHCPv6 client\"\n");
    let refuse = if reject {
        "    meta l4proto tcp reject with tcp reset\n    reject\n"
    } else {
        ""
    };
    let trusted = if tailscale && exposure == "tailnet-trusted" {
        "\"lo\", \"tailscale0\""
    } else {
        "\"lo\""
    };
    let mut s = format!(
        r#"table inet nixos-fw {{
  chain rpfilter {{
    type filter hook prerouting priority mangle + 10; policy drop;
    meta nfproto ipv4 udp sport . udp dport {{ 68 . 67, 67 . 68 }} accept comment "DHCPv4 client/server"
    fib saddr . mark . iif oif exists accept
    jump rpfilter-allow
  }}
  chain rpfilter-allow {{
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iifname {{ {trusted} }} accept comment "trusted interfaces"
    ct state vmap {{ invalid : drop, established : accept, related : accept, new : jump input-allow, untracked : jump input-allow }}
    tcp flags syn / fin,syn,rst,ack log level info prefix "refused connection: "
{refuse}  }}
  chain input-allow {{
{input_allow}  }}
}}
"#
    );
    match egress {
        "smtp-only" => s.push_str(
            r#"table inet clawdlets-egress {
  chain output {
    type filter hook output priority filter; policy accept;
    oifname "lo" accept
    meta l4proto { tcp, udp } th dport { 25, 465, 587, 2525 } counter drop comment "no outbound mail"
  }
}
"#,
        ),
        "proxy-allowlist" => s.push_str(
            r#"table inet clawdlets-egress {
  set bot_uids {
    type uid
    elements = { 0, 990 }
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname "lo" accept
    meta l4proto { tcp, udp } th dport { 25, 465, 587, 2525 } counter drop
    ct state established,related accept
    meta skuid @bot_uids counter reject comment "bots go through the loopback proxy"
  }
}
"#,
        ),
        _ => {}
    }
    s
}

struct Table {
    family: &'static str,
    sets: Vec<String>,
    chains: Vec<String>,
}

fn pick<'a, T>(rng: &mut impl Rng, v: &'a [T]) -> &'a T {
    v.choose(rng).expect("non-empty")
}

fn port_expr(rng: &mut impl Rng, sets: &[(String, bool)]) -> String {
    match rng.gen_range(0..6) {
        0 | 1 => pick(rng, PORT_POOL).to_string(),
        2 => {
            let n = rng.gen_range(1..4);
            let mut v: Vec<u16> = PORT_POOL.choose_multiple(rng, n).copied().collect();
            v.sort();
            format!(
                "{{ {} }}",
                v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            )
        }
        3 => {
            let a = rng.gen_range(1..30000u16);
            format!("{a}-{}", a + rng.gen_range(0..20000))
        }
        4 if !sets.is_empty() => format!("@{}", pick(rng, sets).0),
        _ => format!("!= {}", pick(rng, PORT_POOL)),
    }
}

fn addr_expr(rng: &mut impl Rng, v6: bool) -> String {
    let opts: &[&str] = if v6 {
        &[
            "2001:db8:1::/64",
            "2001:db8:1::2",
            "fd7a:115c:a1e0::/48",
            "2001:db8:9::/48",
            "fd7a:115c:a1e0::2",
            "2001:db8:1::1",
        ]
    } else {
        &[
            "203.0.113.0/24",
            "203.0.113.2",
            "100.64.0.0/10",
            "198.51.100.0/24",
            "100.64.0.2",
            "203.0.113.1",
            "100.64.0.1-100.64.0.9",
        ]
    };
    match rng.gen_range(0..4) {
        0 => format!("!= {}", pick(rng, opts)),
        1 => {
            let mut v: Vec<&str> = opts.choose_multiple(rng, 2).copied().collect();
            // Overlapping intervals are rejected by nft; keep plain addresses in sets.
            v.retain(|a| !a.contains('/') && !a.contains('-'));
            if v.is_empty() {
                pick(rng, opts).to_string()
            } else {
                format!("{{ {} }}", v.join(", "))
            }
        }
        _ => pick(rng, opts).to_string(),
    }
}

fn ct_expr(rng: &mut impl Rng) -> String {
    let states = ["new", "established", "related", "invalid"];
    match rng.gen_range(0..4) {
        0 => format!("ct state {}", pick(rng, &states)),
        1 => "ct state established,related".to_string(),
        2 => format!("ct state != {}", pick(rng, &states)),
        _ => "ct state { established, related }".to_string(),
    }
}

/// One random match for a chain of `family` on `hook`; `has_tcp` is set when it implies TCP.
fn random_match(
    rng: &mut impl Rng,
    family: &str,
    hook: &str,
    sets: &[(String, bool)],
    has_tcp: &mut bool,
    proto: &mut Option<&'static str>,
    ipfam: &mut Option<u8>,
) -> String {
    let ifaces = ["eth0", "tailscale0", "lo", "eth*", "tail*"];
    loop {
        let v6 = match *ipfam {
            Some(f) => f == 6,
            None => family == "ip6" || (family == "inet" && rng.gen_bool(0.5)),
        };
        let m = match rng.gen_range(0..14) {
            0 => format!(
                "iifname {}{}",
                if rng.gen_bool(0.2) { "!= " } else { "" },
                quoted(ifaces[rng.gen_range(0..ifaces.len())])
            ),
            1 => format!(
                "oifname {}{}",
                if rng.gen_bool(0.2) { "!= " } else { "" },
                quoted(ifaces[rng.gen_range(0..ifaces.len())])
            ),
            2 | 3 => ct_expr(rng),
            4 | 5 if matches!(*proto, None | Some("tcp")) => {
                *has_tcp = true;
                *proto = Some("tcp");
                let tcp_sets: Vec<(String, bool)> = sets.to_vec();
                format!("tcp dport {}", port_expr(rng, &tcp_sets))
            }
            6 | 7 if matches!(*proto, None | Some("udp")) => {
                *proto = Some("udp");
                format!("udp dport {}", port_expr(rng, sets))
            }
            8 if proto.is_none() => match rng.gen_range(0..3) {
                0 => {
                    *proto = Some("tcp");
                    *has_tcp = true;
                    "meta l4proto tcp".to_string()
                }
                1 => {
                    *proto = Some("udp");
                    "meta l4proto udp".to_string()
                }
                _ => {
                    *proto = Some("any");
                    "meta l4proto { tcp, udp }".to_string()
                }
            },
            9 | 10 if !v6 => {
                *ipfam = Some(4);
                format!(
                    "ip {} {}",
                    if rng.gen_bool(0.5) { "saddr" } else { "daddr" },
                    addr_expr(rng, false)
                )
            }
            9 | 10 => {
                *ipfam = Some(6);
                format!(
                    "ip6 {} {}",
                    if rng.gen_bool(0.5) { "saddr" } else { "daddr" },
                    addr_expr(rng, true)
                )
            }
            11 if matches!(*proto, None | Some("tcp")) => {
                *has_tcp = true;
                *proto = Some("tcp");
                if rng.gen_bool(0.5) {
                    "tcp flags syn".to_string()
                } else {
                    "tcp flags & (syn | ack) == syn".to_string()
                }
            }
            12 if family == "inet" && ipfam.is_none() => {
                let four = rng.gen_bool(0.5);
                *ipfam = Some(if four { 4 } else { 6 });
                format!("meta nfproto {}", if four { "ipv4" } else { "ipv6" })
            }
            13 if hook == "prerouting" => "fib saddr . iif oif exists".to_string(),
            13 if proto.is_none() => {
                *proto = Some("any");
                format!(
                    "meta l4proto {{ tcp, udp }} th dport {}",
                    pick(rng, PORT_POOL)
                )
            }
            _ => continue,
        };
        return m;
    }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// A random ruleset: 1-3 tables of mixed families, base chains on the local hooks with
/// random priorities and policies, regular chains reached by jump/goto (acyclic), named
/// sets, verdict maps, and rules drawn from the modelled grammar.
pub fn random(rng: &mut impl Rng) -> String {
    let mut out = String::new();
    let ntables = rng.gen_range(1..=3);
    for t in 0..ntables {
        let family = *pick(rng, &["inet", "inet", "ip", "ip6"]);
        let mut table = Table {
            family,
            sets: Vec::new(),
            chains: Vec::new(),
        };
        let mut set_names: Vec<(String, bool)> = Vec::new();
        if rng.gen_bool(0.5) {
            let n: Vec<u16> = PORT_POOL.choose_multiple(rng, 3).copied().collect();
            table.sets.push(format!(
                "  set ports {{\n    type inet_service\n    flags interval\n    elements = {{ {}, 30000-30010 }}\n  }}\n",
                n.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            ));
            set_names.push(("ports".into(), true));
        }
        let nbase = rng.gen_range(1..=3);
        for b in 0..nbase {
            let hook = *pick(
                rng,
                &[
                    "input",
                    "input",
                    "output",
                    "output",
                    "prerouting",
                    "postrouting",
                ],
            );
            let prio = *pick(rng, &[-150i32, -10, 0, 0, 10]);
            let policy = if rng.gen_bool(0.35) { "drop" } else { "accept" };
            let can_reject = hook == "input" || hook == "output";
            // Regular chains owned by this base chain; chain k may jump only to chains > k.
            let nreg = rng.gen_range(0..=2);
            let reg_names: Vec<String> = (0..nreg).map(|k| format!("b{b}r{k}")).collect();
            let mut bodies = Vec::new();
            for k in 0..=nreg {
                let targets: Vec<String> = if k == 0 {
                    reg_names.clone()
                } else {
                    reg_names[k..].to_vec()
                };
                let mut body = String::new();
                for _ in 0..rng.gen_range(0..=5) {
                    body.push_str("    ");
                    body.push_str(&random_rule(
                        rng,
                        family,
                        hook,
                        &set_names,
                        &targets,
                        can_reject,
                        k > 0,
                    ));
                    body.push('\n');
                }
                bodies.push(body);
            }
            table.chains.push(format!(
                "  chain b{b} {{\n    type filter hook {hook} priority {prio}; policy {policy};\n{}  }}\n",
                bodies[0]
            ));
            for (k, name) in reg_names.iter().enumerate() {
                table
                    .chains
                    .push(format!("  chain {name} {{\n{}  }}\n", bodies[k + 1]));
            }
        }
        out.push_str(&format!("table {} t{t} {{\n", table.family));
        for s in &table.sets {
            out.push_str(s);
        }
        for c in &table.chains {
            out.push_str(c);
        }
        out.push_str("}\n");
    }
    out
}

fn random_rule(
    rng: &mut impl Rng,
    family: &str,
    hook: &str,
    sets: &[(String, bool)],
    targets: &[String],
    can_reject: bool,
    regular: bool,
) -> String {
    let mut has_tcp = false;
    let mut proto = None;
    let mut ipfam = None;
    let n = rng.gen_range(0..=3);
    let mut parts: Vec<String> = (0..n)
        .map(|_| {
            random_match(
                rng,
                family,
                hook,
                sets,
                &mut has_tcp,
                &mut proto,
                &mut ipfam,
            )
        })
        .collect();
    if rng.gen_bool(0.1) {
        parts.push("counter".into());
    }
    // Verdict maps stand alone.
    if rng.gen_bool(0.08) {
        let v = if rng.gen_bool(0.5) {
            format!(
                "ct state vmap {{ established : accept, related : accept, new : {}, invalid : drop }}",
                if targets.is_empty() {
                    "drop".to_string()
                } else {
                    format!("jump {}", pick(rng, targets))
                }
            )
        } else {
            format!(
                "tcp dport vmap {{ {} : accept, {} : drop }}",
                22,
                pick(rng, &[25u16, 80, 8080])
            )
        };
        return v;
    }
    let mut verdicts: Vec<String> = vec![
        "accept".into(),
        "accept".into(),
        "drop".into(),
        "drop".into(),
    ];
    if can_reject {
        verdicts.push("reject".into());
        if has_tcp {
            verdicts.push("reject with tcp reset".into());
        }
    }
    if !targets.is_empty() {
        verdicts.push(format!("jump {}", pick(rng, targets)));
        verdicts.push(format!("goto {}", pick(rng, targets)));
    }
    if regular {
        verdicts.push("return".into());
    }
    if rng.gen_bool(0.1) {
        parts.push("counter".into());
    } else {
        parts.push(pick(rng, &verdicts).clone());
    }
    parts.join(" ")
}
