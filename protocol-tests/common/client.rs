//! Raw clients for the protocol tests, all over real sockets:
//!
//! * [`HttpConn`]: HTTP/1.1 written and read by hand over a `TcpStream` (bodies framed by
//!   `Content-Length`, chunked, or the end of the connection), so that malformed requests can be
//!   sent exactly as written and every status and header is seen as the server sent it.
//! * [`Polling`]: an Engine.IO long-polling session on top of it.
//! * [`RawWs`]: a WebSocket whose frames are built byte by byte (masking, reserved bits, lengths
//!   and opcodes of our choosing) for the frame-level attacks.
//! * [`ws_connect`] and friends: a regular tokio-tungstenite client for well-behaved traffic.
//! * [`Bystander`]: a client connected throughout an attack that must keep getting its answers.
//!
//! Every helper panics with a message saying what was expected: these are test clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long one step waits for an answer that must come.
pub const STEP: Duration = Duration::from_secs(3);

/// The Engine.IO echo server's path on the conformance server.
pub const ENGINE_PATH: &str = "/engine.io/";
/// The Socket.IO path on the conformance server.
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// The largest response head this client accepts.
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// One HTTP response as it came off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts an Engine.IO error answer: this status, `application/json` and exactly
    /// `{"code":code,"message":<the protocol's message>}`.
    #[track_caller]
    pub fn assert_engine_error(&self, status: u16, code: u8) {
        assert_eq!(
            self.status,
            status,
            "status for an error code {code} answer (body {:?})",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "content type of an error answer"
        );
        assert_eq!(
            self.json(),
            serde_json::json!({ "code": code, "message": error_message(code) }),
            "error body"
        );
    }

    /// The Engine.IO packets of a polling payload; panics unless this is a `200 text/plain`.
    #[track_caller]
    pub fn packets(&self) -> Vec<String> {
        assert_eq!(
            self.status,
            200,
            "a polling GET must succeed (body {:?})",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=UTF-8"),
            "content type of a polling payload"
        );
        split_payload(&self.body)
    }
}

/// The message the protocol pairs with each Engine.IO error code.
pub fn error_message(code: u8) -> &'static str {
    match code {
        0 => "Transport unknown",
        1 => "Session ID unknown",
        2 => "Bad handshake method",
        3 => "Bad request",
        4 => "Forbidden",
        5 => "Unsupported protocol version",
        _ => panic!("no Engine.IO error code {code}"),
    }
}

/// Splits a long-polling payload at the record separator.
pub fn split_payload(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == 0x1e)
        .map(|p| String::from_utf8(p.to_vec()).expect("a polling payload is UTF-8"))
        .collect()
}

/// Parses an open packet (`0{...}`) into its JSON.
#[track_caller]
pub fn parse_open(packet: &str) -> Value {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("open packet JSON ({e}): {packet:?}"))
}

/// One client connection speaking HTTP/1.1 by hand.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// The request line and headers of a request (the body is appended by the caller).
pub fn request_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if body_len > 0 || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl HttpConn {
    /// Opens a TCP connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        let _ = stream.set_nodelay(true);
        HttpConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The socket, for tricks such as `SO_LINGER 0`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes bytes exactly as given.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Shuts the client's side of the connection (a TCP half-close), as `nc` and many scripts
    /// do once their request is written.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .expect("shut down the write side");
    }

    /// Writes a request (with `Content-Length` when there is a body or it is a POST).
    pub async fn write_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut bytes = request_head(method, target, headers, body.len());
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await
    }

    /// Writes a request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        self.write_request(method, target, headers, body).await?;
        self.read_response(method == "HEAD").await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn fill_to(&mut self, len: usize) -> std::io::Result<()> {
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a status line and headers.
    pub async fn read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("response head too large"));
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((status, headers))
    }

    /// Reads one response (`head_only` for the answer to a HEAD request).
    pub async fn read_response(&mut self, head_only: bool) -> std::io::Result<HttpResponse> {
        let (status, headers) = self.read_head().await?;
        let mut resp = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line = self.read_line().await?;
                let size = String::from_utf8_lossy(&line);
                let size = size.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                self.fill_to(size + 2).await?;
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
            self.fill_to(len).await?;
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Whether the server closes (or resets) the connection within `within`, discarding whatever
    /// it sends before; `false` when the connection is still open after that time.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => self.buf.clear(),
            }
        }
    }

    /// The socket and the bytes read past the last response.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// One request on a fresh connection; panics when no response comes within [`STEP`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let fut = async {
        let mut conn = HttpConn::connect(addr).await;
        conn.request(method, target, headers, body).await
    };
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("{method} {target}: {e}"),
        Err(_) => panic!("{method} {target}: no response within {STEP:?}"),
    }
}

/// A GET on a fresh connection.
pub async fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    request(addr, "GET", target, &[], b"").await
}

/// A text POST on a fresh connection.
pub async fn post(addr: SocketAddr, target: &str, body: &[u8]) -> HttpResponse {
    request(
        addr,
        "POST",
        target,
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body,
    )
    .await
}

/// Sends bytes written by hand (a whole request, malformed as the test likes) on a fresh
/// connection and returns the first response.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    let fut = async {
        let mut conn = HttpConn::connect(addr).await;
        conn.send_raw(bytes).await?;
        conn.read_response(false).await
    };
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("raw request: {e}"),
        Err(_) => panic!("raw request: no response within {STEP:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Engine.IO long-polling
// ---------------------------------------------------------------------------------------------

/// An Engine.IO long-polling session.
#[derive(Debug, Clone)]
pub struct Polling {
    /// The server.
    pub addr: SocketAddr,
    /// The path (`/engine.io/`, `/socket.io/`).
    pub path: String,
    /// The session id.
    pub sid: String,
    /// The handshake JSON.
    pub handshake: Value,
    /// When the handshake answer arrived.
    pub opened: Instant,
}

impl Polling {
    /// Opens a session with a polling handshake.
    pub async fn open(addr: SocketAddr, path: &str) -> Polling {
        Polling::open_with(addr, path, &[]).await
    }

    /// Opens a session with a polling handshake that carries these headers.
    pub async fn open_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Polling {
        let target = format!("{path}?EIO=4&transport=polling");
        let resp = request(addr, "GET", &target, headers, b"").await;
        let opened = Instant::now();
        let packets = resp.packets();
        assert_eq!(
            packets.len(),
            1,
            "the handshake is one open packet: {packets:?}"
        );
        let handshake = parse_open(&packets[0]);
        let sid = handshake["sid"]
            .as_str()
            .expect("the handshake has a string sid")
            .to_owned();
        Polling {
            addr,
            path: path.to_owned(),
            sid,
            handshake,
            opened,
        }
    }

    /// The request target of this session's polling requests.
    pub fn target(&self) -> String {
        format!("{}?EIO=4&transport=polling&sid={}", self.path, self.sid)
    }

    /// The request target of a WebSocket joining this session.
    pub fn websocket_target(&self) -> String {
        format!("{}?EIO=4&transport=websocket&sid={}", self.path, self.sid)
    }

    /// A WebSocket joining this session, before its probe.
    pub async fn websocket(&self) -> Ws {
        ws_connect(self.addr, &self.websocket_target()).await
    }

    /// A WebSocket joining this session that has probed: `2probe` answered with `3probe`.
    pub async fn probed_websocket(&self) -> Ws {
        let mut ws = self.websocket().await;
        ws_send(&mut ws, "2probe").await;
        assert_eq!(ws_recv_text(&mut ws).await, "3probe");
        ws
    }

    /// A GET (panics if there is no answer within [`STEP`]).
    pub async fn get(&self) -> HttpResponse {
        get(self.addr, &self.target()).await
    }

    /// A GET that must succeed: its packets.
    pub async fn get_packets(&self) -> Vec<String> {
        self.get().await.packets()
    }

    /// Starts a GET in the background.
    pub fn spawn_get(&self) -> tokio::task::JoinHandle<HttpResponse> {
        let me = self.clone();
        tokio::spawn(async move { me.get().await })
    }

    /// A GET that is left pending on the server (it has had 20 ms to get there).
    pub async fn pending_get(&self) -> tokio::task::JoinHandle<HttpResponse> {
        let pending = self.spawn_get();
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending
    }

    /// A text POST.
    pub async fn post(&self, body: &[u8]) -> HttpResponse {
        post(self.addr, &self.target(), body).await
    }

    /// A POST that must be answered `200 ok`.
    pub async fn post_ok(&self, body: &[u8]) {
        let resp = self.post(body).await;
        assert_eq!(
            resp.status,
            200,
            "POST {:?}: {:?}",
            String::from_utf8_lossy(body),
            resp.text()
        );
        assert_eq!(resp.text(), "ok");
    }

    /// GETs until a packet other than a ping arrives (answering pings with a pong), and returns
    /// that GET's packets without the pings.
    pub async fn get_answering_pings(&self) -> Vec<String> {
        loop {
            let packets = self.get_packets().await;
            let pings = packets.iter().filter(|p| *p == "2").count();
            for _ in 0..pings {
                self.post_ok(b"3").await;
            }
            let rest: Vec<String> = packets.into_iter().filter(|p| p != "2").collect();
            if !rest.is_empty() {
                return rest;
            }
        }
    }

    /// Joins the main namespace over polling: posts `40` and asserts that the next packets
    /// (pings answered) begin with the CONNECT answer, which they return with what came with it.
    pub async fn connect_main(&self) -> Vec<String> {
        self.post_ok(b"40").await;
        let packets = self.get_answering_pings().await;
        assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
        packets
    }

    /// Asserts that the session is gone: a GET answers `400 {"code":1}`.
    pub async fn assert_unknown(&self) {
        self.get().await.assert_engine_error(400, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket through tokio-tungstenite
// ---------------------------------------------------------------------------------------------

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `target` (path and query) with extra request headers.
pub async fn ws_connect_with(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}{target}").into_client_request()?;
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .expect("a valid header name");
        req.headers_mut().append(
            name,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (ws, _resp) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}

/// Opens a WebSocket to `target`; panics on failure.
pub async fn ws_connect(addr: SocketAddr, target: &str) -> Ws {
    ws_connect_with(addr, target, &[])
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {target}: {e}"))
}

/// Opens an Engine.IO session straight over WebSocket: the socket, the handshake JSON.
pub async fn ws_open(addr: SocketAddr, path: &str) -> (Ws, Value) {
    let mut ws = ws_connect(addr, &format!("{path}?EIO=4&transport=websocket")).await;
    let open = ws_recv_text(&mut ws).await;
    let handshake = parse_open(&open);
    (ws, handshake)
}

/// The next message (WebSocket pings and pongs skipped), `None` once the socket is closed.
pub async fn ws_next(ws: &mut Ws) -> Option<Message> {
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(msg)) => return Some(msg),
            }
        }
    };
    match tokio::time::timeout(STEP, fut).await {
        Ok(msg) => msg,
        Err(_) => panic!("no WebSocket message within {STEP:?}"),
    }
}

/// The next text message; panics on anything else.
pub async fn ws_recv_text(ws: &mut Ws) -> String {
    match ws_next(ws).await {
        Some(Message::Text(t)) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message that is not an Engine.IO ping; pings are answered with a pong.
pub async fn ws_recv_app(ws: &mut Ws) -> Message {
    loop {
        match ws_next(ws).await {
            Some(Message::Text(t)) if t.as_str() == "2" => ws_send(ws, "3").await,
            Some(msg) => return msg,
            None => panic!("the WebSocket closed while a message was expected"),
        }
    }
}

/// The next text message that is not an Engine.IO ping (pings answered).
pub async fn ws_recv_app_text(ws: &mut Ws) -> String {
    match ws_recv_app(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next binary message that is not an Engine.IO ping (pings answered).
pub async fn ws_recv_app_binary(ws: &mut Ws) -> Vec<u8> {
    match ws_recv_app(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// Sends a text message.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
}

/// Sends a binary message.
pub async fn ws_send_binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::binary(data.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("send binary: {e}"));
}

/// How a WebSocket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsEnd {
    /// The close code, if a close frame came (`None`: the TCP connection simply ended); 1005
    /// for a close frame without one, as browsers report it.
    pub code: Option<u16>,
    /// When, measured from the call.
    pub after: Duration,
    /// Application messages received before the end (Engine.IO pings included, not answered).
    pub messages: Vec<Message>,
}

/// The code of a close frame; 1005 ("no status received") for one without a code.
fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    frame.map_or(1005, |f| u16::from(f.code))
}

/// Waits until the server ends the WebSocket, without answering anything. Panics if it is still
/// open after `within`.
pub async fn ws_expect_end(ws: &mut Ws, within: Duration) -> WsEnd {
    let start = Instant::now();
    let mut messages = Vec::new();
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(close_code(frame)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(msg)) => messages.push(msg),
                Some(Err(_)) | None => return None,
            }
        }
    };
    match tokio::time::timeout(within, fut).await {
        Ok(code) => WsEnd {
            code,
            after: start.elapsed(),
            messages,
        },
        Err(_) => panic!("the WebSocket is still open after {within:?} (got {messages:?})"),
    }
}

/// Waits until the server ends the WebSocket, answering Engine.IO pings meanwhile.
pub async fn ws_expect_end_answering_pings(ws: &mut Ws, within: Duration) -> WsEnd {
    let start = Instant::now();
    let mut messages = Vec::new();
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(close_code(frame)),
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    let _ = ws.send(Message::text("3")).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(msg)) => messages.push(msg),
                Some(Err(_)) | None => return None,
            }
        }
    };
    match tokio::time::timeout(within, fut).await {
        Ok(code) => WsEnd {
            code,
            after: start.elapsed(),
            messages,
        },
        Err(_) => panic!("the WebSocket is still open after {within:?} (got {messages:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames by hand
// ---------------------------------------------------------------------------------------------

/// WebSocket opcodes.
pub mod op {
    /// Continuation.
    pub const CONT: u8 = 0x0;
    /// Text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
    /// The FIN bit.
    pub const FIN: u8 = 0x80;
}

/// A frame as a client sends it: `first` is the FIN/RSV/opcode byte; the payload is masked with
/// `mask` (`None` sends it unmasked, which a server must refuse).
pub fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame with a fixed, non-zero mask key.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// FIN, RSV and opcode.
    pub first: u8,
    /// Whether the server masked it (it must not).
    pub masked: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode() == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How a raw WebSocket connection ended, as seen by [`RawWs::expect_failure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEnd {
    /// The server sent a close frame with this code (1005 when it had none).
    Close(u16),
    /// The TCP connection ended (or was reset) without a close frame.
    Dropped,
}

/// A WebSocket connection whose frames are written and read by hand.
#[derive(Debug)]
pub struct RawWs {
    conn: HttpConn,
}

impl RawWs {
    /// Opens a WebSocket to `target` (path and query); panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, target: &str) -> RawWs {
        Self::connect_with(addr, target, &[]).await
    }

    /// The WebSocket handshake headers of a client.
    pub fn handshake_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
    }

    /// Opens a WebSocket with extra handshake headers; panics unless the server answers 101.
    pub async fn connect_with(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> RawWs {
        let (ws, resp) = Self::connect_response(addr, target, extra).await;
        assert_eq!(
            resp.status, 101,
            "WebSocket handshake to {target}: {resp:?}"
        );
        ws
    }

    /// Sends a handshake and returns the connection and the response head (whatever its status).
    pub async fn connect_response(
        addr: SocketAddr,
        target: &str,
        extra: &[(&str, &str)],
    ) -> (RawWs, HttpResponse) {
        let mut headers = Self::handshake_headers();
        headers.extend_from_slice(extra);
        let mut conn = HttpConn::connect(addr).await;
        conn.write_request("GET", target, &headers, b"")
            .await
            .expect("write the handshake");
        let resp = tokio::time::timeout(STEP, async {
            let (status, headers) = conn.read_head().await?;
            let mut resp = HttpResponse {
                status,
                headers,
                body: Vec::new(),
            };
            if status != 101 {
                if let Some(len) = resp.header("content-length").and_then(|l| l.parse().ok()) {
                    conn.fill_to(len).await?;
                    resp.body = conn.buf.drain(..len).collect();
                }
            }
            Ok::<_, std::io::Error>(resp)
        })
        .await
        .expect("a handshake answer in time")
        .expect("a handshake answer");
        if resp.status == 101 {
            assert_eq!(
                resp.header("sec-websocket-accept"),
                Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                "the accept key"
            );
        }
        (RawWs { conn }, resp)
    }

    /// Opens an Engine.IO session over a raw WebSocket on `path`: the socket and the sid.
    pub async fn open_engine(addr: SocketAddr, path: &str) -> (RawWs, String) {
        let mut ws = Self::connect(addr, &format!("{path}?EIO=4&transport=websocket")).await;
        let open = ws.read_frame().await.expect("the open packet");
        assert_eq!(open.opcode(), op::TEXT, "the open packet is a text frame");
        let sid = parse_open(&open.text())["sid"]
            .as_str()
            .expect("a sid")
            .to_owned();
        (ws, sid)
    }

    /// The TCP socket.
    pub fn stream(&self) -> &TcpStream {
        self.conn.stream()
    }

    /// Writes bytes exactly as given.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.send_raw(bytes).await
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, first: u8, payload: &[u8]) -> std::io::Result<()> {
        self.send_raw(&masked(first, payload)).await
    }

    /// Sends a complete masked text message.
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(op::FIN | op::TEXT, text.as_bytes()).await
    }

    /// Reads one frame from the server, waiting at most [`STEP`]; `None` when the connection
    /// ended.
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        match tokio::time::timeout(STEP, self.read_frame_inner()).await {
            Ok(Ok(frame)) => Some(frame),
            Ok(Err(_)) => None,
            Err(_) => panic!("no frame from the server within {STEP:?}"),
        }
    }

    async fn read_frame_inner(&mut self) -> std::io::Result<ServerFrame> {
        let c = &mut self.conn;
        c.fill_to(2).await?;
        let first = c.buf[0];
        let masked = c.buf[1] & 0x80 != 0;
        let (len, mut at) = match c.buf[1] & 0x7f {
            126 => {
                c.fill_to(4).await?;
                (u64::from(u16::from_be_bytes([c.buf[2], c.buf[3]])), 4)
            }
            127 => {
                c.fill_to(10).await?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&c.buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).map_err(|_| std::io::Error::other("huge frame"))?;
        let key = if masked {
            c.fill_to(at + 4).await?;
            let key = [c.buf[at], c.buf[at + 1], c.buf[at + 2], c.buf[at + 3]];
            at += 4;
            Some(key)
        } else {
            None
        };
        c.fill_to(at + len).await?;
        let mut payload: Vec<u8> = c.buf[at..at + len].to_vec();
        c.buf.drain(..at + len);
        if let Some(key) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Ok(ServerFrame {
            first,
            masked,
            payload,
        })
    }

    /// Reads frames until the server fails the connection: a close frame (its code), or the end
    /// of the TCP stream. Data frames before it (Engine.IO pings) are skipped. Panics if the
    /// connection is still open after `within`.
    pub async fn expect_failure(&mut self, within: Duration) -> RawEnd {
        let fut = async {
            loop {
                match self.read_frame_inner().await {
                    Ok(f) if f.opcode() == op::CLOSE => {
                        return RawEnd::Close(f.close_code().unwrap_or(1005));
                    }
                    Ok(_) => continue,
                    Err(_) => return RawEnd::Dropped,
                }
            }
        };
        match tokio::time::timeout(within, fut).await {
            Ok(end) => end,
            Err(_) => panic!("the server did not end the WebSocket within {within:?}"),
        }
    }

    /// Whether the server ends the connection within `within` (whatever it sends before is
    /// discarded).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        self.conn.closed_within(within).await
    }

    /// Reads (and drops) until the server ends the TCP stream: `Ok` for an orderly end, the
    /// error for a reset. Panics if the stream is still open after `within`.
    pub async fn end_of_stream(&mut self, within: Duration) -> std::io::Result<()> {
        let ending = async {
            loop {
                self.conn.buf.clear();
                if self.conn.fill().await? == 0 {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(within, ending)
            .await
            .unwrap_or_else(|_| panic!("the stream did not end within {within:?}"))
    }

    /// Reads frames until one is not an Engine.IO ping `2` (which is answered with `3`).
    pub async fn read_app_frame(&mut self) -> Option<ServerFrame> {
        loop {
            let f = self.read_frame().await?;
            if f.opcode() == op::TEXT && f.payload == b"2" {
                self.send_text("3").await.ok()?;
                continue;
            }
            return Some(f);
        }
    }
}

/// Asserts that a raw WebSocket was failed by the server: a close frame with one of `codes`, or
/// (when `drop_ok`) the connection simply dropped.
#[track_caller]
pub fn assert_failed(end: &RawEnd, codes: &[u16], what: &str) {
    match end {
        RawEnd::Close(code) => assert!(
            codes.contains(code),
            "{what}: close code {code}, expected one of {codes:?}"
        ),
        RawEnd::Dropped => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Bystanders and fresh clients
// ---------------------------------------------------------------------------------------------

type Check = (String, String, oneshot::Sender<Result<(), String>>);

/// A client that stays connected while a test attacks the server, answering heartbeats, and
/// that must keep getting its answers.
#[derive(Debug)]
pub struct Bystander {
    commands: mpsc::Sender<Check>,
    socketio: bool,
}

static BYSTANDER_SEQ: AtomicU64 = AtomicU64::new(0);

impl Bystander {
    /// An Engine.IO WebSocket client of the echo server on `/engine.io/`.
    pub async fn engine(addr: SocketAddr) -> Bystander {
        let (ws, _) = ws_open(addr, ENGINE_PATH).await;
        Self::run(ws, false).await
    }

    /// A Socket.IO client connected to `/` over WebSocket on `/socket.io/`.
    pub async fn socketio(addr: SocketAddr) -> Bystander {
        let (mut ws, _) = ws_open(addr, SOCKETIO_PATH).await;
        ws_send(&mut ws, "40").await;
        let connected = ws_recv_app_text(&mut ws).await;
        assert!(connected.starts_with("40{\"sid\":"), "{connected}");
        assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["auth",{}]"#);
        Self::run(ws, true).await
    }

    async fn run(mut ws: Ws, socketio: bool) -> Bystander {
        let (tx, mut rx) = mpsc::channel::<Check>(4);
        tokio::spawn(async move {
            let mut pending: Option<(String, oneshot::Sender<Result<(), String>>)> = None;
            let mut unexpected = Vec::new();
            loop {
                tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                            if ws.send(Message::text("3")).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Text(t))) => {
                            match pending.take() {
                                Some((want, reply)) if t.as_str() == want => {
                                    let _ = reply.send(Ok(()));
                                }
                                other => {
                                    unexpected.push(t.as_str().to_owned());
                                    pending = other;
                                }
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Err(_)) | Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(other)) => unexpected.push(format!("{other:?}")),
                    },
                    cmd = rx.recv() => match cmd {
                        Some((send, want, reply)) => {
                            if let Err(e) = ws.send(Message::text(send)).await {
                                let _ = reply.send(Err(format!("send failed: {e}")));
                                break;
                            }
                            pending = Some((want, reply));
                        }
                        None => return,
                    },
                }
            }
            let why = format!("the bystander's connection ended (also received {unexpected:?})");
            if let Some((_, reply)) = pending.take() {
                let _ = reply.send(Err(why.clone()));
            }
            while let Some((_, _, reply)) = rx.recv().await {
                let _ = reply.send(Err(why.clone()));
            }
        });
        Bystander {
            commands: tx,
            socketio,
        }
    }

    /// Sends a message and asserts that its echo comes back within [`STEP`].
    pub async fn check(&self) {
        let n = BYSTANDER_SEQ.fetch_add(1, Ordering::Relaxed);
        let (send, want) = if self.socketio {
            (
                format!(r#"42["message","bystander {n}"]"#),
                format!(r#"42["message-back","bystander {n}"]"#),
            )
        } else {
            (format!("4bystander {n}"), format!("4bystander {n}"))
        };
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((send, want, tx))
            .await
            .expect("the bystander task is running");
        match tokio::time::timeout(STEP, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("bystander: {e}"),
            Ok(Err(_)) => panic!("bystander: the task ended"),
            Err(_) => panic!("bystander: no echo within {STEP:?}"),
        }
    }
}

/// Asserts that new clients can still use the server: an Engine.IO polling session echoes a
/// message, and a Socket.IO client connects to `/` over WebSocket.
pub async fn assert_new_clients_work(addr: SocketAddr) {
    let polling = Polling::open(addr, ENGINE_PATH).await;
    polling.post_ok(b"4fresh").await;
    assert_eq!(polling.get_answering_pings().await, vec!["4fresh"]);
    let (mut ws, _) = ws_open(addr, SOCKETIO_PATH).await;
    ws_send(&mut ws, "40").await;
    let connected = ws_recv_app_text(&mut ws).await;
    assert!(
        connected.starts_with("40{\"sid\":"),
        "a new Socket.IO client connects: {connected}"
    );
    let _ = ws.close(None).await;
}

/// Runs `attack` against an Engine.IO echo server on `/engine.io/` watched by an Engine.IO
/// bystander, then checks the bystander still gets its echoes and a new polling client works.
pub async fn with_engine_bystander<F, Fut>(addr: SocketAddr, attack: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let engine = Bystander::engine(addr).await;
    engine.check().await;
    attack().await;
    engine.check().await;
    let polling = Polling::open(addr, ENGINE_PATH).await;
    polling.post_ok(b"4fresh").await;
    assert_eq!(polling.get_answering_pings().await, vec!["4fresh"]);
}

/// Runs `attack` against a server watched by an Engine.IO bystander and a Socket.IO bystander,
/// then checks both still get their answers and that new clients can connect.
pub async fn with_bystanders<F, Fut>(addr: SocketAddr, attack: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let engine = Bystander::engine(addr).await;
    let socketio = Bystander::socketio(addr).await;
    engine.check().await;
    socketio.check().await;
    attack().await;
    engine.check().await;
    socketio.check().await;
    assert_new_clients_work(addr).await;
}

// ---------------------------------------------------------------------------------------------
// Servers with settings of the test's choosing
// ---------------------------------------------------------------------------------------------

/// The Engine.IO echo server of [`spawn_engine_echo`].
pub type EchoServer =
    std::sync::Arc<socketio_server::engineio::EngineIo<socketio_server::conformance::Echo>>;

/// Starts the Engine.IO echo application (the conformance server's `/engine.io/` handler) with
/// these settings on 127.0.0.1, other paths answered 404, and returns its address.
pub async fn spawn_engine_echo(
    config: socketio_server::engineio::EngineConfig,
    http: socketio_server::server::HttpConfig,
) -> SocketAddr {
    spawn_engine_echo_server(config, http).await.0
}

/// [`spawn_engine_echo`] with a heartbeat of 10 s, which keeps out of the way of a test's slow
/// writes or long backlog.
pub async fn spawn_quiet_engine_echo() -> SocketAddr {
    let config = socketio_server::engineio::EngineConfig {
        ping_interval: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    spawn_engine_echo(config, Default::default()).await
}

/// Like [`spawn_engine_echo`], also returning the server (for its session count).
pub async fn spawn_engine_echo_server(
    config: socketio_server::engineio::EngineConfig,
    http: socketio_server::server::HttpConfig,
) -> (SocketAddr, EchoServer) {
    use socketio_server::engineio::EngineIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let engine = EngineIo::new(config, socketio_server::conformance::Echo);
    let server = engine.clone();
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let engine = engine.clone();
        async move {
            if engine.matches(&req) {
                engine.handle(req).await
            } else {
                socketio_server::socketio::server::not_found()
            }
        }
    };
    tokio::spawn(socketio_server::server::serve(
        listener,
        http,
        handler,
        std::future::pending(),
    ));
    (addr, server)
}

/// The answer to a GET from [`Polling::spawn_get`] (panics if there is none within [`STEP`]).
pub async fn released(pending: tokio::task::JoinHandle<HttpResponse>) -> HttpResponse {
    tokio::time::timeout(STEP, pending)
        .await
        .expect("the pending GET is answered")
        .expect("the GET task")
}
