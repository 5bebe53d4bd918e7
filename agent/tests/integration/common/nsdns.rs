//! Helpers for tests that run servers inside network namespaces from the test process itself:
//! `in_netns` runs a closure on a thread that joined a namespace (sockets it creates stay in that
//! namespace), and `DnsServer` is a minimal test-only UDP DNS responder (A, AAAA, CNAME) for
//! pointing a namespace's resolver at names with chosen answers. Not a general DNS server.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs `f` on a new thread that has joined the network namespace `ns` (an `ip netns` name)
/// and returns its result. Sockets created there belong to that namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// One DNS record of the test zone.
#[derive(Debug, Clone)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
}

/// A UDP DNS responder bound inside a namespace; stops when dropped.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Serves `zone` (lowercase names without trailing dot) on `addr` inside namespace `ns`.
    pub fn start(ns: &str, addr: SocketAddr, zone: HashMap<String, Vec<Record>>) -> DnsServer {
        let socket = in_netns(ns, move || UdpSocket::bind(addr).expect("bind dns socket"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(resp) = answer(&buf[..n], &zone) {
                    let _ = socket.send_to(&resp, peer);
                }
            }
        });
        DnsServer { stop, addr }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(q: &[u8], zone: &HashMap<String, Vec<Record>>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // Question name.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let qend = i + 4;
    let qname = labels.join(".");
    let mut answers: Vec<(String, u16, Vec<u8>)> = Vec::new();
    let mut name = qname.clone();
    let mut found = zone.contains_key(&name);
    for _ in 0..8 {
        let Some(recs) = zone.get(&name) else { break };
        found = true;
        if let Some(Record::Cname(target)) = recs.iter().find(|r| matches!(r, Record::Cname(_))) {
            let mut rdata = Vec::new();
            encode_name(target, &mut rdata);
            answers.push((name.clone(), 5, rdata));
            name = target.clone();
            continue;
        }
        for r in recs {
            match r {
                Record::A(ip) if qtype == 1 => {
                    answers.push((name.clone(), 1, ip.octets().to_vec()))
                }
                Record::Aaaa(ip) if qtype == 28 => {
                    answers.push((name.clone(), 28, ip.octets().to_vec()))
                }
                _ => {}
            }
        }
        break;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[0..2]);
    let rcode = if found { 0 } else { 3 };
    out.extend_from_slice(&[0x81, 0x80 | rcode]);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q[12..qend]);
    for (owner, ty, rdata) in answers {
        encode_name(&owner, &mut out);
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
