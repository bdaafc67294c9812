//! Accepting TCP connections and serving HTTP/1.1 on them with the limits a public server needs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::engineio::{Body, RemoteAddr};

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Headers one request may carry; more get `431`.
    pub max_headers: usize,
    /// Time given to open connections to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections a listener from [`bind`] lets wait for `accept`, unless told otherwise.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// A listener for [`serve`]: the first address `addr` resolves to, with `SO_REUSEADDR` (as
/// `TcpListener::bind`) and `TCP_NODELAY`, which the connections it accepts inherit, sparing a
/// system call per connection. `backlog` bounds the connections waiting to be accepted.
pub async fn bind(
    addr: impl tokio::net::ToSocketAddrs,
    backlog: u32,
) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves HTTP/1.1 (with upgrades) on `listener` until `shutdown` resolves.
///
/// `handler` answers every request; the peer's address is in the request's extensions as
/// [`RemoteAddr`]. After shutdown no connection is accepted and open ones get a grace period.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    config: HttpConfig,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    // Whether accepted sockets come with TCP_NODELAY already (a listener from `bind`), learnt
    // from the first one.
    let mut inherits_nodelay = None;
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let inherited = *inherits_nodelay.get_or_insert_with(|| stream.nodelay().unwrap_or(false));
        if !inherited {
            let _ = stream.set_nodelay(true);
        }
        tokio::spawn(serve_connection(
            stream,
            addr,
            config.clone(),
            handler.clone(),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    // Only the connections' receivers may keep the channel open now.
    drop(stop_rx);
    // Connections watch `stop_rx`; wait until they are all gone or the grace period ends.
    let _ = tokio::time::timeout(config.shutdown_grace, stop_tx.closed()).await;
}

async fn serve_connection<F, Fut>(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    config: HttpConfig,
    handler: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(RemoteAddr(addr));
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_headers);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
