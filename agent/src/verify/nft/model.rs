//! A typed model of the nftables ruleset subset that NixOS and the clawdlets modules generate,
//! parsed from `nft -j list ruleset`. Constructs outside the subset are kept as `Unknown` nodes
//! naming what they are, so the evaluator can report them when (and only when) a packet reaches
//! them. This module only parses; it never decides a verdict.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value as Json;

/// Address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    fn parse(s: &str) -> Option<Family> {
        Some(match s {
            "ip" => Family::Ip,
            "ip6" => Family::Ip6,
            "inet" => Family::Inet,
            "arp" => Family::Arp,
            "bridge" => Family::Bridge,
            "netdev" => Family::Netdev,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Other(String),
}

/// What a base chain does when a packet falls off its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: String,
    pub hook: Hook,
    pub prio: i64,
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn display(&self) -> String {
        format!("{} {} {}", self.family.as_str(), self.table, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub handle: u64,
    pub exprs: Vec<Expr>,
}

/// One element of a rule, evaluated left to right like the kernel does.
#[derive(Debug, Clone)]
pub enum Expr {
    Match(Match),
    /// A terminal or control verdict.
    Verdict(Verdict),
    /// `<key> vmap { value : verdict, ... }`; no entry means the rule does not match.
    VMap {
        key: Field,
        map: Vec<(Elem, Verdict)>,
    },
    /// counter, log, comment-like statements without effect on the verdict.
    NoOp,
    /// A match-like expression the evaluator cannot decide (limit, quota, unknown field).
    UnknownMatch(String),
    /// A statement with possible side effects (mark set, nat, queue...): reaching it with all
    /// previous matches true makes the evaluation inconclusive.
    UnknownStmt(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Reject; `tcp_reset` when it answers with a TCP RST instead of an ICMP error.
    Reject {
        tcp_reset: bool,
    },
    Jump(String),
    Goto(String),
    Return,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// Flag membership (`ct state established,related`, `tcp flags syn`).
    In,
}

#[derive(Debug, Clone)]
pub struct Match {
    pub left: Field,
    pub op: Op,
    pub right: Vec<Elem>,
}

/// Packet properties the evaluator understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `meta iifname`: the empty string when there is no input device.
    IifName,
    /// `meta oifname`: the empty string when there is no output device.
    OifName,
    /// `meta iif` (by index): does not match at all when there is no input device.
    Iif,
    /// `meta oif` (by index).
    Oif,
    L4Proto,
    NfProto,
    PktType,
    SkUid,
    SkGid,
    CtState,
    /// `fib saddr [. mark] . iif oif exists`, the reverse-path filter NixOS installs.
    FibRpfilter,
    Saddr(IpVer),
    Daddr(IpVer),
    /// `ip protocol` / `ip6 nexthdr`.
    IpProto(IpVer),
    Sport(L4),
    Dport(L4),
    /// `icmp type` / `icmpv6 type`.
    IcmpType(IpVer),
    /// `tcp flags`, optionally masked (`tcp flags & (syn|ack)`).
    TcpFlags {
        mask: Option<u8>,
    },
    Concat(Vec<Field>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVer {
    V4,
    V6,
}

/// The transport header a port field belongs to; `Th` is protocol-agnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    Th,
}

/// One element on the right side of a match or in a set.
#[derive(Debug, Clone, PartialEq)]
pub enum Elem {
    Int(u64),
    Str(String),
    Addr(IpAddr),
    Prefix(IpAddr, u8),
    Range(Box<Elem>, Box<Elem>),
    Concat(Vec<Elem>),
    /// Several flag names (`established,related`, `fin,syn`).
    Flags(Vec<String>),
}

/// A parsed ruleset.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
    /// Index into `chains` by (family, table, chain).
    index: HashMap<(Family, String, String), usize>,
    /// Top-level objects the model ignores (flowtables, ct helpers...), for evidence.
    pub ignored: Vec<String>,
}

impl Ruleset {
    pub fn chain(&self, family: Family, table: &str, name: &str) -> Option<&Chain> {
        self.index
            .get(&(family, table.to_string(), name.to_string()))
            .map(|&i| &self.chains[i])
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// Errors parsing `nft -j` output. Unknown *constructs* are not errors (they become `Unknown`
/// nodes); only a document that is not nft JSON at all is.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON.
    #[error("nft output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON has no top-level `nftables` array.
    #[error("nft output has no top-level \"nftables\" array")]
    Shape,
    /// A chain or rule object lacks a required key.
    #[error("nft {what} object lacks \"{key}\"")]
    Missing {
        what: &'static str,
        key: &'static str,
    },
}

type Sets = HashMap<(Family, String, String), SetDef>;

#[derive(Debug, Clone)]
enum SetDef {
    Set(Vec<Elem>),
    Map(Vec<(Elem, Verdict)>),
    Unknown(String),
}

fn str_key<'a>(o: &'a Json, what: &'static str, key: &'static str) -> Result<&'a str, ParseError> {
    o.get(key)
        .and_then(Json::as_str)
        .ok_or(ParseError::Missing { what, key })
}

/// Parses the output of `nft -j list ruleset`.
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    let doc: Json = serde_json::from_str(text)?;
    let items = doc
        .get("nftables")
        .and_then(Json::as_array)
        .ok_or(ParseError::Shape)?;
    let mut rs = Ruleset::default();
    let mut sets: Sets = HashMap::new();
    let mut rules: Vec<&Json> = Vec::new();
    // First pass: chains and sets; rules need both, and nft lists sets before their users
    // but not necessarily chains before rules of other tables.
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "metainfo" | "table" => {}
            "chain" => {
                let fam_s = str_key(body, "chain", "family")?;
                let Some(family) = Family::parse(fam_s) else {
                    rs.ignored.push(format!("chain in unknown family {fam_s}"));
                    continue;
                };
                let table = str_key(body, "chain", "table")?.to_string();
                let name = str_key(body, "chain", "name")?.to_string();
                let base = body.get("hook").and_then(Json::as_str).map(|h| BaseChain {
                    kind: body
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("filter")
                        .to_string(),
                    hook: match h {
                        "prerouting" => Hook::Prerouting,
                        "input" => Hook::Input,
                        "forward" => Hook::Forward,
                        "output" => Hook::Output,
                        "postrouting" => Hook::Postrouting,
                        "ingress" => Hook::Ingress,
                        other => Hook::Other(other.to_string()),
                    },
                    prio: body.get("prio").and_then(Json::as_i64).unwrap_or(0),
                    policy: match body.get("policy").and_then(Json::as_str) {
                        Some("drop") => Policy::Drop,
                        _ => Policy::Accept,
                    },
                });
                rs.index
                    .insert((family, table.clone(), name.clone()), rs.chains.len());
                rs.chains.push(Chain {
                    family,
                    table,
                    name,
                    base,
                    rules: Vec::new(),
                });
            }
            "set" | "map" => {
                let Some(family) = body
                    .get("family")
                    .and_then(Json::as_str)
                    .and_then(Family::parse)
                else {
                    continue;
                };
                let table = str_key(body, "set", "table")?.to_string();
                let name = str_key(body, "set", "name")?.to_string();
                let elems = body.get("elem").cloned().unwrap_or(Json::Array(vec![]));
                let def = if kind == "map" {
                    if body.get("map").and_then(Json::as_str) == Some("verdict") {
                        match parse_vmap_elems(&elems) {
                            Ok(m) => SetDef::Map(m),
                            Err(e) => SetDef::Unknown(e),
                        }
                    } else {
                        SetDef::Unknown(format!("data map @{name}"))
                    }
                } else {
                    match elems
                        .as_array()
                        .map(|a| a.iter().map(parse_elem).collect::<Result<Vec<_>, _>>())
                    {
                        Some(Ok(v)) => SetDef::Set(v),
                        Some(Err(e)) => SetDef::Unknown(format!("set @{name}: {e}")),
                        None => SetDef::Unknown(format!("set @{name} with non-list elements")),
                    }
                };
                sets.insert((family, table, name), def);
            }
            "rule" => rules.push(body),
            other => rs.ignored.push(other.to_string()),
        }
    }
    for body in rules {
        let Some(family) = body
            .get("family")
            .and_then(Json::as_str)
            .and_then(Family::parse)
        else {
            continue;
        };
        let table = str_key(body, "rule", "table")?;
        let chain = str_key(body, "rule", "chain")?;
        let handle = body.get("handle").and_then(Json::as_u64).unwrap_or(0);
        let ctx = Ctx {
            family,
            table,
            sets: &sets,
        };
        let mut exprs = Vec::new();
        for e in body
            .get("expr")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            // `reject with icmp ...` / `icmpv6 ...` carries an implicit `meta nfproto`
            // dependency that `nft -j` does not list: the rule only matches that family.
            let implied = match e
                .get("reject")
                .and_then(|r| r.get("type"))
                .and_then(Json::as_str)
            {
                Some("icmp") => Some(2),
                Some("icmpv6") => Some(10),
                _ => None,
            };
            if let Some(nfproto) = implied {
                exprs.push(Expr::Match(Match {
                    left: Field::NfProto,
                    op: Op::Eq,
                    right: vec![Elem::Int(nfproto)],
                }));
            }
            exprs.push(ctx.expr(e));
        }
        if let Some(&i) = rs
            .index
            .get(&(family, table.to_string(), chain.to_string()))
        {
            rs.chains[i].rules.push(Rule { handle, exprs });
        }
    }
    Ok(rs)
}

struct Ctx<'a> {
    family: Family,
    table: &'a str,
    sets: &'a Sets,
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.len() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

impl Ctx<'_> {
    fn expr(&self, e: &Json) -> Expr {
        let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            return Expr::UnknownStmt(short(e));
        };
        match kind.as_str() {
            "match" => self.matcher(body),
            "counter" | "log" | "comment" => Expr::NoOp,
            "accept" | "drop" | "continue" | "return" | "jump" | "goto" | "reject" => {
                match parse_verdict(e) {
                    Ok(v) => Expr::Verdict(v),
                    Err(s) => Expr::UnknownStmt(s),
                }
            }
            "vmap" => {
                let Some(key) = body.get("key").and_then(|k| parse_field(k).ok()) else {
                    return Expr::UnknownMatch(format!("vmap key {}", short(&body["key"])));
                };
                let data = &body["data"];
                let map = if let Some(name) = data.as_str().and_then(|s| s.strip_prefix('@')) {
                    match self
                        .sets
                        .get(&(self.family, self.table.to_string(), name.to_string()))
                    {
                        Some(SetDef::Map(m)) => Ok(m.clone()),
                        Some(SetDef::Unknown(why)) => Err(why.clone()),
                        _ => Err(format!("unknown verdict map @{name}")),
                    }
                } else {
                    parse_vmap_elems(data.get("set").unwrap_or(data))
                };
                match map {
                    Ok(map) => Expr::VMap { key, map },
                    // A vmap is a verdict statement: if we cannot read it we cannot know what
                    // happens to a packet that reaches it.
                    Err(why) => Expr::UnknownStmt(format!("vmap: {why}")),
                }
            }
            "limit" | "quota" | "meter" => Expr::UnknownMatch(format!("{kind} {}", short(body))),
            other => Expr::UnknownStmt(format!("{other} {}", short(body))),
        }
    }

    fn matcher(&self, body: &Json) -> Expr {
        let op = match body.get("op").and_then(Json::as_str) {
            Some("==") => Op::Eq,
            Some("!=") => Op::Ne,
            Some("<") => Op::Lt,
            Some(">") => Op::Gt,
            Some("<=") => Op::Le,
            Some(">=") => Op::Ge,
            Some("in") => Op::In,
            other => return Expr::UnknownMatch(format!("match operator {other:?}")),
        };
        let left = match parse_field(&body["left"]) {
            Ok(f) => f,
            Err(s) => return Expr::UnknownMatch(s),
        };
        let right = &body["right"];
        let elems = if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
            match self
                .sets
                .get(&(self.family, self.table.to_string(), name.to_string()))
            {
                Some(SetDef::Set(v)) => Ok(v.clone()),
                Some(SetDef::Unknown(why)) => Err(why.clone()),
                Some(SetDef::Map(_)) => Err(format!("map @{name} used as a set")),
                None => Err(format!("unknown set @{name}")),
            }
        } else if let Some(list) = right.get("set").and_then(Json::as_array) {
            list.iter().map(parse_elem).collect()
        } else {
            parse_elem(right).map(|e| vec![e])
        };
        match elems {
            Ok(right) => Expr::Match(Match { left, op, right }),
            Err(why) => Expr::UnknownMatch(why),
        }
    }
}

fn parse_field(j: &Json) -> Result<Field, String> {
    let unknown = || format!("match on {}", short(j));
    let Some((kind, body)) = j.as_object().and_then(|o| o.iter().next()) else {
        return Err(unknown());
    };
    match kind.as_str() {
        "meta" => Ok(match body.get("key").and_then(Json::as_str) {
            Some("iifname") => Field::IifName,
            Some("oifname") => Field::OifName,
            Some("iif") => Field::Iif,
            Some("oif") => Field::Oif,
            Some("l4proto") => Field::L4Proto,
            Some("nfproto") => Field::NfProto,
            Some("pkttype") => Field::PktType,
            Some("skuid") => Field::SkUid,
            Some("skgid") => Field::SkGid,
            _ => return Err(unknown()),
        }),
        "ct" => match (body.get("key").and_then(Json::as_str), body.get("dir")) {
            (Some("state"), None) => Ok(Field::CtState),
            _ => Err(unknown()),
        },
        "payload" => {
            let proto = body.get("protocol").and_then(Json::as_str);
            let field = body.get("field").and_then(Json::as_str);
            Ok(match (proto, field) {
                (Some("ip"), Some("saddr")) => Field::Saddr(IpVer::V4),
                (Some("ip"), Some("daddr")) => Field::Daddr(IpVer::V4),
                (Some("ip6"), Some("saddr")) => Field::Saddr(IpVer::V6),
                (Some("ip6"), Some("daddr")) => Field::Daddr(IpVer::V6),
                (Some("ip"), Some("protocol")) => Field::IpProto(IpVer::V4),
                (Some("ip6"), Some("nexthdr")) => Field::IpProto(IpVer::V6),
                (Some("tcp"), Some("dport")) => Field::Dport(L4::Tcp),
                (Some("tcp"), Some("sport")) => Field::Sport(L4::Tcp),
                (Some("udp"), Some("dport")) => Field::Dport(L4::Udp),
                (Some("udp"), Some("sport")) => Field::Sport(L4::Udp),
                (Some("th"), Some("dport")) => Field::Dport(L4::Th),
                (Some("th"), Some("sport")) => Field::Sport(L4::Th),
                (Some("tcp"), Some("flags")) => Field::TcpFlags { mask: None },
                (Some("icmp"), Some("type")) => Field::IcmpType(IpVer::V4),
                (Some("icmpv6"), Some("type")) => Field::IcmpType(IpVer::V6),
                _ => return Err(unknown()),
            })
        }
        "fib" => {
            let flags: Vec<&str> = body
                .get("flags")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let result = body.get("result").and_then(Json::as_str);
            let is_rp = result == Some("oif")
                && flags.contains(&"saddr")
                && flags.contains(&"iif")
                && flags.iter().all(|f| matches!(*f, "saddr" | "iif" | "mark"));
            if is_rp {
                Ok(Field::FibRpfilter)
            } else {
                Err(unknown())
            }
        }
        "&" => {
            let arr = body.as_array().ok_or_else(unknown)?;
            if arr.len() == 2 && parse_field(&arr[0]) == Ok(Field::TcpFlags { mask: None }) {
                let mask = tcp_flag_bits(&arr[1]).ok_or_else(unknown)?;
                Ok(Field::TcpFlags { mask: Some(mask) })
            } else {
                Err(unknown())
            }
        }
        "concat" => {
            let arr = body.as_array().ok_or_else(unknown)?;
            Ok(Field::Concat(
                arr.iter().map(parse_field).collect::<Result<_, _>>()?,
            ))
        }
        _ => Err(unknown()),
    }
}

/// TCP flag bits by name, as nft names them.
pub fn tcp_flag_bit(name: &str) -> Option<u8> {
    Some(match name {
        "fin" => 0x01,
        "syn" => 0x02,
        "rst" => 0x04,
        "psh" => 0x08,
        "ack" => 0x10,
        "urg" => 0x20,
        "ecn" => 0x40,
        "cwr" => 0x80,
        _ => return None,
    })
}

fn tcp_flag_bits(j: &Json) -> Option<u8> {
    match j {
        Json::String(s) => tcp_flag_bit(s),
        Json::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Json::Array(a) => a
            .iter()
            .try_fold(0u8, |acc, x| Some(acc | tcp_flag_bits(x)?)),
        _ => None,
    }
}

fn parse_elem(j: &Json) -> Result<Elem, String> {
    match j {
        Json::Number(n) => n
            .as_u64()
            .map(Elem::Int)
            .ok_or_else(|| format!("number {n}")),
        Json::Bool(b) => Ok(Elem::Int(u64::from(*b))),
        Json::String(s) => Ok(match s.parse::<IpAddr>() {
            Ok(a) => Elem::Addr(a),
            Err(_) => Elem::Str(s.clone()),
        }),
        Json::Array(a) => Ok(Elem::Flags(
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("flag list {}", short(j)))
                })
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(o) => {
            let (k, v) = o.iter().next().ok_or_else(|| "empty object".to_string())?;
            match k.as_str() {
                "prefix" => {
                    let addr = v
                        .get("addr")
                        .and_then(Json::as_str)
                        .and_then(|s| s.parse().ok());
                    let len = v
                        .get("len")
                        .and_then(Json::as_u64)
                        .and_then(|l| u8::try_from(l).ok());
                    match (addr, len) {
                        (Some(a), Some(l)) => Ok(Elem::Prefix(a, l)),
                        _ => Err(format!("prefix {}", short(v))),
                    }
                }
                "range" => {
                    let arr = v
                        .as_array()
                        .filter(|a| a.len() == 2)
                        .ok_or_else(|| format!("range {}", short(v)))?;
                    Ok(Elem::Range(
                        Box::new(parse_elem(&arr[0])?),
                        Box::new(parse_elem(&arr[1])?),
                    ))
                }
                "concat" => {
                    let arr = v.as_array().ok_or_else(|| format!("concat {}", short(v)))?;
                    Ok(Elem::Concat(
                        arr.iter().map(parse_elem).collect::<Result<_, _>>()?,
                    ))
                }
                // Set elements with per-element options (timeout, counter, comment).
                "elem" => parse_elem(&v["val"]),
                _ => Err(format!("element {}", short(j))),
            }
        }
        Json::Null => Err("null element".to_string()),
    }
}

fn parse_verdict(j: &Json) -> Result<Verdict, String> {
    let (k, v) = j
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("verdict {}", short(j)))?;
    let target = || {
        v.get("target")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{k} without target"))
    };
    Ok(match k.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "continue" => Verdict::Continue,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(target()?),
        "goto" => Verdict::Goto(target()?),
        "reject" => Verdict::Reject {
            tcp_reset: v.get("type").and_then(Json::as_str) == Some("tcp reset"),
        },
        other => return Err(format!("verdict {other}")),
    })
}

fn parse_vmap_elems(j: &Json) -> Result<Vec<(Elem, Verdict)>, String> {
    let arr = j
        .as_array()
        .ok_or_else(|| format!("vmap data {}", short(j)))?;
    arr.iter()
        .map(|pair| {
            let p = pair
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| format!("vmap entry {}", short(pair)))?;
            Ok((parse_elem(&p[0])?, parse_verdict(&p[1])?))
        })
        .collect()
}
