//! Host names and allowlist patterns: normalisation (case, trailing dot, IDNA to punycode, IP
//! literal spellings) and an O(labels) matcher whose cost does not grow with the list size.
//!
//! Pattern forms:
//! - `example.com`: exactly that name.
//! - `*.example.com`: every name below `example.com`, **not** the apex (like smokescreen).
//! - `.example.com`: squid `dstdomain` form, the apex **and** every name below it.
//! - an IP literal (`203.0.113.7`, `2001:db8::7`): that literal as a request target.
//!
//! This module does not resolve names or look at addresses' classes (`classify` does).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest DNS name in presentation form without the trailing dot.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A request target after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A lowercase ASCII (punycode) DNS name without trailing dot.
    Name(String),
    /// A canonically written IP literal (`1.2.3.4` or `[v6]`).
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a host string was refused. `kind()` feeds the `X-Clawdlets-Egress-Error` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty, too long, bad characters, empty labels, bad IDNA, brackets around a name.
    #[error("malformed host: {0}")]
    Malformed(String),
    /// An IPv4 address written in decimal, octal, hex or short form (`2130706433`, `0x7f.1`).
    #[error(
        "'{0}' is an IPv4 address in a non-canonical spelling; only dotted-quad literals are considered"
    )]
    ObfuscatedIp(String),
}

impl HostError {
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::Malformed(_) => "malformed-host",
            HostError::ObfuscatedIp(_) => "obfuscated-ip-literal",
        }
    }
}

/// Normalises a host as it appears in a request authority (without the port). Brackets are only
/// accepted around an IPv6 literal; names are lowercased, one trailing dot is dropped, Unicode is
/// converted to punycode and punycode labels are validated.
pub fn normalize_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Malformed("empty host".into()));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| HostError::Malformed(format!("unbalanced brackets in '{raw}'")))?;
        // Zone ids (`%25eth0`) and nested brackets are refused by the strict parser.
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| {
                HostError::Malformed(format!(
                    "brackets may only enclose an IPv6 address: '{raw}'"
                ))
            });
    }
    if raw.contains([']', '[']) {
        return Err(HostError::Malformed(format!("stray bracket in '{raw}'")));
    }
    if raw.contains(':') {
        return Err(HostError::Malformed(format!(
            "'{raw}': IPv6 literals must be written in brackets"
        )));
    }
    let name = normalize_name(raw)?;
    classify_literal(&name)
}

/// Lowercase, trailing dot, IDNA and label syntax. Returns the ASCII form.
fn normalize_name(raw: &str) -> Result<String, HostError> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err(HostError::Malformed(format!("'{raw}' has an empty label")));
    }
    if raw
        .bytes()
        .any(|b| b == b'%' || b == b'@' || b == b'/' || b == b'\\' || b <= b' ' || b == 0x7f)
    {
        return Err(HostError::Malformed(format!(
            "'{}' contains a forbidden character",
            raw.escape_debug()
        )));
    }
    let ascii = if trimmed.is_ascii() && !has_xn_label(trimmed) {
        trimmed.to_ascii_lowercase()
    } else {
        // UTS #46 processing: maps Unicode to punycode and rejects invalid `xn--` labels.
        idna::domain_to_ascii(trimmed).map_err(|_| {
            HostError::Malformed(format!(
                "'{}' is not a valid internationalised name",
                raw.escape_debug()
            ))
        })?
    };
    if ascii.len() > MAX_NAME {
        return Err(HostError::Malformed(format!(
            "name longer than {MAX_NAME} characters"
        )));
    }
    for label in ascii.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(HostError::Malformed(format!(
                "'{ascii}' has an empty or over-long label"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::Malformed(format!(
                "label '{label}' starts or ends with '-'"
            )));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HostError::Malformed(format!(
                "label '{label}' has characters outside [a-z0-9-_]"
            )));
        }
    }
    Ok(ascii)
}

fn has_xn_label(s: &str) -> bool {
    s.split('.')
        .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"))
}

/// Splits dotted-quad literals from names, and refuses names that a URL parser or `inet_aton`
/// would read as an IPv4 address (the last label numeric, or any label in 0x hex).
fn classify_literal(name: &str) -> Result<Host, HostError> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = |l: &str| {
        !l.is_empty()
            && (l.bytes().all(|b| b.is_ascii_digit())
                || ((l.starts_with("0x")) && l[2..].bytes().all(|b| b.is_ascii_hexdigit())))
    };
    if numeric(last) || (name.split('.').all(numeric)) {
        return Err(HostError::ObfuscatedIp(name.to_string()));
    }
    Ok(Host::Name(name.to_string()))
}

/// How an allowlist entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `example.com`
    Exact,
    /// `*.example.com`: below the apex only.
    Subdomains,
    /// `.example.com`: apex and below (squid).
    ApexAndSubdomains,
    /// An IP literal target.
    Ip,
}

/// One parsed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    /// The normalised domain (without `*.`/`.`) or the canonical IP.
    pub value: String,
}

/// Parses one allowlist entry, refusing anything ambiguous. The error message says what is wrong;
/// the caller names the config key.
pub fn parse_pattern(raw: &str) -> Result<Pattern, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty pattern".into());
    }
    if s == "*" || s == "*." || s == "." {
        return Err("a bare wildcard would allow every host; use mode = \"report\" to observe traffic instead".into());
    }
    let (kind, rest) = if let Some(rest) = s.strip_prefix("*.") {
        (PatternKind::Subdomains, rest)
    } else if let Some(rest) = s.strip_prefix('.') {
        (PatternKind::ApexAndSubdomains, rest)
    } else {
        (PatternKind::Exact, s)
    };
    if rest.contains('*') {
        return Err("'*' is only allowed as a whole first label ('*.example.com')".into());
    }
    if rest.contains(':') || rest.starts_with('[') {
        if kind != PatternKind::Exact {
            return Err("wildcards cannot apply to an IP address".into());
        }
        let inner = rest.trim_start_matches('[').trim_end_matches(']');
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| "not a valid IPv6 address or host name".to_string())?;
        return Ok(Pattern {
            kind: PatternKind::Ip,
            value: IpAddr::V6(ip).to_string(),
        });
    }
    match normalize_name(rest) {
        Ok(name) => match classify_literal(&name) {
            Ok(Host::Ip(ip)) if kind == PatternKind::Exact => Ok(Pattern {
                kind: PatternKind::Ip,
                value: ip.to_string(),
            }),
            Ok(Host::Ip(_)) => Err("wildcards cannot apply to an IP address".into()),
            Ok(Host::Name(n)) => {
                if kind != PatternKind::Exact && !n.contains('.') {
                    return Err(format!(
                        "'{s}' would match a whole top-level domain; name at least two labels"
                    ));
                }
                Ok(Pattern { kind, value: n })
            }
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Flags stored per domain in the lookup table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flags {
    exact: bool,
    subdomains: bool,
}

/// A set of patterns, answering "is this host allowed" in O(number of labels of the host):
/// one hash lookup for the full name, then one per parent suffix.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    names: HashMap<String, Flags>,
    ips: std::collections::HashSet<IpAddr>,
    len: usize,
}

impl AllowList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parsed pattern.
    pub fn insert(&mut self, p: &Pattern) {
        self.len += 1;
        match p.kind {
            PatternKind::Ip => {
                if let Ok(ip) = p.value.parse() {
                    self.ips.insert(ip);
                }
            }
            PatternKind::Exact => self.names.entry(p.value.clone()).or_default().exact = true,
            PatternKind::Subdomains => {
                self.names.entry(p.value.clone()).or_default().subdomains = true
            }
            PatternKind::ApexAndSubdomains => {
                let f = self.names.entry(p.value.clone()).or_default();
                f.exact = true;
                f.subdomains = true;
            }
        }
    }

    /// Adds every entry of `other`.
    pub fn extend(&mut self, other: &AllowList) {
        for (k, v) in &other.names {
            let f = self.names.entry(k.clone()).or_default();
            f.exact |= v.exact;
            f.subdomains |= v.subdomains;
        }
        self.ips.extend(other.ips.iter().copied());
        self.len += other.len;
    }

    /// Number of patterns inserted.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the (already normalised) host is allowed.
    pub fn matches(&self, host: &Host) -> bool {
        match host {
            Host::Ip(ip) => self.ips.contains(ip),
            Host::Name(name) => self.matches_name(name),
        }
    }

    /// Lookup of a normalised name: the full name for exact entries, then each parent suffix for
    /// wildcard entries.
    pub fn matches_name(&self, name: &str) -> bool {
        if self.names.get(name).is_some_and(|f| f.exact) {
            return true;
        }
        let mut rest = name;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if self.names.get(rest).is_some_and(|f| f.subdomains) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        let mut l = AllowList::new();
        for p in patterns {
            l.insert(&parse_pattern(p).unwrap());
        }
        l
    }

    fn allowed(l: &AllowList, host: &str) -> bool {
        l.matches(&normalize_host(host).unwrap())
    }

    #[test]
    fn exact_wildcard_and_squid_forms() {
        let l = list(&["api.example.com", "*.wild.com", ".squid.org"]);
        let cases = [
            ("api.example.com", true),
            ("example.com", false),
            ("x.api.example.com", false),
            ("wild.com", false), // `*.` excludes the apex
            ("a.wild.com", true),
            ("a.b.wild.com", true),
            ("squid.org", true), // `.` includes the apex
            ("x.squid.org", true),
            ("xsquid.org", false),
            ("squid.org.evil.com", false),
            ("notwild.com", false),
        ];
        for (host, want) in cases {
            assert_eq!(allowed(&l, host), want, "{host}");
        }
    }

    #[test]
    fn case_trailing_dot_and_idna_normalise() {
        let l = list(&["API.Example.COM.", "bücher.example", "*.xn--mnchen-3ya.de"]);
        assert!(allowed(&l, "api.example.com"));
        assert!(allowed(&l, "Api.EXAMPLE.com."));
        assert!(allowed(&l, "xn--bcher-kva.example"));
        assert!(allowed(&l, "BÜCHER.example"));
        assert!(allowed(&l, "a.münchen.de"));
        assert!(!allowed(&l, "xn--mnchen-3ya.de"));
        // A Cyrillic 'а' look-alike is a different name.
        assert!(!allowed(&l, "аpi.example.com"));
        assert!(!allowed(&l, "xn--pi-7kc.example.com"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "",
            "*",
            "*.",
            ".",
            "*example.com",
            "a.*.com",
            "example.*",
            "**.a.com",
            "*.com",
            ".com",
            "a..b",
            "-a.com",
            "exa mple.com",
            "a/b",
            "x@y.com",
            "*.1.2.3.4",
            "xn--zz.com",
            "[example.com]",
            "0x7f000001",
            "2130706433",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_pattern("_acme.Example.com").unwrap().value,
            "_acme.example.com"
        );
        assert_eq!(parse_pattern("203.0.113.7").unwrap().kind, PatternKind::Ip);
        assert_eq!(parse_pattern("[2001:db8::1]").unwrap().value, "2001:db8::1");
    }

    #[test]
    fn host_literals_and_bypass_spellings() {
        assert_eq!(
            normalize_host("1.2.3.4").unwrap(),
            Host::Ip("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            normalize_host("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        for obf in [
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "0x7f.0.0.1",
            "127.0.0.01",
            "a.0x10",
        ] {
            assert!(
                matches!(normalize_host(obf), Err(HostError::ObfuscatedIp(_))),
                "{obf}"
            );
        }
        for bad in [
            "",
            "[example.com]",
            "[[example.com]]",
            "example.com]",
            "[::1",
            "::1",
            "a..b",
            "a.b..",
            "exa%2ecom",
            "user@host",
            "a b",
            "[fe80::1%25eth0]",
            "x\u{0}y",
        ] {
            assert!(
                matches!(normalize_host(bad), Err(HostError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lookup_cost_is_per_label_not_per_entry() {
        let mut l = AllowList::new();
        for i in 0..10_000 {
            l.insert(&parse_pattern(&format!("*.svc{i}.example.com")).unwrap());
        }
        assert!(l.matches_name("a.svc9999.example.com"));
        assert!(!l.matches_name("svc9999.example.com"));
        assert_eq!(l.len(), 10_000);
    }
}
