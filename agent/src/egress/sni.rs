//! TLS ClientHello inspection for CONNECT tunnels: extracts the SNI server name so the proxy can
//! require it to equal the CONNECT host. Without this, `CONNECT allowed.example:443` followed by a
//! ClientHello for `forbidden.example` reaches the forbidden site on any shared CDN address.
//!
//! Read-only parsing of the first handshake record; no TLS is terminated or modified.

/// What the first bytes of a tunnel say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// Not a TLS handshake record: nothing to check.
    NotTls,
    /// More bytes are needed; the value is the total length wanted.
    Incomplete(usize),
    /// A ClientHello without a server_name extension.
    Absent,
    /// The host_name from the server_name extension.
    Name(String),
    /// A handshake record that is not a well-formed ClientHello.
    Malformed,
}

const MAX_RECORD: usize = 16 * 1024 + 5;

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

/// Parses the first TLS record in `buf`.
pub fn client_hello_sni(buf: &[u8]) -> Sni {
    if buf.is_empty() {
        return Sni::Incomplete(5);
    }
    if buf[0] != 0x16 {
        return Sni::NotTls;
    }
    if buf.len() < 5 {
        return Sni::Incomplete(5);
    }
    if buf[1] != 0x03 {
        return Sni::NotTls;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len + 5 > MAX_RECORD {
        return Sni::Malformed;
    }
    if buf.len() < 5 + len {
        return Sni::Incomplete(5 + len);
    }
    parse_hello(&buf[5..5 + len]).unwrap_or(Sni::Malformed)
}

fn parse_hello(rec: &[u8]) -> Option<Sni> {
    let mut c = Cur(rec);
    if c.u8()? != 1 {
        return None; // not a ClientHello
    }
    let hs_len = c.u24()?;
    // A ClientHello split over several records is not inspected: treat as malformed.
    let mut c = Cur(c.take(hs_len)?);
    c.take(2 + 32)?; // version, random
    let sid = c.u8()?;
    c.take(sid)?;
    let cs = c.u16()?;
    c.take(cs)?;
    let comp = c.u8()?;
    c.take(comp)?;
    if c.0.is_empty() {
        return Some(Sni::Absent);
    }
    let ext_len = c.u16()?;
    let mut e = Cur(c.take(ext_len)?);
    let mut found = None;
    while !e.0.is_empty() {
        let ty = e.u16()?;
        let len = e.u16()?;
        let data = e.take(len)?;
        if ty == 0 {
            if found.is_some() {
                return None; // duplicate extension
            }
            let mut s = Cur(data);
            let list = s.u16()?;
            let mut l = Cur(s.take(list)?);
            while !l.0.is_empty() {
                let kind = l.u8()?;
                let n = l.u16()?;
                let name = l.take(n)?;
                if kind == 0 {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(String::from_utf8(name.to_vec()).ok()?);
                }
            }
            found.as_ref()?;
        }
    }
    Some(found.map(Sni::Name).unwrap_or(Sni::Absent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            ext.extend_from_slice(&[0, 0]);
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        ext.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]); // supported_versions
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn extracts_sni() {
        let h = hello(Some("api.example.com"));
        assert_eq!(client_hello_sni(&h), Sni::Name("api.example.com".into()));
        assert_eq!(client_hello_sni(&hello(None)), Sni::Absent);
        assert_eq!(client_hello_sni(&h[..3]), Sni::Incomplete(5));
        assert_eq!(client_hello_sni(&h[..10]), Sni::Incomplete(h.len()));
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Sni::NotTls);
        assert_eq!(client_hello_sni(b"SSH-2.0-OpenSSH"), Sni::NotTls);
        let mut bad = h.clone();
        bad[5] = 2; // ServerHello type
        assert_eq!(client_hello_sni(&bad), Sni::Malformed);
        let mut trunc = h.clone();
        trunc[8] = 0xff; // handshake length beyond the record
        assert_eq!(client_hello_sni(&trunc), Sni::Malformed);
    }
}
