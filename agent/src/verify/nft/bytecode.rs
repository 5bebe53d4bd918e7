//! What `nft -j` hides: nft's listing drops an explicit `meta nfproto` match that precedes a
//! `reject` in an inet table (it treats it as the reject's own dependency), yet the kernel still
//! applies it. `nft --debug=netlink list ruleset` shows the bytecode; this module reads the
//! `meta load nfproto` + `cmp eq` pairs from it and restores them as matches. Without the
//! bytecode, such rules get an unknown match so they can never produce a false verdict.

use std::collections::HashMap;

use super::model::{Elem, Expr, Family, Field, Match, Op, Ruleset, Verdict};

fn pins_family(exprs: &[Expr]) -> bool {
    exprs.iter().any(|e| match e {
        Expr::Match(m) => {
            matches!(
                m.left,
                Field::NfProto
                    | Field::Saddr(_)
                    | Field::Daddr(_)
                    | Field::IpProto(_)
                    | Field::IcmpType(_)
            )
        }
        _ => false,
    })
}

fn is_ambiguous(family: Family, exprs: &[Expr]) -> bool {
    family == Family::Inet
        && exprs
            .iter()
            .any(|e| matches!(e, Expr::Verdict(Verdict::Reject { .. })))
        && !pins_family(exprs)
}

/// True when some rule's listing may hide a `meta nfproto` match.
pub fn needs_bytecode(rs: &Ruleset) -> bool {
    rs.chains
        .iter()
        .any(|c| c.rules.iter().any(|r| is_ambiguous(c.family, &r.exprs)))
}

/// nfproto values each inet rule compares with, by (table, chain, handle).
fn nfproto_by_rule(netlink: &str) -> HashMap<(String, String, u64), Vec<u64>> {
    let mut out: HashMap<(String, String, u64), Vec<u64>> = HashMap::new();
    let mut current: Option<(String, String, u64)> = None;
    let mut reg_nfproto: Option<String> = None;
    for line in netlink.lines() {
        let t = line.trim();
        if !line.starts_with(' ') && !line.starts_with('\t') {
            let f: Vec<&str> = t.split_whitespace().collect();
            current = match f.as_slice() {
                ["inet", table, chain, handle, ..] if !chain.starts_with('@') => handle
                    .parse()
                    .ok()
                    .map(|h| (table.to_string(), chain.to_string(), h)),
                _ => None,
            };
            reg_nfproto = None;
            continue;
        }
        let Some(key) = &current else { continue };
        if let Some(rest) = t.strip_prefix("[ meta load nfproto => reg ") {
            reg_nfproto = rest.split_whitespace().next().map(str::to_string);
        } else if let (Some(reg), Some(rest)) = (&reg_nfproto, t.strip_prefix("[ cmp eq reg ")) {
            let mut it = rest.split_whitespace();
            if it.next() == Some(reg.as_str())
                && let Some(v) = it
                    .next()
                    .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
            {
                out.entry(key.clone()).or_default().push(v);
            }
            reg_nfproto = None;
        } else {
            reg_nfproto = None;
        }
    }
    out
}

/// Restores hidden `meta nfproto` matches from `nft --debug=netlink list ruleset` output, or
/// (when `netlink` is None) marks ambiguous rules as undecidable.
pub fn apply(rs: &mut Ruleset, netlink: Option<&str>) {
    let pins = netlink.map(nfproto_by_rule);
    for c in rs.chains.iter_mut().filter(|c| c.family == Family::Inet) {
        for r in &mut c.rules {
            match &pins {
                Some(p) => {
                    if let Some(vals) = p.get(&(c.table.clone(), c.name.clone(), r.handle)) {
                        for v in vals {
                            let m = Match {
                                left: Field::NfProto,
                                op: Op::Eq,
                                right: vec![Elem::Int(*v)],
                            };
                            r.exprs.insert(0, Expr::Match(m));
                        }
                    }
                }
                None if is_ambiguous(c.family, &r.exprs) => {
                    r.exprs.insert(
                        0,
                        Expr::UnknownMatch("reject rule whose `meta nfproto` nft's JSON may hide (bytecode not available)".into()),
                    );
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_nfproto_pairs_per_rule() {
        let text = "inet t0 @__set0\n\telement 00000004  : 0 [end]\ninet t0 b1 22\n  [ meta load nfproto => reg 1 ]\n  [ cmp eq reg 1 0x00000002 ]\n  [ reject type 1 code 0 ]\n\ninet t0 b1 23 22\n  [ meta load l4proto => reg 1 ]\n  [ cmp eq reg 1 0x00000006 ]\n";
        let m = super::nfproto_by_rule(text);
        assert_eq!(m.get(&("t0".into(), "b1".into(), 22)), Some(&vec![2]));
        assert!(!m.contains_key(&("t0".into(), "b1".into(), 23)));
    }
}
