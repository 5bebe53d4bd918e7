//! The accept loops: one HTTP/1.1 server per listener, a connection limit, header and body
//! timeouts (so a slow client cannot hold a connection or a request slot), peer credentials per
//! unix connection, and graceful shutdown that lets in-flight requests finish.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use super::App;
use super::api::{self, UnixPeer};
use super::metrics::inc;

fn builder(app: &App) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(app.settings.limits.header_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    b
}

/// Serves both listeners until `stop` fires, then waits (bounded) for open requests.
pub async fn serve(
    app: Arc<App>,
    unix: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        app.settings.limits.max_connections,
    ));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = unix.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    inc(&app.metrics.connections_refused);
                    continue;
                };
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                let (a, watcher) = (app.clone(), graceful.watcher());
                // The user lookup runs in the connection's task, so a slow one delays only it.
                tokio::spawn(async move {
                    let actor = match uid {
                        Some(u) => a.resolver.resolve(u).await,
                        None => None,
                    };
                    let peer = UnixPeer { uid, actor };
                    let conn = builder(&a).serve_connection(
                        TokioIo::new(stream),
                        service_fn({
                            let a = a.clone();
                            move |req| api::handle_unix(a.clone(), peer.clone(), req)
                        }),
                    );
                    let _ = watcher.watch(conn).await;
                    drop(permit);
                });
            }
            accepted = accept_tcp(tcp.as_ref()) => {
                let Ok((stream, remote)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    inc(&app.metrics.connections_refused);
                    continue;
                };
                let a = app.clone();
                let svc = service_fn(move |req| api::handle_tcp(a.clone(), remote, req));
                let conn = builder(&app).serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = fut.await;
                    drop(permit);
                });
            }
        }
    }
    drop(unix);
    drop(tcp);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            event = "orchestrator.shutdown_timeout",
            "open connections did not finish within 10s"
        );
    }
}

async fn accept_tcp(
    l: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
