//! Address classes: decides whether a resolved (or literal) destination address may be dialled.
//! Everything that is not plain global unicast is denied unless an `allowRanges` entry lists it;
//! IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are denied or
//! judged by the embedded address, so they cannot smuggle a private IPv4 destination.
//!
//! This module does no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why an address is not an acceptable destination. `kind()` is the stable reason id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyClass {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    Cgnat,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    UniqueLocal,
    Nat64,
    SixToFour,
    Teredo,
    Ipv4Compatible,
    /// The proxy's own listening socket (recursive proxying).
    SelfConnection,
}

impl DenyClass {
    pub fn kind(self) -> &'static str {
        match self {
            DenyClass::Unspecified => "unspecified",
            DenyClass::Loopback => "loopback",
            DenyClass::Private => "private",
            DenyClass::LinkLocal => "link-local",
            DenyClass::CloudMetadata => "cloud-metadata",
            DenyClass::Cgnat => "cgnat",
            DenyClass::Multicast => "multicast",
            DenyClass::Broadcast => "broadcast",
            DenyClass::Documentation => "documentation",
            DenyClass::Benchmarking => "benchmarking",
            DenyClass::Reserved => "reserved",
            DenyClass::UniqueLocal => "unique-local",
            DenyClass::Nat64 => "nat64",
            DenyClass::SixToFour => "6to4",
            DenyClass::Teredo => "teredo",
            DenyClass::Ipv4Compatible => "ipv4-compatible",
            DenyClass::SelfConnection => "self-connection",
        }
    }
}

/// The class of an address ignoring any allow ranges; `None` means ordinary global unicast.
pub fn class_of(ip: IpAddr) -> Option<DenyClass> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn in4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn class_v4(ip: Ipv4Addr) -> Option<DenyClass> {
    use DenyClass::*;
    let table: &[([u8; 4], u8, DenyClass)] = &[
        ([169, 254, 169, 254], 32, CloudMetadata),
        ([100, 100, 100, 200], 32, CloudMetadata), // Alibaba; also inside CGNAT
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Cgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, SixToFour),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table
        .iter()
        .find(|(net, len, _)| in4(ip, *net, *len))
        .map(|(_, _, c)| *c)
}

fn class_v6(ip: Ipv6Addr) -> Option<DenyClass> {
    use DenyClass::*;
    let s = ip.segments();
    if ip == "fd00:ec2::254".parse::<Ipv6Addr>().unwrap() {
        return Some(CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // ::ffff:a.b.c.d reaches the IPv4 address: judge that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        // A public address in mapped form is still refused: resolvers never need to send it.
        return Some(class_v4(v4).unwrap_or(Ipv4Compatible));
    }
    // ::a.b.c.d (deprecated IPv4-compatible) and the rest of ::/96.
    if s[..6] == [0; 6] {
        return Some(Ipv4Compatible);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(Nat64); // 64:ff9b::/96 and the local-use 64:ff9b:1::/48
    }
    if s[0] == 0x2002 {
        return Some(SixToFour);
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Teredo);
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 || s[0] == 0x3fff && s[1] < 0x1000 {
        return Some(Documentation); // 2001:db8::/32 and 3fff::/20
    }
    if s[0] == 0x2001 && s[1] == 2 && s[2] == 0 {
        return Some(Benchmarking);
    }
    if s[0] == 0x2001 && s[1] < 0x200 {
        return Some(Reserved); // rest of the IETF protocol assignments 2001::/23
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some(UniqueLocal);
    }
    if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        return Some(LinkLocal); // includes deprecated site-local fec0::/10
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some(Multicast);
    }
    if s[0] == 0x0100 && s[1..4] == [0; 3] {
        return Some(Reserved); // discard-only 100::/64
    }
    // Only 2000::/3 is global unicast.
    if s[0] & 0xe000 != 0x2000 {
        return Some(Reserved);
    }
    None
}

/// Address policy: allow ranges plus the proxy's own sockets.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allow_ranges: Vec<IpNet>,
    /// Listen and metrics sockets of this proxy; dialling one is always refused.
    pub own_sockets: Vec<SocketAddr>,
}

impl AddressPolicy {
    /// `Ok(())` if `addr` may be dialled, else the class that forbids it.
    pub fn check(&self, addr: SocketAddr) -> Result<(), DenyClass> {
        let ip = canonical(addr.ip());
        if self.own_sockets.iter().any(|s| {
            s.port() == addr.port() && (canonical(s.ip()) == ip || s.ip().is_unspecified())
        }) {
            return Err(DenyClass::SelfConnection);
        }
        let Some(class) = class_of(addr.ip()) else {
            return Ok(());
        };
        // Cloud metadata must be listed by itself: a broad link-local range does not unlock it.
        let listed = self.allow_ranges.iter().any(|net| {
            net.contains(&ip)
                && (class != DenyClass::CloudMetadata || net.prefix_len() == net.max_prefix_len())
        });
        if listed { Ok(()) } else { Err(class) }
    }
}

/// IPv4-mapped IPv6 addresses compare as their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Validates an `allowRanges` entry (CIDR or single address). Ranges written in IPv4-mapped or
/// -compatible IPv6 form are refused: they read as "all of IPv4" to some parsers (smokescreen #289).
pub fn parse_range(raw: &str) -> Result<IpNet, String> {
    let net: IpNet = match raw.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match raw.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err("not a CIDR range or IP address".into()),
        },
    };
    if net.trunc() != net {
        return Err(format!("host bits are set; did you mean {}?", net.trunc()));
    }
    if net.prefix_len() == 0 {
        return Err("a /0 range would switch off every address check".into());
    }
    if let IpNet::V6(v6) = net {
        let s = v6.network().segments();
        let len = v6.prefix_len();
        // ::ffff:0:0/96 (mapped) and ::/96 (compatible) prefixes read as "all of IPv4" to some
        // parsers; single addresses such as ::1/128 are fine.
        let mapped = s[..5] == [0; 5] && s[5] == 0xffff && len >= 80;
        let compatible = s[..6] == [0; 6] && (80..=96).contains(&len);
        if mapped || compatible {
            return Err(
                "IPv4-mapped/compatible IPv6 ranges are ambiguous; write the IPv4 range".into(),
            );
        }
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DenyClass::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, Option<DenyClass>)] = &[
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.1", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(Cgnat)),
            ("100.100.1.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.0", None),
            ("100.100.100.200", Some(CloudMetadata)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.0.1", Some(LinkLocal)),
            ("172.15.255.255", None),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("192.88.99.1", Some(SixToFour)),
            ("192.168.1.1", Some(Private)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.51.100.10", Some(Documentation)),
            ("203.0.113.5", Some(Documentation)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:8.8.8.8", Some(Ipv4Compatible)),
            ("::127.0.0.1", Some(Ipv4Compatible)),
            ("::8.8.8.8", Some(Ipv4Compatible)),
            ("64:ff9b::a00:1", Some(Nat64)),
            ("64:ff9b::808:808", Some(Nat64)),
            ("64:ff9b:1::1", Some(Nat64)),
            ("2002:7f00:1::", Some(SixToFour)),
            ("2002:a00:1::1", Some(SixToFour)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(Teredo)),
            ("2001:db8::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001:10::1", Some(Reserved)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("100::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
        ];
        for (ip, want) in cases {
            assert_eq!(class_of(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_ranges_and_self_connection() {
        let p = AddressPolicy {
            allow_ranges: vec![
                parse_range("10.1.0.0/16").unwrap(),
                parse_range("169.254.0.0/16").unwrap(),
            ],
            own_sockets: vec![sa("127.0.0.1:3128")],
        };
        assert_eq!(p.check(sa("10.1.2.3:443")), Ok(()));
        assert_eq!(p.check(sa("10.2.0.1:443")), Err(Private));
        assert_eq!(p.check(sa("169.254.1.1:80")), Ok(()));
        // The metadata address needs its own /32 entry.
        assert_eq!(p.check(sa("169.254.169.254:80")), Err(CloudMetadata));
        assert_eq!(p.check(sa("127.0.0.1:3128")), Err(SelfConnection));
        assert_eq!(p.check(sa("[::ffff:127.0.0.1]:3128")), Err(SelfConnection));
        let open = AddressPolicy {
            allow_ranges: vec![
                parse_range("127.0.0.0/8").unwrap(),
                parse_range("169.254.169.254").unwrap(),
            ],
            own_sockets: vec![sa("127.0.0.1:3128")],
        };
        assert_eq!(open.check(sa("127.0.0.1:8080")), Ok(()));
        assert_eq!(open.check(sa("127.0.0.1:3128")), Err(SelfConnection));
        assert_eq!(open.check(sa("169.254.169.254:80")), Ok(()));
        // A mapped address is judged by the IPv4 address it reaches.
        assert_eq!(open.check(sa("[::ffff:127.0.0.1]:80")), Ok(()));
    }

    #[test]
    fn range_parsing_refuses_ambiguous_forms() {
        assert!(parse_range("::ffff:0:0/96").is_err());
        assert!(parse_range("::/96").is_err());
        assert!(parse_range("0.0.0.0/0").is_err());
        assert!(parse_range("::/0").is_err());
        assert!(parse_range("10.0.0.1/8").is_err());
        assert!(parse_range("banana").is_err());
        assert_eq!(parse_range("10.0.0.1").unwrap().prefix_len(), 32);
        assert!(parse_range("fd00::/8").is_ok());
        assert!(parse_range("::1/128").is_ok());
        assert!(parse_range("::1").is_ok());
        assert!(parse_range("::ffff:10.0.0.0/104").is_err());
    }
}
