//! Who is calling: the uid owning the client end of a loopback TCP connection, asked from the
//! kernel with one netlink `SOCK_DIAG_BY_FAMILY` exact lookup (INET_DIAG with the client's
//! 4-tuple), and `Proxy-Authorization: Basic` credentials as the fallback.
//!
//! The uid is what the kernel says, never what the request says. This module only looks up; it
//! does not decide what a bot may reach.

use std::io;
use std::net::SocketAddr;

use base64::Engine;
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// Returns the uid owning the TCP socket whose local address is `client` and whose remote
/// address is `server` (the proxy's side of the accepted connection, seen from the client).
/// Only meaningful for loopback connections, where both ends live in this network namespace.
pub fn peer_uid(client: SocketAddr, server: SocketAddr) -> io::Result<u32> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let family = if client.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut id = if client.is_ipv4() {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    id.source_port = client.port();
    id.source_address = client.ip();
    id.destination_port = server.port();
    id.destination_address = server.ip();
    // All-ones means "no cookie": an exact lookup by 4-tuple.
    id.cookie = [0xff; 8];
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 8192];
    let n = socket.recv(&mut &mut rx[..], 0)?;
    let mut offset = 0;
    while offset < n {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
        match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                return Ok(resp.header.uid);
            }
            NetlinkPayload::Error(e) => {
                return Err(e.to_io());
            }
            _ => {}
        }
        if msg.header.length == 0 {
            break;
        }
        offset += msg.header.length as usize;
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "sock_diag: no such socket",
    ))
}

/// Parsed `Proxy-Authorization: Basic` credentials. The password is kept as a secret.
#[derive(Debug)]
pub struct BasicCredentials {
    pub user: String,
    pub password: crate::secret::SecretString,
}

/// Parses a `Proxy-Authorization` header value. `None` for other schemes or malformed values.
pub fn parse_basic(value: &[u8]) -> Option<BasicCredentials> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(BasicCredentials {
        user: user.to_string(),
        password: crate::secret::SecretString::new(password.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let c = parse_basic(b"Basic bWFyZW46czNjcmV0").unwrap();
        assert_eq!(c.user, "maren");
        assert_eq!(c.password.expose(), "s3cret");
        assert!(parse_basic(b"Bearer abc").is_none());
        assert!(parse_basic(b"Basic !!!").is_none());
        assert!(parse_basic(b"Basic bWFyZW4=").is_none()); // no colon
    }

    #[test]
    fn own_loopback_connection_maps_to_our_uid() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(addr) else {
                eprintln!("SKIP {addr}: cannot bind (no IPv6?)");
                continue;
            };
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, peer) = l.accept().unwrap();
            match peer_uid(peer, s.local_addr().unwrap()) {
                Ok(uid) => assert_eq!(uid, nix::unistd::geteuid().as_raw(), "{addr}"),
                // Some sandboxes have no sock_diag; the proxy then falls back to credentials.
                Err(e) => eprintln!("SKIP sock_diag unavailable: {e}"),
            }
            // A 4-tuple that does not exist is an error, not someone else's uid.
            let mut bogus = peer;
            bogus.set_port(peer.port().wrapping_add(1).max(1));
            assert!(peer_uid(bogus, s.local_addr().unwrap()).is_err(), "{addr}");
            drop(c);
        }
    }
}
