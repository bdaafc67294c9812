//! Settings of the Engine.IO layer.

use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::header::{self, HeaderMap};

use super::session::Transport;

/// Which browser origins may talk to the server, and whether their pages' requests may carry
/// the user's cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Every origin, without credentials (`Access-Control-Allow-Origin: *`, Node's
    /// `cors: { origin: "*" }`): any page may connect, but a browser sends no cookies with its
    /// polling requests (a client with `withCredentials: true` is refused by its browser), so a
    /// page of another site cannot act as its visitor.
    Any,
    /// Every origin, echoed, with credentials (Node's `cors: { origin: true, credentials:
    /// true }`): any site's pages may make requests that carry the user's cookies and read the
    /// answers. Only for servers that do not authenticate their clients by cookies.
    AnyWithCredentials,
    /// Only these exact origins (scheme, host and port, as browsers send them), echoed, with
    /// credentials.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request's `Origin` header value is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match self {
            AllowedOrigins::Any | AllowedOrigins::AnyWithCredentials => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.as_bytes() == origin),
        }
    }
}

/// Decides whether a handshake may open a session (Node's `allowRequest`), from its request's
/// head (a handshake has no body): headers, URI, and the client's address among its extensions
/// ([`RemoteAddr`](super::RemoteAddr), under this crate's accept loop). A refused handshake gets
/// 403 with code 4 "Forbidden" before any session exists, which makes it the place for checks
/// that need no I/O (a cookie, a header a gateway sets, an address range); checks that do are
/// for connect middleware. Requests of sessions already open are not asked about.
#[derive(Clone)]
pub struct AllowRequest(Arc<AllowFn>);

type AllowFn = dyn Fn(&Request<()>) -> bool + Send + Sync;

impl AllowRequest {
    /// Wraps the decision.
    pub fn new(allow: impl Fn(&Request<()>) -> bool + Send + Sync + 'static) -> Self {
        AllowRequest(Arc::new(allow))
    }

    /// Whether `req` may open a session; a decision that panics refuses it.
    pub(crate) fn allows(&self, req: &Request<()>) -> bool {
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0)(req)));
        decided.unwrap_or_else(|_| {
            tracing::error!("allow_request panicked; the handshake is refused");
            false
        })
    }
}

impl std::fmt::Debug for AllowRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllowRequest")
    }
}

/// Adds headers to the server's answers to Engine.IO requests (Node's `initial_headers` and
/// `headers` events): a cookie for a load balancer's stickiness, a header naming the node. It
/// is told the request's head and whether it opens a session (a handshake, over polling or
/// WebSocket), and fills in a header map that goes into the answer: a polling response or the
/// `101` of a WebSocket. Refusals (4xx, 5xx) do not get them. Headers that frame the message or the
/// upgrade (`Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`,
/// `Sec-WebSocket-Accept`) are left out, so a mistake here cannot break the protocol.
#[derive(Clone)]
pub struct ResponseHeaders(Arc<HeadersFn>);

type HeadersFn = dyn Fn(&Request<()>, bool, &mut HeaderMap) + Send + Sync;

impl ResponseHeaders {
    /// Wraps the function: `(request, handshake, headers)`.
    pub fn new(add: impl Fn(&Request<()>, bool, &mut HeaderMap) + Send + Sync + 'static) -> Self {
        ResponseHeaders(Arc::new(add))
    }

    /// The headers for the answer to `req`; a function that panics adds none.
    pub(crate) fn for_request(&self, req: &Request<()>, handshake: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let added = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.0)(req, handshake, &mut headers)
        }));
        if added.is_err() {
            tracing::error!("response_headers panicked; the answer goes without its headers");
            return HeaderMap::new();
        }
        for framing in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_ACCEPT,
        ] {
            headers.remove(framing);
        }
        headers
    }
}

impl std::fmt::Debug for ResponseHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseHeaders")
    }
}

/// Engine.IO settings; every field has the reference implementation's default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The request path served, with a trailing slash (`/engine.io/`, `/socket.io/`).
    pub path: String,
    /// Time between two server pings.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping.
    pub ping_timeout: Duration,
    /// Time a client has to finish an upgrade to WebSocket once it opened one.
    pub upgrade_timeout: Duration,
    /// The transports clients may use (Node's `transports`). A request for another one gets
    /// 400 with code 0 "Transport unknown", as an unknown transport does: a WebSocket-only
    /// server needs no sticky sessions behind a load balancer, a polling-only one passes
    /// proxies that break WebSockets.
    pub transports: Vec<Transport>,
    /// Whether polling sessions are offered the move to WebSocket (Node's `allowUpgrades`).
    /// Without it a session stays on the transport it opened with: an upgrade request gets 400
    /// with code 3, where Node, which only stops offering it, would still carry it out. Clients
    /// may still open WebSocket sessions directly.
    pub allow_upgrades: bool,
    /// Largest polling body and WebSocket message accepted, in bytes.
    pub max_payload: usize,
    /// Browser origins allowed; a handshake from another origin is refused.
    pub allowed_origins: AllowedOrigins,
    /// Also allow pages served by this very server (an origin whose host is the request's
    /// `Host`), as a server with its own web client needs.
    pub allow_same_origin: bool,
    /// Asked about every handshake, before its origin's verdict is applied, as Node asks its
    /// `allowRequest` (none: all may open one). A handshake opens only if both allow it.
    pub allow_request: Option<AllowRequest>,
    /// Headers added to the answers (none: no more than the protocol's own).
    pub response_headers: Option<ResponseHeaders>,
    /// Packets a client's outbound queue may hold. A client whose queue stays over this (or
    /// over `max_queued_bytes`) for 2 seconds, or reaches 8 times as much (in packets, never
    /// fewer than twice `max_packets_per_post`, which one POST may queue in one go), counts as
    /// not reading and is disconnected; a burst that its writer takes back under the limits
    /// within the 2 seconds is only a burst.
    pub max_queued_packets: usize,
    /// Bytes a client's outbound queue may hold; see `max_queued_packets`.
    pub max_queued_bytes: usize,
    /// A volatile packet is dropped when the queue already holds this many packets.
    pub volatile_threshold: usize,
    /// Packets one polling POST may carry.
    pub max_packets_per_post: usize,
    /// Time a polling POST may take to deliver its body.
    pub body_read_timeout: Duration,
    /// Sessions the server holds at most; further handshakes get `503`.
    pub max_sessions: usize,
    /// Sessions one client address (an IPv6 client's /64) may hold; further handshakes get
    /// `429`.
    pub max_sessions_per_ip: usize,
    /// Handshakes one client address may make at once …
    pub handshake_burst_per_ip: u32,
    /// … and per second, sustained; beyond that `429`.
    pub handshakes_per_second_per_ip: f64,
    /// WebSocket messages a client may send at once (control frames count one each, and a
    /// message sent in fragments one per fragment) …
    pub ws_message_burst: u32,
    /// … and per second, sustained; beyond that the connection is closed (1008).
    pub ws_messages_per_second: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/engine.io/".to_owned(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            transports: vec![Transport::Polling, Transport::WebSocket],
            allow_upgrades: true,
            max_payload: 1_000_000,
            allowed_origins: AllowedOrigins::Any,
            allow_same_origin: false,
            allow_request: None,
            response_headers: None,
            max_queued_packets: 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            volatile_threshold: 16,
            // socket.io-client sends in one POST whatever was emitted while the previous POST was
            // on its way: hundreds of packets from a busy client.
            max_packets_per_post: 16_384,
            body_read_timeout: Duration::from_secs(15),
            max_sessions: 100_000,
            // One address cannot take the whole server, yet one load generator (which the
            // per-process cap on open files keeps under 20,000 connections) or a crowd behind one
            // proxy or NAT fits; a server facing the internet directly may want it far tighter.
            max_sessions_per_ip: 20_000,
            handshake_burst_per_ip: 20_000,
            handshakes_per_second_per_ip: 5_000.0,
            // Far above what any client needs; it bounds what a flood of tiny frames costs.
            ws_message_burst: 100_000,
            ws_messages_per_second: 50_000.0,
        }
    }
}

impl EngineConfig {
    /// Whether a request with this `Origin` (and `Host`) may talk to the server.
    pub fn origin_allowed(&self, origin: &[u8], host: Option<&[u8]>) -> bool {
        // An origin with a WebSocket scheme is not a browser's (a page's origin is http or
        // https): some clients name the URL they connect to (the Swift client's WebSocket
        // library). A client that is not a browser could as well leave the header out, so
        // refusing these protects nobody and locks those clients out.
        if self.allowed_origins.allows(origin)
            || origin.starts_with(b"ws://")
            || origin.starts_with(b"wss://")
        {
            return true;
        }
        let same_host =
            |scheme: &[u8]| host.is_some_and(|h| origin.strip_prefix(scheme) == Some(h));
        self.allow_same_origin && (same_host(b"http://") || same_host(b"https://"))
    }

    /// Whether a client may use `transport` at all.
    pub fn allows_transport(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }

    /// Whether a polling session may move to WebSocket.
    pub fn offers_upgrade(&self) -> bool {
        self.allow_upgrades && self.allows_transport(Transport::WebSocket)
    }

    /// The handshake JSON (without the `0` type), with this session's id.
    pub(crate) fn handshake_json(&self, sid: &str, websocket: bool) -> String {
        format!(
            r#"{{"sid":"{sid}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            if websocket || !self.offers_upgrade() {
                "[]"
            } else {
                r#"["websocket"]"#
            },
            self.ping_interval.as_millis(),
            self.ping_timeout.as_millis(),
            self.max_payload,
        )
    }
}
