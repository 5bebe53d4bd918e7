//! Resolve once, check every address, dial exactly the checked addresses. A name is looked up a
//! single time per request; the answers are classified and the connection goes to one of those
//! very `SocketAddr`s, so a DNS answer that changes between check and use (rebinding) cannot
//! redirect it. CNAME chains are followed by the system resolver; only the final addresses count.
//!
//! This module never connects to a name, only to addresses.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;

use super::classify::{AddressPolicy, DenyClass};

/// A boxed future, so resolvers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Name resolution. The system implementation uses getaddrinfo; tests inject their own.
pub trait Resolver: Send + Sync {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// getaddrinfo via tokio (`/etc/hosts`, `/etc/resolv.conf`, nsswitch).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let mut ips: Vec<IpAddr> = Vec::new();
            for sa in tokio::net::lookup_host((name, 0)).await? {
                if !ips.contains(&sa.ip()) {
                    ips.push(sa.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// A fixed table, for tests and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver(pub std::collections::HashMap<String, Vec<IpAddr>>);

impl Resolver for StaticResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let r = self
            .0
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"));
        Box::pin(async move { r })
    }
}

/// Why a destination could not be reached.
#[derive(Debug)]
pub enum ResolveError {
    /// The lookup failed or returned nothing.
    Dns(String),
    /// The lookup took longer than `dnsTimeoutSecs`.
    DnsTimeout,
    /// An address in the answer is forbidden; the whole answer is refused.
    Forbidden { addr: IpAddr, class: DenyClass },
}

/// Resolves `name` once and checks every address against the policy. Mixed answers (one public,
/// one private address) are refused as a whole: they are the shape of a rebinding attack.
pub async fn resolve_checked(
    resolver: &dyn Resolver,
    name: &str,
    port: u16,
    policy: &AddressPolicy,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let ips = match tokio::time::timeout(timeout, resolver.lookup(name)).await {
        Err(_) => return Err(ResolveError::DnsTimeout),
        Ok(Err(e)) => return Err(ResolveError::Dns(e.to_string())),
        Ok(Ok(ips)) => ips,
    };
    if ips.is_empty() {
        return Err(ResolveError::Dns("no addresses".into()));
    }
    let addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    for a in &addrs {
        policy.check(*a).map_err(|class| ResolveError::Forbidden {
            addr: a.ip(),
            class,
        })?;
    }
    Ok(addrs)
}

/// Why dialling failed.
#[derive(Debug)]
pub enum DialError {
    Timeout,
    Failed(io::Error),
}

/// Connects to the first checked address that answers within the overall deadline. Each
/// attempt gets an equal share of the time so one black-holed address does not eat it all.
pub async fn dial(addrs: &[SocketAddr], deadline: Duration) -> Result<TcpStream, DialError> {
    let per = deadline / addrs.len().max(1) as u32;
    let mut last = DialError::Timeout;
    for a in addrs {
        match tokio::time::timeout(per.max(Duration::from_millis(500)), TcpStream::connect(a)).await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = DialError::Failed(e),
            Err(_) => last = DialError::Timeout,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::classify::parse_range;

    fn table(entries: &[(&str, &[&str])]) -> StaticResolver {
        StaticResolver(
            entries
                .iter()
                .map(|(n, ips)| {
                    (
                        n.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn every_address_is_checked() {
        let r = table(&[
            ("ok.test", &["8.8.8.8", "2606:4700::1111"]),
            ("mixed.test", &["8.8.8.8", "10.0.0.1"]),
            ("meta.test", &["169.254.169.254"]),
            ("lan.test", &["10.1.2.3"]),
        ]);
        let p = AddressPolicy::default();
        let t = Duration::from_secs(1);
        assert_eq!(
            resolve_checked(&r, "ok.test", 443, &p, t)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            resolve_checked(&r, "mixed.test", 443, &p, t).await,
            Err(ResolveError::Forbidden {
                class: DenyClass::Private,
                ..
            })
        ));
        assert!(matches!(
            resolve_checked(&r, "meta.test", 80, &p, t).await,
            Err(ResolveError::Forbidden {
                class: DenyClass::CloudMetadata,
                ..
            })
        ));
        assert!(matches!(
            resolve_checked(&r, "nx.test", 80, &p, t).await,
            Err(ResolveError::Dns(_))
        ));
        let open = AddressPolicy {
            allow_ranges: vec![parse_range("10.1.0.0/16").unwrap()],
            own_sockets: vec![],
        };
        assert!(resolve_checked(&r, "lan.test", 80, &open, t).await.is_ok());
    }

    struct Slow;
    impl Resolver for Slow {
        fn lookup<'a>(&'a self, _: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(vec![])
            })
        }
    }

    #[tokio::test]
    async fn lookup_timeout() {
        let p = AddressPolicy::default();
        let r = resolve_checked(&Slow, "x", 80, &p, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(ResolveError::DnsTimeout)));
    }
}
