//! The Engine.IO server: checks each request, routes it to its session and transport, and runs
//! every session's heartbeat until the session ends.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};

use super::config::{AllowedOrigins, EngineConfig};
use super::error::{CloseReason, RequestError};
use super::limits::Admission;
use super::metrics::EngineMetrics;
use super::packet::{Frame, Message, Packet};
use super::session::{PongWait, RequestInfo, Session, Transport, log_tag};
use super::{polling, query, websocket};
use crate::id::{Id, IdMap};
use tracing::Instrument;

/// How long a session the client closed over polling waits for a GET that crossed its close
/// packet on the wire (see `end_session`).
const CLOSE_CROSSING_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The response body type of every answer this crate gives.
pub type Body = Full<Bytes>;

/// The error a request body may fail with, whatever its type.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The peer address of a connection, put into request extensions by the accepting server.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The layer above an Engine.IO server (Socket.IO, or an application speaking raw Engine.IO).
///
/// Calls for one session come in order and never overlap; they run on the task that read the
/// packet, so they must not block.
pub trait Handler: Send + Sync + 'static {
    /// Per-session data kept inside the session.
    type Data: Default + Send + Sync + 'static;

    /// A session opened. Packets queued here reach the client right after the handshake.
    fn on_open(&self, session: &Arc<Session<Self::Data>>);

    /// A message arrived.
    fn on_message(&self, session: &Arc<Session<Self::Data>>, message: Message);

    /// The session ended; it is called exactly once per opened session.
    fn on_close(&self, session: &Arc<Session<Self::Data>>, reason: CloseReason);
}

/// An Engine.IO server for one path.
pub struct EngineIo<H: Handler> {
    config: Arc<EngineConfig>,
    handler: H,
    sessions: Mutex<IdMap<Arc<Session<H::Data>>>>,
    metrics: Arc<EngineMetrics>,
    admission: Admission,
    /// The last count of sessions per transport, and when it was taken.
    transport_count: Mutex<Option<(Instant, (usize, usize))>>,
    /// Set by [`shut_down`](EngineIo::shut_down): no session is opened any more.
    shut: std::sync::atomic::AtomicBool,
    /// WebSocket connections whose task runs: one outlives its session while its close frame
    /// goes out.
    websockets: Arc<AtomicUsize>,
    /// Sessions opened whose end the handler has not been told of yet.
    unended: AtomicUsize,
}

/// Counts a WebSocket connection among [`EngineIo::websocket_count`] from its `101` to the
/// end of its task.
pub(crate) struct LiveWebSocket(Arc<AtomicUsize>);

impl Drop for LiveWebSocket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// How long a count of sessions per transport is reused.
const TRANSPORT_COUNT_TTL: Duration = Duration::from_secs(1);

/// The query parameters Engine.IO reads, decoded; the first occurrence of a parameter wins.
#[derive(Debug, Default)]
struct Query<'a> {
    eio: Option<Cow<'a, str>>,
    transport: Option<Cow<'a, str>>,
    /// Absent when empty too: the reference server opens a new session for `sid=`.
    sid: Option<Cow<'a, str>>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Query<'a> {
        let mut q = Query::default();
        for (key, value) in query::pairs(query) {
            let slot = match &*key {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        q.sid = q.sid.filter(|sid| !sid.is_empty());
        q
    }
}

impl<H: Handler> EngineIo<H> {
    /// A server with these settings, handing sessions to `handler`.
    pub fn new(config: EngineConfig, handler: H) -> Arc<Self> {
        Arc::new(EngineIo {
            config: Arc::new(config),
            handler,
            sessions: Mutex::new(IdMap::default()),
            admission: Admission::default(),
            metrics: Arc::default(),
            transport_count: Mutex::new(None),
            shut: std::sync::atomic::AtomicBool::new(false),
            websockets: Arc::default(),
            unended: AtomicUsize::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The layer's counters.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Open sessions per transport: (polling, websocket), as of at most a second ago.
    ///
    /// Counting walks every session (with the sessions' table locked while it is copied), so
    /// a count is reused for a second: a `/metrics` that anyone may ask for, as often as they
    /// like, must not hold up the requests that look sessions up.
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let mut last = self
            .transport_count
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, count)) = *last
            && at.elapsed() < TRANSPORT_COUNT_TTL
        {
            return count;
        }
        let sessions = self.sessions();
        let ws = sessions
            .iter()
            .filter(|s| s.transport() == Transport::WebSocket)
            .count();
        let count = (sessions.len() - ws, ws);
        *last = Some((Instant::now(), count));
        count
    }

    /// The layer above.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Whether a request is for this server's path (everything else belongs to the caller).
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        // With or without the trailing slash, or with more than one (the .NET client, given a
        // path that ends in one, adds another).
        path.trim_end_matches('/') == self.config.path.trim_end_matches('/')
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    /// WebSocket connections still open or closing (a session's may outlive it while its close
    /// frame goes out): for a shutdown that waits for clients to be told.
    pub fn websocket_count(&self) -> usize {
        self.websockets.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a WebSocket connection until the guard is dropped.
    pub(crate) fn live_websocket(&self) -> LiveWebSocket {
        self.websockets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LiveWebSocket(self.websockets.clone())
    }

    /// Sessions whose end the handler has not been told of yet (those that ended and wait
    /// for a last poll are not among them): once none is left after
    /// [`shut_down`](Self::shut_down), every client's close has been handled.
    pub fn unended_sessions(&self) -> usize {
        self.unended.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every open session.
    pub fn sessions(&self) -> Vec<Arc<Session<H::Data>>> {
        self.lock_sessions().values().cloned().collect()
    }

    /// Opens no session from now on (handshakes get 503, as when the server is full) and
    /// closes every open one with [`CloseReason::ServerShutdown`]: for a server embedded in
    /// a program that goes on serving other things.
    pub fn shut_down(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::Release);
        self.close_all(CloseReason::ServerShutdown);
    }

    /// Whether [`shut_down`](Self::shut_down) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes every session, telling clients why.
    pub fn close_all(&self, reason: CloseReason) {
        for session in self.sessions() {
            session.close(reason);
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, IdMap<Arc<Session<H::Data>>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, sid: &str) -> Option<Arc<Session<H::Data>>> {
        let id = Id::parse(sid)?;
        self.lock_sessions().get(&id).cloned()
    }

    /// Answers one request for this server's path. The body may be of any type (hyper's own,
    /// or a framework's): only a polling POST reads it.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if head_len(&req) > MAX_HEAD_BYTES {
            // hyper stops reading a head at its buffer limit only while the head is incomplete,
            // so one that arrives in a single burst can overshoot it: refuse it here.
            return closing_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        // A refused upgrade ends the connection: the client may already be sending WebSocket
        // frames, which must not be read as further HTTP requests on a kept-alive connection.
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let mut resp = self.answer(req).await;
        if upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn answer<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<BoxError>,
    {
        // Everything but a POST's payload works from the head alone.
        let (head, body) = req.into_parts();
        let req = Request::from_parts(head, ());
        let cors = match self.cors_headers(req.headers()) {
            Ok(cors) => cors,
            Err(e) => return error_response(e, HeaderMap::new()),
        };
        if req.method() == Method::OPTIONS {
            return preflight_response(req.headers(), cors);
        }
        let uri = req.uri().clone();
        // RFC 6455 (section 4.4): a handshake of a version the server does not speak is told
        // the versions it does.
        let unknown_ws_version = req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| !websocket::is_known_version(v));
        let extra = self.config.response_headers.as_ref().map(|h| {
            // As routing reads it: an empty sid asks for a new session.
            let handshake =
                query::get(uri.query().unwrap_or(""), "sid").is_none_or(|sid| sid.is_empty());
            h.for_request(&req, handshake)
        });
        match self.route(req, body).await {
            Ok(Routed::Response(mut resp)) => {
                resp.headers_mut().extend(cors);
                resp.headers_mut().extend(extra.unwrap_or_default());
                resp
            }
            Ok(Routed::Upgrade(mut resp)) => {
                resp.headers_mut().extend(extra.unwrap_or_default());
                resp
            }
            Err(e) => {
                // The session id is a secret: the log shows its tag, as for a session's events.
                tracing::debug!(
                    error = %e,
                    path = uri.path(),
                    session = %query::get(uri.query().unwrap_or(""), "sid")
                        .map_or_else(|| "-".to_owned(), |sid| log_tag(&sid)),
                    "refused an Engine.IO request"
                );
                self.metrics.request_error(e);
                let mut resp = error_response(e, cors);
                if unknown_ws_version && e == RequestError::BadRequest {
                    resp.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static(websocket::KNOWN_VERSIONS),
                    );
                }
                resp
            }
        }
    }

    async fn route<B>(self: &Arc<Self>, req: Request<()>, body: B) -> Result<Routed, RequestError>
    where
        B: hyper::body::Body,
        B::Error: Into<BoxError>,
    {
        let query = req.uri().query().unwrap_or("").to_owned();
        let q = Query::parse(&query);
        // Exact matches only: a transport name is never looked up in anything with other keys.
        let transport = match q.transport.as_deref() {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return Err(RequestError::UnknownTransport),
        };
        if !self.config.allows_transport(transport) {
            return Err(RequestError::UnknownTransport);
        }
        // A WebSocket handshake that names polling is no poll: served as one, it would take a
        // session's packets from under its client, or open a session nobody polls. (Node's
        // server accepts such a WebSocket and closes it at once.)
        if transport == Transport::Polling && websocket::is_upgrade_request(&req) {
            return Err(RequestError::BadRequest);
        }
        let origin_allowed = match req.headers().get(header::ORIGIN) {
            Some(origin) => self
                .config
                .origin_allowed(origin.as_bytes(), host(req.headers())),
            None => true,
        };
        match q.sid.as_deref() {
            Some(sid) => {
                let session = self.find(sid).ok_or(RequestError::UnknownSid)?;
                session.expire_if_overdue();
                let last_poll = transport == Transport::Polling && req.method() == Method::GET;
                if session.is_closed() && !last_poll {
                    return Err(RequestError::UnknownSid);
                }
                if !origin_allowed {
                    return Err(RequestError::Forbidden);
                }
                match transport {
                    Transport::Polling => {
                        if req.method() == Method::GET {
                            polling::get(&session).await.map(Routed::Response)
                        } else if req.method() == Method::POST {
                            polling::post(self, &session, req, body)
                                .await
                                .map(Routed::Response)
                        } else {
                            Err(RequestError::BadRequest)
                        }
                    }
                    Transport::WebSocket if !self.config.offers_upgrade() => {
                        Err(RequestError::BadRequest)
                    }
                    Transport::WebSocket => {
                        websocket::upgrade_existing(self, session, req).map(Routed::Upgrade)
                    }
                }
            }
            None => {
                if req.method() != Method::GET {
                    return Err(RequestError::BadHandshakeMethod);
                }
                if transport == Transport::WebSocket && !websocket::is_upgrade_request(&req) {
                    return Err(RequestError::BadRequest);
                }
                // Node's server asks allowRequest before it looks at the protocol version.
                let allowed = self
                    .config
                    .allow_request
                    .as_ref()
                    .is_none_or(|a| a.allows(&req));
                if q.eio.as_deref() != Some("4") && allowed {
                    return Err(RequestError::UnsupportedProtocolVersion);
                }
                if !origin_allowed || !allowed {
                    return Err(RequestError::Forbidden);
                }
                if self.is_shut_down() {
                    return Err(RequestError::ServerFull);
                }
                let ip = req.extensions().get::<RemoteAddr>().map(|a| a.0.ip());
                self.admission
                    .admit(&self.config, ip, self.session_count())?;
                match transport {
                    Transport::Polling => {
                        let session = self.open_session(Transport::Polling, request_info(&req));
                        let handshake = self.config.handshake_json(session.id().as_str(), false);
                        let open = Bytes::from(format!("0{handshake}"));
                        Ok(Routed::Response(polling::text_response(open)))
                    }
                    Transport::WebSocket => websocket::open_new(self, req).map(Routed::Upgrade),
                }
            }
        }
    }

    /// Creates a session, starts its heartbeat and tells the layer above.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        transport: Transport,
        request: RequestInfo,
    ) -> Arc<Session<H::Data>> {
        let opened = tokio::time::Instant::now();
        let session = self.create_session(transport, request);
        tokio::spawn(
            self.clone()
                .run_session(session.clone(), opened)
                .instrument(session.span()),
        );
        self.handler.on_open(&session);
        session
    }

    /// Creates a session and tells the layer above; the caller runs its heartbeat and calls
    /// [`end_session`](Self::end_session) once it is closed.
    pub(crate) fn open_session_without_heartbeat(
        self: &Arc<Self>,
        transport: Transport,
        request: RequestInfo,
    ) -> Arc<Session<H::Data>> {
        let session = self.create_session(transport, request);
        self.handler.on_open(&session);
        session
    }

    fn create_session(
        self: &Arc<Self>,
        transport: Transport,
        request: RequestInfo,
    ) -> Arc<Session<H::Data>> {
        self.metrics
            .sessions_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Arc::new(Session::new(
            self.config.clone(),
            self.metrics.clone(),
            transport,
            request,
            H::Data::default(),
        ));
        self.unended
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.lock_sessions().insert(session.id(), session.clone());
        tracing::debug!(session = %session.log_id(), transport = transport.as_str(), "session opened");
        // A handshake that passed the check as the server shut down: `shut_down` either saw
        // this session among the open ones, or set the flag before it was inserted.
        if self.is_shut_down() {
            session.close(CloseReason::ServerShutdown);
        }
        session
    }

    /// The heartbeat of one session, then its cleanup once it ends.
    async fn run_session(
        self: Arc<Self>,
        session: Arc<Session<H::Data>>,
        opened: tokio::time::Instant,
    ) {
        self.heartbeat(&session, opened).await;
        self.end_session(&session).await;
    }

    /// The cleanup of a closed session.
    pub(crate) async fn end_session(&self, session: &Arc<Session<H::Data>>) {
        let reason = session
            .close_reason()
            .unwrap_or(CloseReason::TransportError);
        tracing::debug!(session = %session.log_id(), %reason, "session closed");
        self.metrics.closed(reason);
        self.handler.on_close(session, reason);
        self.unended
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        // When the layer above chose to close, a polling client still gets its last packets
        // and then the close packet from its polls, and so sees a clean close rather than an
        // unknown session; then the id is gone. A client that broke the transport's rules or
        // vanished is not waited for (see `Session::fail`).
        match reason {
            reason if reason.owes_the_client_a_close() => {
                session.linger(self.config.ping_interval).await;
            }
            // A client that sends its close packet while it starts a GET (the two cross on
            // separate connections) gets for that GET the noop a pending one would have had,
            // as from the reference server, which reads a POST's body after the requests that
            // came with it, rather than an unknown sid.
            CloseReason::TransportClose => {
                // The client has left: its place under the admission limits is free now.
                self.release(&session.request().remote_addr);
                session.linger(CLOSE_CROSSING_WAIT).await;
                self.lock_sessions().remove(&session.id());
                return;
            }
            _ => {}
        }
        self.lock_sessions().remove(&session.id());
        self.release(&session.request().remote_addr);
    }

    /// Pings every `ping_interval` after the previous pong, from `opened` on. The times are
    /// counted from when each ping was due, not from when this task got to it, so that the
    /// session ends no later than a client counting from the handshake expects.
    async fn heartbeat(&self, session: &Session<H::Data>, opened: tokio::time::Instant) {
        let interval = self.config.ping_interval;
        let timeout = self.config.ping_timeout;
        let mut due = opened + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = session.closed() => return,
            }
            let mut deadline = due + timeout;
            session.ping_sent(deadline);
            if session.send(Frame::PING).is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        match session.pong_deadline_reached(deadline) {
                            PongWait::Until(later) => {
                                deadline = later;
                                continue;
                            }
                            PongWait::TimedOut => return,
                            PongWait::Answered => {}
                        }
                        due = tokio::time::Instant::now() + interval;
                        break;
                    }
                    _ = session.pong_notified() => {
                        if !session.awaiting_pong() {
                            due = tokio::time::Instant::now() + interval;
                            break;
                        }
                    }
                    _ = session.closed() => return,
                }
            }
        }
    }

    /// Gives back a session's place in the admission limits.
    pub(crate) fn release(&self, addr: &Option<SocketAddr>) {
        self.admission.release(addr.map(|a| a.ip()));
    }

    /// Acts on a packet from the client, whichever transport carried it.
    pub(crate) fn on_packet(&self, session: &Arc<Session<H::Data>>, packet: Packet) {
        self.metrics.packet_in(match &packet {
            Packet::Message(Message::Text(t)) => t.len(),
            Packet::Message(Message::Binary(b)) => b.len(),
            _ => 1,
        });
        if !matches!(packet, Packet::Pong { probe: false }) {
            let config = &self.config;
            session.heard_from(|| tokio::time::Instant::now() + config.ping_timeout);
        }
        match packet {
            Packet::Message(message) => self.handler.on_message(session, message),
            Packet::Pong { probe: false } => session.pong_received(),
            Packet::Close => session.close(CloseReason::TransportClose),
            Packet::Ping { .. } => {
                // In v4 only the server pings.
                tracing::debug!(session = %session.log_id(), "invalid heartbeat direction");
                session.fail(CloseReason::TransportError);
            }
            Packet::Pong { probe: true } | Packet::Upgrade | Packet::Noop => {}
        }
    }
}

/// The largest request head (request line and headers) served: hyper's default read-buffer
/// limit, which is what it answers `431` for.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// The size of a request's head as it was on the wire, give or take the line ends.
fn head_len<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers().iter().fold(line, |len, (name, value)| {
        len.saturating_add(name.as_str().len() + value.len() + 4)
    })
}

/// How a routed request is answered.
enum Routed {
    /// An HTTP answer, which gets the CORS headers.
    Response(Response<Body>),
    /// A `101 Switching Protocols`, complete as it is.
    Upgrade(Response<Body>),
}

/// What a session keeps of the request that opened it, copied: hyper's header values and URI are
/// views into its connection's 8 KiB read buffer, which they would keep alive for as long as the
/// session lasts, long after the request (and, for a WebSocket, the HTTP connection) is gone.
/// The copies are views into one buffer of their own: one allocation, not one per value.
/// Header names are copies already (or hyper's static standard names).
pub(crate) fn request_info(req: &Request<()>) -> RequestInfo {
    let uri = req.uri();
    let values_len: usize = req.headers().values().map(|v| v.len()).sum();
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    let mut buf = BytesMut::with_capacity(values_len + uri_len);
    for value in req.headers().values() {
        buf.extend_from_slice(value.as_bytes());
    }
    // Writing into a `BytesMut` cannot fail; it grows if the estimate was short.
    let _ = write!(buf, "{uri}");
    let buf = buf.freeze();

    let mut headers = req.headers().clone();
    let mut at = 0;
    // The clone lists its values in the order they were copied.
    for value in headers.values_mut() {
        let end = at + value.len();
        // hyper accepts no value that this refuses; a view is kept if it ever did.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(buf.slice(at..end)) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
        at = end;
    }
    let uri = Uri::from_maybe_shared(buf.slice(values_len..)).unwrap_or_else(|_| uri.clone());
    RequestInfo {
        headers,
        uri,
        remote_addr: req.extensions().get::<RemoteAddr>().map(|a| a.0),
    }
}

impl<H: Handler> EngineIo<H> {
    /// The CORS headers for a request's origin; an origin with control characters is refused.
    fn cors_headers(&self, headers: &HeaderMap) -> Result<HeaderMap, RequestError> {
        let mut out = HeaderMap::new();
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(out);
        };
        if origin.as_bytes().iter().any(|b| b.is_ascii_control()) {
            return Err(RequestError::BadRequest);
        }
        if !self.config.origin_allowed(origin.as_bytes(), host(headers)) {
            out.insert(header::VARY, HeaderValue::from_static("Origin"));
        } else if self.config.allowed_origins == AllowedOrigins::Any {
            // The same answer for every origin, and never with credentials.
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            out.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        Ok(out)
    }
}

fn host(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::HOST).map(HeaderValue::as_bytes)
}

fn preflight_response(req_headers: &HeaderMap, cors: HeaderMap) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let allowed = cors.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    resp.headers_mut().extend(cors);
    if allowed {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(requested) = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            // The answer depends on them: a cache must not give it for other requested headers.
            h.append(
                header::VARY,
                HeaderValue::from_static("Access-Control-Request-Headers"),
            );
        }
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// An empty answer of `status` that ends the connection: for a request refused before it is
/// read as one of the protocol's.
pub(crate) fn closing_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The answer to a refused request: the protocol's status and JSON error.
pub(crate) fn error_response(err: RequestError, cors: HeaderMap) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(err.body())));
    *resp.status_mut() = err.status();
    resp.headers_mut().extend(cors);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_the_first_occurrence_wins() {
        let q = Query::parse("EIO=%34&transport=polling&sid=a&sid=b&t=x");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("a"));
        let q = Query::parse("transport&EIO=");
        assert_eq!(q.transport.as_deref(), Some(""));
        assert_eq!(q.eio.as_deref(), Some(""));
        assert!(Query::parse("").sid.is_none());
        assert!(Query::parse("EIO=4&sid=").sid.is_none());
    }

    #[test]
    fn error_bodies_match_the_reference() {
        assert_eq!(
            RequestError::UnknownTransport.body(),
            r#"{"code":0,"message":"Transport unknown"}"#
        );
        assert_eq!(
            RequestError::UnknownSid.body(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(RequestError::Forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            RequestError::PayloadTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
