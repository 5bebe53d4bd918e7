//! A minimal HTTP/1.1 client on top of hyper for the daemon's own callers: the `jobs` CLI (unix
//! socket), the cattle agent (TCP) and the Hetzner client (TCP or TLS). One request per
//! connection; responses are size-capped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Sends `req` over `stream` and returns status and body.
pub async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("cannot read response: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

/// Builds a request with a JSON (or empty) body.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("valid request parts")
}
