//! Unit tests of the evaluator on recorded `nft -j` documents. The authoritative tests are the
//! differential ones against the kernel (tests/integration/verify/differential.rs).

use super::eval::{Outcome, Packet, TCP, UDP};
use super::{evaluate, parse};

fn doc(rules: &str) -> String {
    format!(
        r#"{{"nftables":[{{"metainfo":{{"json_schema_version":1}}}},{{"table":{{"family":"inet","name":"f","handle":1}}}},
        {{"chain":{{"family":"inet","table":"f","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}}}},
        {{"chain":{{"family":"inet","table":"f","name":"allow","handle":2}}}},{rules}]}}"#
    )
}

fn rule(chain: &str, handle: u64, exprs: &str) -> String {
    format!(
        r#"{{"rule":{{"family":"inet","table":"f","chain":"{chain}","handle":{handle},"expr":[{exprs}]}}}}"#
    )
}

fn syn(iif: &str, port: u16) -> Packet {
    Packet::inbound(
        iif,
        TCP,
        "198.51.100.1".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        40000,
        port,
    )
}

#[test]
fn tailnet_only_ssh_is_accepted_only_on_tailscale0() {
    let d = doc(&[
        rule("input", 3, r#"{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"lo"}},{"accept":null}"#),
        rule("input", 4, r#"{"jump":{"target":"allow"}}"#),
        rule(
            "allow",
            5,
            r#"{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"tailscale0"}},
               {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[22,{"range":[8000,8100]}]}}},{"accept":null}"#,
        ),
    ]
    .join(","));
    let rs = parse(&d).unwrap();
    assert_eq!(
        evaluate(&rs, &syn("tailscale0", 22)).outcome,
        Outcome::Accept
    );
    assert_eq!(
        evaluate(&rs, &syn("tailscale0", 8050)).outcome,
        Outcome::Accept
    );
    assert_eq!(evaluate(&rs, &syn("eth0", 22)).outcome, Outcome::Drop);
    let d = evaluate(&rs, &syn("eth0", 22));
    assert!(d.by.contains("policy"), "{}", d.by);
}

#[test]
fn unknown_construct_is_inconclusive_only_when_reached() {
    let d = doc(&[
        rule("input", 3, r#"{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":53}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":1}}"#),
        rule("input", 4, r#"{"match":{"op":"==","left":{"osf":{"key":"name"}},"right":"Linux"}},{"accept":null}"#),
    ]
    .join(","));
    let rs = parse(&d).unwrap();
    match evaluate(&rs, &syn("eth0", 22)).outcome {
        Outcome::Inconclusive(w) => assert!(w.contains("osf"), "{w}"),
        o => panic!("expected inconclusive, got {o:?}"),
    }
    let udp = Packet::inbound(
        "eth0",
        UDP,
        "198.51.100.1".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        1,
        53,
    );
    match evaluate(&rs, &udp).outcome {
        Outcome::Inconclusive(w) => assert!(w.contains("mangle"), "{w}"),
        o => panic!("expected inconclusive, got {o:?}"),
    }
}

#[test]
fn implicit_protocol_dependency_makes_not_equal_false() {
    // `tcp dport != 22 drop` must not drop UDP packets.
    let d = doc(&[
        rule("input", 3, r#"{"match":{"op":"!=","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"drop":null}"#),
        rule("input", 4, r#"{"accept":null}"#),
    ]
    .join(","));
    let rs = parse(&d).unwrap();
    let udp = Packet::inbound(
        "eth0",
        UDP,
        "198.51.100.1".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        1,
        53,
    );
    assert_eq!(evaluate(&rs, &udp).outcome, Outcome::Accept);
    assert_eq!(evaluate(&rs, &syn("eth0", 80)).outcome, Outcome::Drop);
}

#[test]
fn not_nft_json_is_an_error() {
    assert!(parse("table inet x {}").is_err());
    assert!(parse(r#"{"other":1}"#).is_err());
}
