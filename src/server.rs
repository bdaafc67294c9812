//! Accepting TCP connections and serving HTTP/1.1 on them with the limits a public server needs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::engineio::server::closing_response;
use crate::engineio::{Body, RemoteAddr};

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Headers one request may carry; more get `431`.
    pub max_headers: usize,
    /// Bytes a request head (request line and headers) may take; more get `431`. A session
    /// keeps the headers of the request that opened it for as long as it lives (the
    /// handshake its sockets show, here and to the other nodes of a cluster), so this bounds
    /// what each session holds. Node's HTTP server has the same default.
    pub max_header_bytes: usize,
    /// Time given to open connections to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// Time a response may wait for a client that reads none of it before the connection is
    /// closed. A long-polling answer leaves the session's queue (and its limits) once it is
    /// made: without this, a client that never reads its answers, and polls again on a new
    /// connection each time, would pin each answer in memory for as long as it liked.
    pub write_stall_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(30),
            max_headers: HYPER_MAX_HEADERS,
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
            // Longer than a client waits for a ping (25 + 20 seconds by default) before it
            // gives the connection up.
            write_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// The most hyper's read buffer of a connection grows to (hyper's own limit is 408 KiB). It
/// grows while a large body comes in, and keeps that size for as long as the connection is
/// kept alive: a polling client that posted a megabyte left 400 KiB behind. Reads of up to
/// 64 KiB take a large body in as well.
const READ_BUFFER_MAX: usize = 64 * 1024;

/// The headers hyper accepts in a request when it is given no limit.
const HYPER_MAX_HEADERS: usize = 100;

/// Connections a listener from [`bind`] lets wait for `accept`, unless told otherwise.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// A listener for [`serve`]: the first address `addr` resolves to, with `SO_REUSEADDR` (as
/// `TcpListener::bind`) and `TCP_NODELAY`, which the connections it accepts inherit, sparing a
/// system call per connection. `backlog` bounds the connections waiting to be accepted. An
/// IPv6 listener takes IPv4 clients too (`IPV6_V6ONLY` off, as Node's `listen` sets it),
/// whatever the system's default: `::` means every address.
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
    if addr.is_ipv6() {
        socket2::SockRef::from(&socket).set_only_v6(false)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// What the accept loop tells the connections it serves.
#[derive(Debug, Clone, Copy, Default)]
struct Told {
    /// Shutdown has started.
    stop: bool,
    /// Bumped when the process ran out of file descriptors: connections that have not sent a
    /// whole request yet close.
    shed: u64,
}

/// How often connections are shed at most, while file descriptors run out.
const SHED_INTERVAL: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 (with upgrades) on `listener` until `shutdown` resolves.
///
/// `handler` answers every request; the peer's address is in the request's extensions as
/// [`RemoteAddr`]. After shutdown no connection is accepted and open ones get a grace period.
///
/// When the process runs out of file descriptors, the connections that have not sent a whole
/// request head yet are closed (at most once a second): connections opened and left silent,
/// by the thousand, would otherwise hold every descriptor for their header timeout, and no
/// client could open a connection meanwhile (a polling client's next request among them).
pub async fn serve<F, Fut>(
    listener: TcpListener,
    config: HttpConfig,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (told_tx, told_rx) = watch::channel(Told::default());
    let mut last_shed: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    // Whether accepted sockets come with TCP_NODELAY already (a listener from `bind`), learnt
    // from the first one.
    let mut inherits_nodelay = None;
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                    if out_of_fds && last_shed.is_none_or(|at| at.elapsed() >= SHED_INTERVAL) {
                        last_shed = Some(tokio::time::Instant::now());
                        tracing::warn!(
                            error = %e,
                            "out of file descriptors: closing connections that sent no request"
                        );
                        told_tx.send_modify(|told| told.shed += 1);
                    } else {
                        tracing::debug!(error = %e, "accept failed");
                    }
                    // Wait a little rather than spin.
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
            told_rx.clone(),
        ));
    }
    told_tx.send_modify(|told| told.stop = true);
    // Only the connections' receivers may keep the channel open now.
    drop(told_rx);
    // Connections watch `told_rx`; wait until they are all gone or the grace period ends.
    let _ = tokio::time::timeout(config.shutdown_grace, told_tx.closed()).await;
}

async fn serve_connection<F, Fut>(
    stream: TcpStream,
    addr: SocketAddr,
    config: HttpConfig,
    handler: F,
    mut told: watch::Receiver<Told>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let conn = Conn::new(stream, config.write_stall_timeout);
    let read_end = conn.read_end.clone();
    let requests = conn.read_end.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(RemoteAddr(addr));
        // RFC 9112 (section 3.2): an HTTP/1.1 request without `Host` is answered 400, as
        // Node's HTTP server does, before anything of it reaches the handler.
        let refused = req.version() == hyper::Version::HTTP_11
            && !req.headers().contains_key(hyper::header::HOST);
        // Taken before anything else is read: the end of the stream may follow the request.
        let answering = read_end.answering();
        let fut = (!refused).then(|| handler(req));
        async move {
            let Some(fut) = fut else {
                tracing::debug!(%addr, "refused an HTTP/1.1 request without Host");
                return Ok(closing_response(hyper::StatusCode::BAD_REQUEST));
            };
            tokio::pin!(fut);
            let resp = std::future::poll_fn(|cx| {
                let poll = fut.as_mut().poll(cx);
                if poll.is_pending() {
                    answering.waits();
                }
                poll
            })
            .await;
            drop(answering);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_bytes)
        .max_buf_size(READ_BUFFER_MAX.max(config.max_header_bytes));
    // hyper's own limit is 100; told any limit, even that one, it fills a vector of that many
    // header slots for every request (about 2,400 instructions).
    if config.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(config.max_headers);
    }
    let conn = builder
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    tokio::pin!(conn);
    let shed_before = told.borrow().shed;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = told.changed() => {
                let now = *told.borrow_and_update();
                if changed.is_err() || now.stop {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                    return;
                }
                if now.shed != shed_before && !requests.started() {
                    tracing::debug!(%addr, "closed a connection that sent no request");
                    return;
                }
            }
        }
    }
}

/// `accept` errors: the process's, or the system's, file descriptors ran out.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A connection as hyper sees it: the socket, except that a `101 Switching Protocols` head is
/// held back rather than written at once, and the end of the stream reaches hyper when
/// [`ReadEnd`] lets it.
///
/// A WebSocket opened straight away costs the server three writes: the `101`, the Engine.IO
/// open packet, and the answer to the client's Socket.IO `CONNECT`. The first two need not be
/// apart: the WebSocket layer takes the held head over with the connection and sends it with
/// the open packet, in one write (see `engineio::ws_io`). Whoever else uses the connection
/// after a `101` (an embedder's own upgrade) gets the head written before anything else is
/// read or written, so holding it never stalls an exchange.
pub(crate) struct Conn {
    stream: TcpStream,
    held: Vec<u8>,
    read_end: ReadEnd,
    write_stall_timeout: Duration,
    /// Running while a write waits for the client; boxed, since most connections never wait.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

const SWITCHING_PROTOCOLS: &[u8] = b"HTTP/1.1 101 ";

impl Conn {
    fn new(stream: TcpStream, write_stall_timeout: Duration) -> Conn {
        Conn {
            stream,
            held: Vec::new(),
            read_end: ReadEnd::default(),
            write_stall_timeout,
            stall: None,
        }
    }

    /// Passes on a write's outcome, and fails one that has waited for the client longer than
    /// the stall timeout (counted from the first write that had to wait, reset by any
    /// progress).
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall = None;
            return polled;
        }
        let timeout = self.write_stall_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            tracing::debug!("a client read nothing of a response for {timeout:?}");
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }

    /// The socket, and the response head held back for the first write after the upgrade.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.held)
    }

    fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        // Room for the frames that usually follow, so that they join it without a copy.
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        // Whoever takes the upgrade reads the stream as it is, its end included.
        self.read_end.show();
        self.held.reserve(len.max(512));
        for b in bufs {
            self.held.extend_from_slice(b);
        }
        len
    }

    /// Writes what is held; ready once nothing is.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !self.held.is_empty() {
            let polled = Pin::new(&mut self.stream).poll_write(cx, &self.held);
            let n = ready!(self.watch_stall(cx, polled))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 && this.read_end.keep_eof(cx) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.is_empty() && buf.starts_with(SWITCHING_PROTOCOLS) {
            return Poll::Ready(Ok(this.hold(&[io::IoSlice::new(buf)])));
        }
        ready!(this.poll_release(cx))?;
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        let n = ready!(this.watch_stall(cx, polled))?;
        this.read_end.wrote();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        if this.held.is_empty() && first.is_some_and(|b| b.starts_with(SWITCHING_PROTOCOLS)) {
            return Poll::Ready(Ok(this.hold(bufs)));
        }
        ready!(this.poll_release(cx))?;
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        let n = ready!(this.watch_stall(cx, polled))?;
        this.read_end.wrote();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    /// A held head stays held: it is written with what follows it, or before the next read.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// When hyper gets to see the end of a connection's stream.
///
/// A client may shut its side of the connection as soon as its request is sent (as `nc` and
/// many scripts do) and still wait for the answer. hyper, reading the end of the stream while
/// a request is in progress, drops the request unanswered, which it did to a quarter or more
/// of such requests: the end is read as soon as the request is, often before the handler has
/// run. So while a request is in progress, the end of the stream is kept from hyper until
/// either the answer's first write is out, or the handler, polled once more, is still
/// waiting: a long-poll whose client has gone, a body that will never be complete. Those end
/// as before: hyper drops them, and a long-poll dropped ends its session (see
/// `engineio::polling`).
#[derive(Clone, Default)]
struct ReadEnd(Arc<ReadEndState>);

#[derive(Default)]
struct ReadEndState {
    /// [`ANSWERING`], [`KEPT`], [`SHOWN`], [`SHOW_AFTER_WRITE`].
    flags: AtomicU8,
    /// The waker of the read that found the end and was kept waiting.
    reader: AtomicWaker,
}

/// A request is in progress (one at a time on HTTP/1.1).
const ANSWERING: u8 = 1;
/// The end of the stream was read and kept from hyper.
const KEPT: u8 = 2;
/// hyper sees the end from now on.
const SHOWN: u8 = 4;
/// The answer is ready: the end is shown after its next write.
const SHOW_AFTER_WRITE: u8 = 8;
/// A request head has come whole on this connection (never cleared).
const STARTED: u8 = 16;

impl ReadEnd {
    /// Marks a request in progress until the guard is dropped. A request read before the end
    /// was shown (pipelined behind the one answered) starts afresh: hyper has not seen the end.
    fn answering(&self) -> Answering {
        self.0.flags.store(ANSWERING | STARTED, Ordering::Release);
        Answering(self.clone())
    }

    /// Whether a request head has come whole on this connection.
    fn started(&self) -> bool {
        self.0.flags.load(Ordering::Acquire) & STARTED != 0
    }

    /// Whether the end of the stream, just read, is kept from hyper for now.
    fn keep_eof(&self, cx: &Context<'_>) -> bool {
        let flags = self.0.flags.load(Ordering::Acquire);
        let keep = flags & SHOWN == 0 && flags & (ANSWERING | SHOW_AFTER_WRITE) != 0;
        if !keep {
            return false;
        }
        self.0.reader.register(cx.waker());
        // Shown meanwhile (an upgrade): the end goes through after all.
        self.0.flags.fetch_or(KEPT, Ordering::AcqRel) & SHOWN == 0
    }

    fn show(&self) {
        self.0.flags.fetch_or(SHOWN, Ordering::AcqRel);
        self.0.reader.wake();
    }

    fn wrote(&self) {
        if self.0.flags.load(Ordering::Acquire) & (SHOW_AFTER_WRITE | SHOWN) == SHOW_AFTER_WRITE {
            self.show();
        }
    }
}

/// A request in progress; see [`ReadEnd`].
struct Answering(ReadEnd);

impl Answering {
    /// The handler was polled and is still waiting: a kept end reaches hyper now.
    fn waits(&self) {
        if self.0.0.flags.load(Ordering::Acquire) & KEPT != 0 {
            self.0.show();
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let flags = self.0.0.flags.fetch_and(!ANSWERING, Ordering::AcqRel);
        if flags & KEPT != 0 {
            self.0.0.flags.fetch_or(SHOW_AFTER_WRITE, Ordering::AcqRel);
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM (what `kill`, systemd and container
/// runtimes send): the usual shutdown future for [`serve`] and `SocketIo::serve`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_on_every_ipv6_address_takes_ipv4_clients_too() {
        let listener = bind("[::]:0", 16).await.expect("an IPv6 listener");
        assert!(
            !socket2::SockRef::from(&listener)
                .only_v6()
                .expect("IPV6_V6ONLY")
        );
        let port = listener.local_addr().expect("address").port();
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        connected.expect("an IPv4 client connects");
        let (_, peer) = accepted.expect("accepted");
        assert_eq!(peer.ip().to_canonical(), std::net::Ipv4Addr::LOCALHOST);
    }
}
