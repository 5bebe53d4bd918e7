//! Evaluates one packet through the base chains of the hooks on its path, in priority order,
//! the way netfilter does: within a chain rules run in order, `accept` ends the chain (the next
//! base chain still runs), `drop`/`reject` end everything, `jump` returns, `goto` does not, and
//! the base chain's policy applies when a packet falls off the end. Three-valued throughout: a
//! construct the model does not understand, once reached, makes the answer `Inconclusive` with
//! the construct named — never a pass.

use std::net::IpAddr;

use super::model::{
    Chain, Elem, Expr, Family, Field, Hook, IpVer, L4, Match, Op, Policy, Rule, Ruleset, Verdict,
};

/// Conntrack state of a packet, as the `ct state` bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    Invalid,
    Established,
    Related,
    New,
    Untracked,
}

impl CtState {
    fn bits(self) -> u64 {
        match self {
            CtState::Invalid => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::New => 8,
            CtState::Untracked => 64,
        }
    }
}

fn ct_state_bit(name: &str) -> Option<u64> {
    Some(match name {
        "invalid" => 1,
        "established" => 2,
        "related" => 4,
        "new" => 8,
        "untracked" => 64,
        _ => return None,
    })
}

/// Which way a packet travels through the host's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Addressed to this host: prerouting, then input.
    LocalIn,
    /// Sent by this host: output, then postrouting.
    LocalOut,
}

/// IP protocol numbers the model uses.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// A packet as the evaluator sees it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub path: Path,
    /// Input interface name (LocalIn only).
    pub iif: Option<String>,
    /// Output interface name (LocalOut only).
    pub oif: Option<String>,
    pub l4proto: u8,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flag bits (SYN = 0x02); 0 for other protocols.
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type, for ICMP packets.
    pub icmp_type: Option<u8>,
    pub ct_state: CtState,
    /// Owner of the sending socket, when known (LocalOut).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Whether the source address routes back through `iif` (an honest, non-spoofed sender);
    /// `None` when the model cannot tell (loopback traffic, where the kernel's fib lookup has
    /// per-family special cases).
    pub rp_ok: Option<bool>,
}

impl Packet {
    /// A new TCP connection attempt (SYN) or UDP datagram arriving on `iif`.
    pub fn inbound(
        iif: &str,
        l4proto: u8,
        saddr: IpAddr,
        daddr: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Packet {
        Packet {
            path: Path::LocalIn,
            iif: Some(iif.to_string()),
            oif: None,
            l4proto,
            saddr,
            daddr,
            sport: Some(sport),
            dport: Some(dport),
            tcp_flags: if l4proto == TCP { 0x02 } else { 0 },
            icmp_type: None,
            ct_state: CtState::New,
            uid: None,
            gid: None,
            rp_ok: Some(true),
        }
    }

    /// A new TCP connection attempt (SYN) or UDP datagram sent by this host through `oif`.
    pub fn outbound(
        oif: &str,
        l4proto: u8,
        saddr: IpAddr,
        daddr: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Packet {
        Packet {
            path: Path::LocalOut,
            iif: None,
            oif: Some(oif.to_string()),
            ..Packet::inbound(oif, l4proto, saddr, daddr, sport, dport)
        }
    }

    pub fn ipver(&self) -> IpVer {
        if self.saddr.is_ipv4() {
            IpVer::V4
        } else {
            IpVer::V6
        }
    }
}

/// What happened to a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Drop,
    Reject {
        tcp_reset: bool,
    },
    /// The model cannot tell; the string names the construct and where it is.
    Inconclusive(String),
}

/// An outcome and the rule or policy that decided it (for evidence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub by: String,
}

const MAX_DEPTH: usize = 64;

/// Evaluates `pkt` through every base chain on its path.
pub fn evaluate(rs: &Ruleset, pkt: &Packet) -> Decision {
    let hooks: &[Hook] = match pkt.path {
        Path::LocalIn => &[Hook::Prerouting, Hook::Input],
        Path::LocalOut => &[Hook::Output, Hook::Postrouting],
    };
    let mut last_accept = String::from("no base chain on this path (accepted)");
    if pkt.path == Path::LocalIn {
        // Ingress hooks (netdev, or inet since Linux 5.10) run before prerouting. nft's JSON
        // does not say which device a netdev chain is bound to, so a non-trivial one is opaque.
        for c in &rs.chains {
            let Some(b) = &c.base else { continue };
            if b.hook == Hook::Ingress && (!c.rules.is_empty() || b.policy == Policy::Drop) {
                return Decision {
                    outcome: Outcome::Inconclusive(format!(
                        "ingress chain {} (its device is not in nft's JSON)",
                        c.display()
                    )),
                    by: c.display(),
                };
            }
        }
    }
    for hook in hooks {
        let mut chains: Vec<(usize, &Chain)> = rs
            .chains
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let Some(b) = &c.base else { return false };
                if &b.hook != hook {
                    return false;
                }
                let fam_ok = match c.family {
                    Family::Inet => true,
                    Family::Ip => pkt.ipver() == IpVer::V4,
                    Family::Ip6 => pkt.ipver() == IpVer::V6,
                    _ => false,
                };
                // NAT chains see only the first packet of a connection.
                fam_ok && (b.kind != "nat" || pkt.ct_state == CtState::New)
            })
            .collect();
        // Lower priority first. On a tie the kernel runs the chain registered *last* first
        // (nf_hook_entries_grow inserts before equal priorities); nft lists chains in creation
        // order, so ties go in reverse listing order.
        chains.sort_by_key(|(i, c)| (c.base.as_ref().map_or(0, |b| b.prio), std::cmp::Reverse(*i)));
        for (_, chain) in chains {
            let d = run_base_chain(rs, chain, pkt);
            match d.outcome {
                Outcome::Accept => last_accept = d.by,
                _ => return d,
            }
        }
    }
    Decision {
        outcome: Outcome::Accept,
        by: last_accept,
    }
}

fn run_base_chain(rs: &Ruleset, base: &Chain, pkt: &Packet) -> Decision {
    let policy = base.base.as_ref().map_or(Policy::Accept, |b| b.policy);
    let policy_decision = || Decision {
        outcome: match policy {
            Policy::Accept => Outcome::Accept,
            Policy::Drop => Outcome::Drop,
        },
        by: format!("policy of {}", base.display()),
    };
    let mut frames: Vec<(&Chain, usize)> = vec![(base, 0)];
    loop {
        let Some((chain, idx)) = frames.last_mut() else {
            return policy_decision();
        };
        let chain: &Chain = chain;
        if *idx >= chain.rules.len() {
            frames.pop();
            continue;
        }
        let rule = &chain.rules[*idx];
        *idx += 1;
        let here = || format!("{} handle {}", chain.display(), rule.handle);
        let verdict = match eval_rule(rule, pkt) {
            RuleResult::NoMatch => continue,
            RuleResult::Unknown(what) => {
                return Decision {
                    outcome: Outcome::Inconclusive(format!("{what} in {}", here())),
                    by: here(),
                };
            }
            RuleResult::Verdict(v) => v,
        };
        match verdict {
            Verdict::Accept => {
                return Decision {
                    outcome: Outcome::Accept,
                    by: here(),
                };
            }
            Verdict::Drop => {
                return Decision {
                    outcome: Outcome::Drop,
                    by: here(),
                };
            }
            Verdict::Reject { tcp_reset } => {
                return Decision {
                    outcome: Outcome::Reject { tcp_reset },
                    by: here(),
                };
            }
            Verdict::Continue => {}
            Verdict::Return => {
                frames.pop();
            }
            Verdict::Jump(ref t) | Verdict::Goto(ref t) => {
                let goto = matches!(verdict, Verdict::Goto(_));
                let Some(target) = rs.chain(chain.family, &chain.table, t) else {
                    return Decision {
                        outcome: Outcome::Inconclusive(format!(
                            "jump to missing chain {t} in {}",
                            here()
                        )),
                        by: here(),
                    };
                };
                if frames.len() >= MAX_DEPTH {
                    return Decision {
                        outcome: Outcome::Inconclusive(format!(
                            "jump depth over {MAX_DEPTH} at {}",
                            here()
                        )),
                        by: here(),
                    };
                }
                if goto {
                    frames.pop();
                }
                frames.push((target, 0));
            }
        }
    }
}

enum RuleResult {
    NoMatch,
    Verdict(Verdict),
    Unknown(String),
}

/// Three-valued match result.
enum Tri {
    True,
    False,
    Unknown(String),
}

fn eval_rule(rule: &Rule, pkt: &Packet) -> RuleResult {
    let mut pending: Option<String> = None;
    for e in &rule.exprs {
        match e {
            Expr::NoOp => {}
            Expr::Match(m) => match eval_match(m, pkt) {
                Tri::True => {}
                Tri::False => return RuleResult::NoMatch,
                Tri::Unknown(w) => {
                    pending.get_or_insert(w);
                }
            },
            Expr::UnknownMatch(w) => {
                pending.get_or_insert(w.clone());
            }
            Expr::UnknownStmt(w) => {
                return RuleResult::Unknown(pending.unwrap_or_else(|| w.clone()));
            }
            Expr::Verdict(v) => {
                return match pending {
                    Some(w) => RuleResult::Unknown(w),
                    None => RuleResult::Verdict(v.clone()),
                };
            }
            Expr::VMap { key, map } => {
                let value = match field_value(key, pkt) {
                    FV::NotApplicable => return RuleResult::NoMatch,
                    FV::Unknown(w) => return RuleResult::Unknown(w),
                    FV::Val(v) => v,
                };
                let hit = map
                    .iter()
                    .find(|(el, _)| matches!(elem_eq(&value, el, key), Tri::True));
                if let Some(w) = pending {
                    return RuleResult::Unknown(w);
                }
                // Unknown element comparisons can only come from names we do not know.
                if let Some((el, _)) = map
                    .iter()
                    .find(|(el, _)| matches!(elem_eq(&value, el, key), Tri::Unknown(_)))
                {
                    return RuleResult::Unknown(format!("vmap element {el:?}"));
                }
                return match hit {
                    Some((_, v)) => RuleResult::Verdict(v.clone()),
                    None => RuleResult::NoMatch,
                };
            }
        }
    }
    RuleResult::NoMatch
}

/// A packet's value for a field.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Int(u64),
    Str(String),
    Addr(IpAddr),
    Bits(u64),
    Tuple(Vec<Val>),
}

enum FV {
    Val(Val),
    /// The field does not exist for this packet (`tcp dport` of a UDP packet): the kernel's
    /// implicit protocol dependency makes both `==` and `!=` false.
    NotApplicable,
    Unknown(String),
}

fn field_value(f: &Field, p: &Packet) -> FV {
    let port_proto = |l4: L4| match l4 {
        L4::Tcp => p.l4proto == TCP,
        L4::Udp => p.l4proto == UDP,
        L4::Th => matches!(p.l4proto, TCP | UDP | 132 | 136),
    };
    match f {
        // The kernel stores "" for a missing device, so `iifname != "x"` matches output packets.
        Field::IifName => FV::Val(Val::Str(p.iif.clone().unwrap_or_default())),
        Field::OifName => FV::Val(Val::Str(p.oif.clone().unwrap_or_default())),
        Field::Iif => p
            .iif
            .clone()
            .map_or(FV::NotApplicable, |s| FV::Val(Val::Str(s))),
        Field::Oif => p
            .oif
            .clone()
            .map_or(FV::NotApplicable, |s| FV::Val(Val::Str(s))),
        Field::L4Proto => FV::Val(Val::Int(p.l4proto.into())),
        Field::NfProto => FV::Val(Val::Int(if p.ipver() == IpVer::V4 { 2 } else { 10 })),
        // Probes are unicast to one of the host's addresses.
        Field::PktType => match p.path {
            Path::LocalIn => FV::Val(Val::Str("host".into())),
            Path::LocalOut => FV::Unknown("meta pkttype on locally generated packets".into()),
        },
        Field::SkUid | Field::SkGid => {
            let id = if *f == Field::SkUid { p.uid } else { p.gid };
            match (p.path, id) {
                (Path::LocalOut, Some(id)) => FV::Val(Val::Int(id.into())),
                _ => FV::Unknown(format!(
                    "meta {} (socket owner unknown for this packet)",
                    if *f == Field::SkUid { "skuid" } else { "skgid" }
                )),
            }
        }
        Field::CtState => FV::Val(Val::Bits(p.ct_state.bits())),
        Field::FibRpfilter => match (p.path, p.rp_ok) {
            (Path::LocalIn, Some(ok)) => FV::Val(Val::Int(u64::from(ok))),
            (Path::LocalIn, None) => {
                FV::Unknown("fib reverse-path lookup of loopback traffic".into())
            }
            (Path::LocalOut, _) => FV::Unknown("fib on locally generated packets".into()),
        },
        Field::Saddr(v) | Field::Daddr(v) => {
            if p.ipver() != *v {
                return FV::NotApplicable;
            }
            FV::Val(Val::Addr(if matches!(f, Field::Saddr(_)) {
                p.saddr
            } else {
                p.daddr
            }))
        }
        Field::IpProto(v) => {
            if p.ipver() != *v {
                return FV::NotApplicable;
            }
            FV::Val(Val::Int(p.l4proto.into()))
        }
        Field::Sport(l4) | Field::Dport(l4) => {
            if *l4 == L4::Th && !port_proto(L4::Th) {
                return FV::Unknown("th port of a protocol without ports".into());
            }
            if !port_proto(*l4) {
                return FV::NotApplicable;
            }
            let port = if matches!(f, Field::Sport(_)) {
                p.sport
            } else {
                p.dport
            };
            port.map_or(FV::Unknown("port of this packet".into()), |x| {
                FV::Val(Val::Int(x.into()))
            })
        }
        Field::IcmpType(v) => {
            let proto = if *v == IpVer::V4 { ICMP } else { ICMPV6 };
            if p.l4proto != proto || p.ipver() != *v {
                return FV::NotApplicable;
            }
            p.icmp_type
                .map_or(FV::Unknown("icmp type of this packet".into()), |t| {
                    FV::Val(Val::Int(t.into()))
                })
        }
        Field::TcpFlags { mask } => {
            if p.l4proto != TCP {
                return FV::NotApplicable;
            }
            let v = u64::from(p.tcp_flags & mask.unwrap_or(0xff));
            FV::Val(Val::Bits(v))
        }
        Field::Concat(fs) => {
            let mut out = Vec::new();
            for f in fs {
                match field_value(f, p) {
                    FV::Val(v) => out.push(v),
                    other => return other,
                }
            }
            FV::Val(Val::Tuple(out))
        }
    }
}

fn proto_number(name: &str) -> Option<u64> {
    Some(match name {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        _ => return None,
    })
}

/// Resolves a symbolic element to the number the field compares with.
fn symbol_value(field: &Field, name: &str) -> Option<u64> {
    match field {
        Field::L4Proto | Field::IpProto(_) => proto_number(name),
        Field::NfProto => match name {
            "ipv4" => Some(2),
            "ipv6" => Some(10),
            _ => None,
        },
        Field::CtState => ct_state_bit(name),
        Field::IcmpType(IpVer::V4) => Some(match name {
            "echo-reply" => 0,
            "destination-unreachable" => 3,
            "source-quench" => 4,
            "redirect" => 5,
            "echo-request" => 8,
            "router-advertisement" => 9,
            "router-solicitation" => 10,
            "time-exceeded" => 11,
            "parameter-problem" => 12,
            "timestamp-request" => 13,
            "timestamp-reply" => 14,
            _ => return None,
        }),
        Field::IcmpType(IpVer::V6) => Some(match name {
            "destination-unreachable" => 1,
            "packet-too-big" => 2,
            "time-exceeded" => 3,
            "parameter-problem" => 4,
            "echo-request" => 128,
            "echo-reply" => 129,
            "mld-listener-query" => 130,
            "mld-listener-report" => 131,
            "mld-listener-done" | "mld-listener-reduction" => 132,
            "nd-router-solicit" => 133,
            "nd-router-advert" => 134,
            "nd-neighbor-solicit" => 135,
            "nd-neighbor-advert" => 136,
            "nd-redirect" => 137,
            "router-renumbering" => 138,
            "ind-neighbor-solicit" => 141,
            "ind-neighbor-advert" => 142,
            "mld2-listener-report" => 143,
            _ => return None,
        }),
        Field::TcpFlags { .. } => super::model::tcp_flag_bit(name).map(u64::from),
        _ => None,
    }
}

fn elem_bits(field: &Field, el: &Elem) -> Option<u64> {
    match el {
        Elem::Int(n) => Some(*n),
        Elem::Str(s) => symbol_value(field, s),
        Elem::Flags(list) => list
            .iter()
            .try_fold(0, |acc, s| Some(acc | symbol_value(field, s)?)),
        _ => None,
    }
}

fn addr_num(a: &IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (true, u32::from(*v).into()),
        IpAddr::V6(v) => (false, u128::from(*v)),
    }
}

fn iface_match(value: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*')
        && !prefix.ends_with('\\')
    {
        return value.starts_with(prefix);
    }
    value == pattern.replace("\\*", "*")
}

/// Whether a packet value equals (or lies in) one element.
fn elem_eq(v: &Val, el: &Elem, field: &Field) -> Tri {
    let unknown = || Tri::Unknown(format!("cannot compare {field:?} with {el:?}"));
    let b = |x: bool| if x { Tri::True } else { Tri::False };
    match (v, el) {
        (Val::Int(x), Elem::Range(lo, hi)) => match (elem_bits(field, lo), elem_bits(field, hi)) {
            (Some(lo), Some(hi)) => b(lo <= *x && *x <= hi),
            _ => unknown(),
        },
        (Val::Int(x) | Val::Bits(x), _)
            if matches!(el, Elem::Int(_) | Elem::Str(_) | Elem::Flags(_)) =>
        {
            match elem_bits(field, el) {
                Some(n) => b(*x == n),
                None => unknown(),
            }
        }
        (Val::Str(s), Elem::Str(p)) => b(iface_match(s, p)),
        (Val::Addr(a), Elem::Addr(e)) => b(a == e),
        (Val::Addr(a), Elem::Prefix(net, len)) => {
            let (v4a, x) = addr_num(a);
            let (v4n, n) = addr_num(net);
            if v4a != v4n {
                return Tri::False;
            }
            let bits = if v4a { 32 } else { 128 };
            let len = u32::from(*len).min(bits);
            if len == 0 {
                return Tri::True;
            }
            let shift = bits - len;
            b((x >> shift) == (n >> shift))
        }
        (Val::Addr(a), Elem::Range(lo, hi)) => match (&**lo, &**hi) {
            (Elem::Addr(lo), Elem::Addr(hi)) => {
                let (f, x) = addr_num(a);
                let (fl, l) = addr_num(lo);
                let (_, h) = addr_num(hi);
                b(f == fl && l <= x && x <= h)
            }
            _ => unknown(),
        },
        (Val::Tuple(vs), Elem::Concat(es)) => {
            let Field::Concat(fs) = field else {
                return unknown();
            };
            if vs.len() != es.len() || fs.len() != es.len() {
                return unknown();
            }
            let mut all = Tri::True;
            for ((v, e), f) in vs.iter().zip(es).zip(fs) {
                match elem_eq(v, e, f) {
                    Tri::False => return Tri::False,
                    Tri::Unknown(w) => all = Tri::Unknown(w),
                    Tri::True => {}
                }
            }
            all
        }
        _ => unknown(),
    }
}

fn eval_match(m: &Match, pkt: &Packet) -> Tri {
    let v = match field_value(&m.left, pkt) {
        FV::Val(v) => v,
        FV::NotApplicable => return Tri::False,
        FV::Unknown(w) => return Tri::Unknown(w),
    };
    let any_eq = || {
        let mut res = Tri::False;
        for el in &m.right {
            match elem_eq(&v, el, &m.left) {
                Tri::True => return Tri::True,
                Tri::Unknown(w) => res = Tri::Unknown(w),
                Tri::False => {}
            }
        }
        res
    };
    let not = |t: Tri| match t {
        Tri::True => Tri::False,
        Tri::False => Tri::True,
        u => u,
    };
    match m.op {
        Op::Eq => any_eq(),
        Op::Ne => not(any_eq()),
        Op::In => {
            // Flag test: any of the listed bits set; on a set, membership.
            if m.right.len() == 1
                && let Val::Bits(x) = v
            {
                return match elem_bits(&m.left, &m.right[0]) {
                    Some(mask) => {
                        if x & mask != 0 {
                            Tri::True
                        } else {
                            Tri::False
                        }
                    }
                    None => Tri::Unknown(format!("flag {:?}", m.right[0])),
                };
            }
            any_eq()
        }
        Op::Lt | Op::Gt | Op::Le | Op::Ge => {
            let (Val::Int(x), [el]) = (&v, m.right.as_slice()) else {
                return Tri::Unknown(format!("ordering comparison on {:?}", m.left));
            };
            let Some(n) = elem_bits(&m.left, el) else {
                return Tri::Unknown(format!("ordering comparison with {el:?}"));
            };
            let r = match m.op {
                Op::Lt => *x < n,
                Op::Gt => *x > n,
                Op::Le => *x <= n,
                _ => *x >= n,
            };
            if r { Tri::True } else { Tri::False }
        }
    }
}

/// Addresses mentioned in source/destination matches, for picking representative probes.
pub fn mentioned_addrs(rs: &Ruleset) -> Vec<IpAddr> {
    fn walk(el: &Elem, out: &mut Vec<IpAddr>) {
        match el {
            Elem::Addr(a) | Elem::Prefix(a, _) => out.push(*a),
            Elem::Range(lo, hi) => {
                walk(lo, out);
                walk(hi, out);
            }
            Elem::Concat(es) => es.iter().for_each(|e| walk(e, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for c in &rs.chains {
        for r in &c.rules {
            for e in &r.exprs {
                if let Expr::Match(m) = e {
                    m.right.iter().for_each(|el| walk(el, &mut out));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
