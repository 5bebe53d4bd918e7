//! Real traffic between network namespaces: create sockets inside a namespace (setns on the
//! calling thread, then back), run TCP/UDP listeners that record what arrives, and fire many
//! TCP connects and UDP datagrams at once, classifying what the kernel did to each one.

use std::collections::HashSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::netns::Netns;

/// Runs `f` with the calling thread inside `ns`'s network namespace, then switches back.
pub fn in_ns<T>(ns: &Netns, f: impl FnOnce() -> T) -> T {
    let orig = File::open("/proc/thread-self/ns/net").expect("open own netns");
    let target = File::open(format!("/run/netns/{}", ns.name)).expect("open target netns");
    // SAFETY: setns on valid namespace fds only changes this thread's network namespace.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {}: {}",
        ns.name,
        std::io::Error::last_os_error()
    );
    let r = f();
    // SAFETY: as above, back to the namespace the thread started in.
    let rc = unsafe { libc::setns(orig.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns back: {}", std::io::Error::last_os_error());
    r
}

/// TCP and UDP listeners on `[::]:port` (dual stack) inside a namespace. TCP connections are
/// accepted and closed; each UDP datagram's 8-byte probe id is recorded.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    pub udp_seen: Arc<Mutex<HashSet<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    pub fn start(ns: &Netns, ports: &[u16]) -> Listeners {
        let socks: Vec<(bool, Socket)> = in_ns(ns, || {
            let mut v = Vec::new();
            for &p in ports {
                let addr: SocketAddr = format!("[::]:{p}").parse().unwrap();
                let t = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
                t.set_only_v6(false).unwrap();
                t.set_reuse_address(true).unwrap();
                t.bind(&addr.into()).unwrap();
                t.listen(4096).unwrap();
                t.set_nonblocking(true).unwrap();
                v.push((true, t));
                let u = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                u.set_only_v6(false).unwrap();
                u.bind(&addr.into()).unwrap();
                u.set_nonblocking(true).unwrap();
                v.push((false, u));
            }
            v
        });
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .map(|(_, s)| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: fds is a valid array of pollfd for its length.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
                if n <= 0 {
                    continue;
                }
                for (i, (tcp, s)) in socks.iter().enumerate() {
                    if fds[i].revents == 0 {
                        continue;
                    }
                    fds[i].revents = 0;
                    if *tcp {
                        while let Ok((c, _)) = s.accept() {
                            drop(c);
                        }
                    } else {
                        while let Ok(n) = s.recv(&mut buf) {
                            if n >= 8 {
                                // SAFETY: recv initialised the first n bytes.
                                let b: Vec<u8> = buf[..8]
                                    .iter()
                                    .map(|x| unsafe { x.assume_init() })
                                    .collect();
                                seen2
                                    .lock()
                                    .unwrap()
                                    .insert(u64::from_be_bytes(b.try_into().unwrap()));
                            }
                        }
                    }
                }
            }
        });
        Listeners {
            stop,
            udp_seen: seen,
            thread: Some(thread),
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the kernel did to one probe, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// TCP connected / UDP datagram reached the listener.
    Open,
    /// An error came back (refused, unreachable, EPERM from a local drop).
    Error,
    /// Nothing before the deadline.
    Silent,
}

/// A probe in flight.
pub struct InFlight {
    sock: Option<Socket>,
    tcp: bool,
    id: u64,
    pub client_port: u16,
    immediate: Option<Observed>,
}

/// Starts a TCP connect or UDP send from `src` (port chosen by the kernel) to `dst`, with the
/// socket created inside `ns`.
pub fn start(ns: &Netns, tcp: bool, src: IpAddr, dst: SocketAddr, id: u64) -> InFlight {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = in_ns(ns, || {
        if tcp {
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        } else {
            Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        }
    })
    .expect("probe socket");
    sock.set_nonblocking(true).unwrap();
    // Thousands of probes per namespace: let ports still in TIME_WAIT be reused.
    sock.set_reuse_address(true).unwrap();
    sock.bind(&SocketAddr::new(src, 0).into())
        .expect("bind probe source");
    let client_port = sock.local_addr().unwrap().as_socket().unwrap().port();
    let mut f = InFlight {
        sock: None,
        tcp,
        id,
        client_port,
        immediate: None,
    };
    let r = sock.connect(&SockAddr::from(dst));
    match r {
        Ok(()) if tcp => f.immediate = Some(Observed::Open),
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(
                    libc::EPERM
                        | libc::ECONNREFUSED
                        | libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EACCES
                )
            ) =>
        {
            f.immediate = Some(Observed::Error)
        }
        Err(e) => panic!(
            "probe connect {src} -> {dst} failed for a reason that is not the firewall's: {e}"
        ),
    }
    if !tcp && f.immediate.is_none() && sock.send(&id.to_be_bytes()).is_err() {
        f.immediate = Some(Observed::Error);
    }
    f.sock = Some(sock);
    f
}

/// Waits for all probes (until `timeout`) and classifies them. `udp_seen` are the ids the
/// remote listeners recorded.
pub fn finish(
    probes: &mut [InFlight],
    udp_seen: &[&Mutex<HashSet<u64>>],
    timeout: Duration,
) -> Vec<Observed> {
    let deadline = Instant::now() + timeout;
    let mut result: Vec<Option<Observed>> = probes.iter().map(|p| p.immediate).collect();
    loop {
        // UDP datagrams that arrived.
        for (i, p) in probes.iter().enumerate() {
            if result[i].is_none()
                && !p.tcp
                && udp_seen.iter().any(|s| s.lock().unwrap().contains(&p.id))
            {
                result[i] = Some(Observed::Open);
            }
        }
        let pending: Vec<usize> = (0..probes.len()).filter(|&i| result[i].is_none()).collect();
        let now = Instant::now();
        if pending.is_empty() || now >= deadline {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: probes[i].sock.as_ref().unwrap().as_raw_fd(),
                events: if probes[i].tcp {
                    libc::POLLOUT
                } else {
                    libc::POLLERR
                },
                revents: 0,
            })
            .collect();
        let wait = (deadline - now).as_millis().min(10) as i32;
        // SAFETY: fds is a valid array of pollfd for its length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        for (k, &i) in pending.iter().enumerate() {
            if fds[k].revents == 0 {
                continue;
            }
            let s = probes[i].sock.as_ref().unwrap();
            match s.take_error() {
                Ok(None) if probes[i].tcp => result[i] = Some(Observed::Open),
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => result[i] = Some(Observed::Error),
            }
        }
    }
    // Last look at UDP deliveries that raced the deadline.
    for (i, p) in probes.iter().enumerate() {
        if result[i].is_none()
            && !p.tcp
            && udp_seen.iter().any(|s| s.lock().unwrap().contains(&p.id))
        {
            result[i] = Some(Observed::Open);
        }
    }
    result
        .into_iter()
        .map(|r| r.unwrap_or(Observed::Silent))
        .collect()
}
