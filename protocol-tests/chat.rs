//! The chat application end to end, over real sockets, against `chat-protocol.md` and section G
//! of `robustness.md`.
//!
//! Every test starts the real chat in-process on `127.0.0.1:0`, served exactly as the
//! `chat-server` binary serves it (`allowed_origins` + `allow_same_origin`, `Chat::install`,
//! `serve_with` with `web::route` as the fallback, which closes the server when the shutdown
//! future resolves). The clients are written here: a minimal Socket.IO client over a raw WebSocket, and
//! one over HTTP long-polling on a plain `TcpStream`. Both answer Engine.IO pings in a background
//! task and hand every other packet, in wire order, to the test as a [`Frame`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketio_server::chat::config::ChatConfig;
use socketio_server::chat::{Chat, web};
use socketio_server::socketio::SocketIoBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for a frame it expects.
const WAIT: Duration = Duration::from_secs(3);
/// How long a test listens to be sure nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(250);

const MISSING: &str = "No room or name provided";
const NOT_ALNUM: &str = "Name and room may only contain letters and digits";
const TOO_LONG: &str = "Name and room must be at most 20 characters";
const ALREADY: &str = "user already exists";
const TAKEN: &str = "Name is already taken in this room";
const TOO_MANY_LOGINS: &str = "Too many logins, slow down";

// ---- the server -----------------------------------------------------------------------------

/// The chat, served in-process the way `src/bin/chat-server.rs` serves it (same builder).
struct Server {
    addr: SocketAddr,
    chat: Arc<Chat>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
}

async fn start(config: ChatConfig) -> Server {
    start_with(config, |b| b).await
}

async fn start_with(
    config: ChatConfig,
    tune: impl FnOnce(SocketIoBuilder) -> SocketIoBuilder,
) -> Server {
    let io = tune(config.server_builder()).build();
    let chat = Chat::install(&io, config);
    let site = web::Site::new(io.clone(), chat.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(async move {
        io.serve_with(listener, shutdown, move |req| {
            let site = site.clone();
            async move { site.respond(&req) }
        })
        .await;
    });
    Server {
        addr,
        chat,
        stop: Some(stop),
        served: Some(served),
    }
}

impl Server {
    fn users(&self) -> usize {
        self.chat.user_count()
    }

    fn logins(&self) -> u64 {
        self.chat.stats().logins.load(Ordering::Relaxed)
    }

    fn relayed(&self) -> u64 {
        self.chat.stats().messages.load(Ordering::Relaxed)
    }

    fn dropped_invalid(&self) -> u64 {
        self.chat.stats().dropped_invalid.load(Ordering::Relaxed)
    }

    fn flood_disconnects(&self) -> u64 {
        self.chat.stats().disconnected_rate.load(Ordering::Relaxed)
    }

    fn dropped_rate(&self) -> u64 {
        self.chat.stats().dropped_rate.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until the user store holds `n` users.
    async fn wait_users(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.users() != n {
            assert!(
                Instant::now() < deadline,
                "the user store holds {} users, expected {n}",
                self.users()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ws(&self, label: &str) -> Client {
        Client::ws(self.addr, label).await
    }

    /// A (juan) and B (bob) logged in to `r1` over WebSocket, A told of B.
    async fn juan_and_bob(&self) -> (Client, Client) {
        self.pair_in("r1", ("A", "juan"), ("B", "bob")).await
    }

    /// Two clients, each `(label, name)`, logged in to an empty `room` over WebSocket, the
    /// first told of the second.
    async fn pair_in(
        &self,
        room: &str,
        (label1, name1): (&str, &str),
        (label2, name2): (&str, &str),
    ) -> (Client, Client) {
        let mut first = self.ws(label1).await;
        let mut second = self.ws(label2).await;
        first.login(name1, room, &[]).await;
        let u1 = first.user(name1, room);
        second.login(name2, room, std::slice::from_ref(&u1)).await;
        first.expect(entered(name2)).await;
        first.expect(users(&[u1, second.user(name2, room)])).await;
        (first, second)
    }

    async fn polling(&self, label: &str) -> Client {
        Client::polling(self.addr, label).await
    }
}

// ---- frames ---------------------------------------------------------------------------------

/// One thing a client saw, in wire order. Engine.IO pings are answered and not shown.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// Socket.IO CONNECT (`40{...}`).
    Connect(Value),
    /// Socket.IO DISCONNECT (`41`).
    Disconnect,
    /// Socket.IO EVENT without an ack id (`42["name",args...]`): the name and the arguments.
    Event(String, Vec<Value>),
    /// Socket.IO ACK (`43<id>[args...]`).
    Ack(u64, Vec<Value>),
    /// Engine.IO CLOSE (`1`).
    EngineClose,
    /// The transport ended (WebSocket closed, TCP closed, or a poll refused).
    Closed,
    /// Anything else, verbatim.
    Other(String),
}

fn event(name: &str, arg: Value) -> Frame {
    Frame::Event(name.to_owned(), vec![arg])
}

fn entered(name: &str) -> Frame {
    event(
        "notification",
        json!({"title": "Someone's here", "description": format!("{name} just entered the room")}),
    )
}

fn left(name: &str) -> Frame {
    event(
        "notification",
        json!({"title": "Someone just left", "description": format!("{name} just left the room")}),
    )
}

fn users(list: &[Value]) -> Frame {
    event("users", Value::Array(list.to_vec()))
}

fn said(message: &str, from: &str) -> Frame {
    event("roomMessage", json!({"message": message, "from": from}))
}

/// Parses one Engine.IO packet (`None` for noop and pong).
fn parse_engine(packet: &str) -> Option<Frame> {
    match packet {
        "1" => return Some(Frame::EngineClose),
        "3" | "6" => return None,
        _ => {}
    }
    let Some(sio) = packet.strip_prefix('4') else {
        return Some(Frame::Other(packet.to_owned()));
    };
    let other = || Some(Frame::Other(packet.to_owned()));
    let mut chars = sio.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('0') => serde_json::from_str(rest).map(Frame::Connect).ok(),
        Some('1') if rest.is_empty() => Some(Frame::Disconnect),
        Some('2') => match serde_json::from_str::<Value>(rest) {
            Ok(Value::Array(mut items)) if items.first().is_some_and(Value::is_string) => {
                let name = items.remove(0);
                Some(Frame::Event(
                    name.as_str().unwrap_or_default().to_owned(),
                    items,
                ))
            }
            _ => other(),
        },
        Some('3') => {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (id, args) = rest.split_at(digits);
            match (id.parse::<u64>(), serde_json::from_str::<Value>(args)) {
                (Ok(id), Ok(Value::Array(args))) => Some(Frame::Ack(id, args)),
                _ => other(),
            }
        }
        _ => other(),
    }
}

// ---- raw HTTP/1.1 ---------------------------------------------------------------------------

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &str,
    limit: Duration,
) -> std::io::Result<HttpResponse> {
    http_with(addr, method, target, &[], body, limit).await
}

/// [`http`] with more request headers.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: &str,
    limit: Duration,
) -> std::io::Result<HttpResponse> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP exchange"))??;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body);
    } else if let Some(len) = resp.header("content-length").and_then(|v| v.parse().ok()) {
        resp.body.truncate(len);
    }
    Ok(resp)
}

async fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    http(addr, "GET", target, "", WAIT)
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

// ---- the Socket.IO clients ------------------------------------------------------------------

type Ws = WebSocketStream<TcpStream>;
type WsSink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// A polling session: every POST goes through `lock`, so two never overlap.
struct Polling {
    addr: SocketAddr,
    sid: String,
    lock: Mutex<()>,
}

impl Polling {
    fn target(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn post(&self, payload: &str) -> std::io::Result<HttpResponse> {
        let _guard = self.lock.lock().await;
        http(self.addr, "POST", &self.target(), payload, WAIT).await
    }
}

enum Out {
    Ws(WsSink),
    Polling(Arc<Polling>),
}

/// A Socket.IO client connected to `/`.
struct Client {
    label: String,
    /// The Socket.IO socket id from the CONNECT reply.
    id: String,
    /// The Engine.IO session id from the handshake.
    engine_sid: String,
    out: Out,
    frames: mpsc::UnboundedReceiver<Frame>,
    reader: JoinHandle<()>,
    next_ack: u64,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn ws_reader(
    mut stream: SplitStream<Ws>,
    sink: WsSink,
    frames: mpsc::UnboundedSender<Frame>,
) {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(text)) if text.as_str() == "2" => {
                let _ = sink.lock().await.send(Message::text("3")).await;
            }
            Ok(Message::Text(text)) => {
                if let Some(frame) = parse_engine(text.as_str()) {
                    let _ = frames.send(frame);
                }
            }
            Ok(Message::Binary(b)) => {
                let _ = frames.send(Frame::Other(format!("binary {b:?}")));
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = frames.send(Frame::Closed);
}

async fn polling_reader(polling: Arc<Polling>, frames: mpsc::UnboundedSender<Frame>) {
    loop {
        let resp = match http(
            polling.addr,
            "GET",
            &polling.target(),
            "",
            Duration::from_secs(60),
        )
        .await
        {
            Ok(resp) => resp,
            Err(_) => break,
        };
        if resp.status != 200 {
            let _ = frames.send(Frame::Other(format!(
                "poll answered {}: {}",
                resp.status,
                resp.text()
            )));
            break;
        }
        for packet in resp.text().split('\u{1e}') {
            if packet == "2" {
                let _ = polling.post("3").await;
                continue;
            }
            if let Some(frame) = parse_engine(packet) {
                let end = frame == Frame::EngineClose;
                let _ = frames.send(frame);
                if end {
                    return;
                }
            }
        }
    }
    let _ = frames.send(Frame::Closed);
}

impl Client {
    /// Opens a WebSocket-only session and connects to `/`.
    async fn ws(addr: SocketAddr, label: &str) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        // Dropping the client then resets the connection: an abrupt close, no WS close frame.
        tcp.set_zero_linger().expect("linger");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .unwrap_or_else(|e| panic!("{label}: WebSocket handshake: {e}"));
        let (sink, mut stream) = ws.split();
        let open = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{label}: no Engine.IO open packet"));
        let open = match open {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("{label}: expected the open packet, got {other:?}"),
        };
        let handshake: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet"))
            .expect("handshake JSON");
        let engine_sid = handshake["sid"].as_str().expect("sid").to_owned();
        let sink = Arc::new(Mutex::new(sink));
        let (tx, frames) = mpsc::unbounded_channel();
        let reader = tokio::spawn(ws_reader(stream, sink.clone(), tx));
        let mut client = Client {
            label: label.to_owned(),
            id: String::new(),
            engine_sid,
            out: Out::Ws(sink),
            frames,
            reader,
            next_ack: 1,
        };
        client.connect().await;
        client
    }

    /// Opens a polling-only session (raw HTTP/1.1) and connects to `/`.
    async fn polling(addr: SocketAddr, label: &str) -> Client {
        let open = get(addr, "/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(open.status, 200, "{label}: handshake {}", open.text());
        let text = open.text();
        let handshake: Value = serde_json::from_str(text.strip_prefix('0').expect("open packet"))
            .expect("handshake JSON");
        let engine_sid = handshake["sid"].as_str().expect("sid").to_owned();
        let polling = Arc::new(Polling {
            addr,
            sid: engine_sid.clone(),
            lock: Mutex::new(()),
        });
        let (tx, frames) = mpsc::unbounded_channel();
        let reader = tokio::spawn(polling_reader(polling.clone(), tx));
        let mut client = Client {
            label: label.to_owned(),
            id: String::new(),
            engine_sid,
            out: Out::Polling(polling),
            frames,
            reader,
            next_ack: 1,
        };
        client.connect().await;
        client
    }

    async fn connect(&mut self) {
        self.send("0").await;
        match self.next().await {
            Frame::Connect(data) => {
                let keys: Vec<&String> = data.as_object().expect("an object").keys().collect();
                assert_eq!(keys, ["sid"], "{}: the CONNECT reply", self.label);
                self.id = data["sid"].as_str().expect("a string sid").to_owned();
            }
            other => panic!("{}: expected the CONNECT reply, got {other:?}", self.label),
        }
    }

    /// Sends one Socket.IO packet (the Engine.IO `4` is added).
    async fn send(&self, packet: &str) {
        let packet = format!("4{packet}");
        match &self.out {
            Out::Ws(sink) => sink
                .lock()
                .await
                .send(Message::text(packet))
                .await
                .unwrap_or_else(|e| panic!("{}: send: {e}", self.label)),
            Out::Polling(polling) => {
                let resp = polling
                    .post(&packet)
                    .await
                    .unwrap_or_else(|e| panic!("{}: POST: {e}", self.label));
                assert_eq!(
                    (resp.status, resp.text().as_str()),
                    (200, "ok"),
                    "{}: POST {packet:?}",
                    self.label
                );
            }
        }
    }

    /// Emits over WebSocket, as long as the connection takes it: `false` once it is closed.
    async fn try_emit(&self, name: &str, args: &[Value]) -> bool {
        let Out::Ws(sink) = &self.out else {
            panic!("{}: try_emit is for WebSocket clients", self.label);
        };
        let packet = format!("42{}", event_array(name, args));
        sink.lock().await.send(Message::text(packet)).await.is_ok()
    }

    /// Emits `42<array>` where `array` is the raw JSON text of `[name, args...]`.
    async fn emit_raw(&self, array: &str) {
        self.send(&format!("2{array}")).await;
    }

    /// Emits `42<id><array>` and returns the ack id.
    async fn emit_raw_ack(&mut self, array: &str) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("2{id}{array}")).await;
        id
    }

    async fn emit(&self, name: &str, args: &[Value]) {
        self.emit_raw(&event_array(name, args)).await;
    }

    async fn emit_ack(&mut self, name: &str, args: &[Value]) -> u64 {
        self.emit_raw_ack(&event_array(name, args)).await
    }

    /// The next frame; panics when none comes within [`WAIT`].
    async fn next(&mut self) -> Frame {
        match tokio::time::timeout(WAIT, self.frames.recv()).await {
            Ok(frame) => frame.unwrap_or(Frame::Closed),
            Err(_) => panic!("{}: nothing arrived within {WAIT:?}", self.label),
        }
    }

    /// Asserts the next frame is exactly `expected`.
    #[track_caller]
    fn check(&self, got: Frame, expected: &Frame) {
        assert_eq!(&got, expected, "{}: the next frame", self.label);
    }

    async fn expect(&mut self, expected: Frame) {
        let got = self.next().await;
        self.check(got, &expected);
    }

    /// Asserts the next frame is the ack `id` and returns its arguments.
    async fn expect_ack(&mut self, id: u64) -> Vec<Value> {
        match self.next().await {
            Frame::Ack(got, args) if got == id => args,
            other => panic!("{}: expected the ack {id}, got {other:?}", self.label),
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    async fn expect_silence(&mut self) {
        if let Ok(frame) = tokio::time::timeout(QUIET, self.frames.recv()).await {
            panic!(
                "{}: expected nothing, got {:?}",
                self.label,
                frame.unwrap_or(Frame::Closed)
            );
        }
    }

    /// Emits with an ack and returns the ack's arguments, which must be the very next frame.
    async fn call(&mut self, name: &str, args: &[Value]) -> Vec<Value> {
        let id = self.emit_ack(name, args).await;
        self.expect_ack(id).await
    }

    /// Emits the raw `array` with an ack; the ack must be the very next frame.
    async fn call_raw(&mut self, array: &str) -> Vec<Value> {
        let id = self.emit_raw_ack(array).await;
        self.expect_ack(id).await
    }

    /// The user object of this socket.
    fn user(&self, name: &str, room: &str) -> Value {
        json!({"id": self.id, "name": name, "room": room})
    }

    /// Logs in with `payload`, which must succeed as `name` in `room`: the joiner sees `users`
    /// (which must be `members`) and then the ack `{"user": ...}`, nothing in between.
    async fn login_as(&mut self, payload: Value, name: &str, room: &str, members: &[Value]) {
        let id = self.emit_ack("login", std::slice::from_ref(&payload)).await;
        let got = self.next().await;
        self.check(got, &users(members));
        let ack = self.expect_ack(id).await;
        assert_eq!(
            ack,
            [json!({"user": self.user(name, room)})],
            "{}: the login ack for {payload}",
            self.label
        );
    }

    /// Logs in as `name` in `room`; `before` are the room's members before this one joins.
    async fn login(&mut self, name: &str, room: &str, before: &[Value]) {
        let mut members = before.to_vec();
        members.push(self.user(name, room));
        self.login_as(json!({"name": name, "room": room}), name, room, &members)
            .await;
    }

    /// A login that must fail with `error`, and nothing else.
    async fn login_fails(&mut self, payload: Value, error: &str) {
        let ack = self.call("login", std::slice::from_ref(&payload)).await;
        assert_eq!(
            ack,
            [json!({ "error": error })],
            "{}: login with {payload}",
            self.label
        );
    }

    async fn logout(&mut self) {
        let ack = self.call("logout", &[]).await;
        assert_eq!(ack, Vec::<Value>::new(), "{}: the logout ack", self.label);
    }

    /// Waits for the end of the session; every frame before it must satisfy `allowed`.
    async fn expect_end(&mut self, allowed: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let frame = self.next().await;
            match frame {
                Frame::Closed | Frame::EngineClose => return frame,
                ref f if allowed(f) => continue,
                other => panic!("{}: expected the end, got {other:?}", self.label),
            }
        }
    }
}

fn event_array(name: &str, args: &[Value]) -> String {
    let mut items = vec![json!(name)];
    items.extend_from_slice(args);
    Value::Array(items).to_string()
}

/// WebSocket clients until one's socket id is only ASCII letters and digits (so it is a valid
/// room name); returns it. Ids are 20 characters of base64url, so about half qualify.
async fn alnum_client(server: &Server, label: &str) -> Client {
    for _ in 0..64 {
        let client = server.ws(label).await;
        if client.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return client;
        }
    }
    panic!("no alphanumeric socket id in 64 tries");
}

fn small_rate(burst: u32, per_second: f64) -> ChatConfig {
    ChatConfig {
        rate_burst: burst,
        rate_per_second: per_second,
        ..ChatConfig::default()
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_count_what_happened() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("a").await;
    a.login("ann", "r1", &[]).await;
    a.emit("roomMessage", &[json!("hello")]).await;
    a.next().await; // the relayed message
    a.emit("roomMessage", &[json!(5)]).await;
    assert_eq!(
        get(server.addr, "/socket.io/?EIO=4&transport=tobi")
            .await
            .status,
        400
    );

    let health = get(server.addr, "/health").await;
    assert_eq!(health.status, 200);
    let health: Value = serde_json::from_slice(&health.body).expect("health is JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sessions"], 1);
    assert_eq!(health["sockets"], 1);
    assert_eq!(health["users"], 1);
    assert!(health["uptime_seconds"].is_u64());

    let metrics = get(server.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        "socketio_connections{transport=\"websocket\"} 1",
        "socketio_sockets{namespace=\"/\"} 1",
        "socketio_rooms{namespace=\"/\"} 1",
        "socketio_handshake_errors_total{code=\"0\",status=\"400\"} 1",
        "chat_users 1",
        "chat_logins_total 1",
        "chat_messages_total 1",
        "chat_messages_dropped_total{cause=\"invalid\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let packets_in = text
        .lines()
        .find_map(|l| l.strip_prefix("socketio_packets_in_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("packets in");
    assert!(
        packets_in >= 4,
        "connect, login and two messages: {packets_in}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_page_and_bundled_client() {
    let server = start(ChatConfig::default()).await;
    let root = get(server.addr, "/").await;
    assert_eq!(root.status, 200);
    assert_eq!(root.text(), "up and running");
    assert!(
        root.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        root.header("content-type")
    );

    let page = get(server.addr, "/chat").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    let html = page.text();
    assert!(
        html.trim_start()
            .to_ascii_lowercase()
            .starts_with("<!doctype html"),
        "{html:.80}"
    );
    assert!(html.contains("</html>"));
    // Every script and stylesheet the page references is served from the binary.
    let mut assets = 0;
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let start = i + attr.len();
            let end = start + html[start..].find('"').expect("closing quote");
            let url = &html[start..end];
            if url.starts_with("/chat/") {
                let resp = get(server.addr, url).await;
                assert_eq!(resp.status, 200, "{url}");
                assert!(!resp.body.is_empty(), "{url}");
                assets += 1;
            }
        }
    }
    assert!(assets >= 2, "the page references its scripts and styles");
    assert_eq!(get(server.addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn endpoint_star_lets_every_origin_in_without_credentials() {
    const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";
    let from = [("Origin", "http://elsewhere.example:8080")];
    let handshake = async |server: &Server| {
        http_with(server.addr, "GET", HANDSHAKE, &from, "", WAIT)
            .await
            .expect("handshake")
    };
    let listed = start(ChatConfig::default()).await;
    assert_eq!(handshake(&listed).await.status, 403, "not in ENDPOINT");

    let any = start(ChatConfig {
        endpoints: vec!["http://localhost:3000".into(), "*".into()],
        ..ChatConfig::default()
    })
    .await;
    let resp = handshake(&any).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().starts_with("0{"), "{}", resp.text());
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-allow-credentials"), None);
}

// ---- login ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_success_shapes_and_order() {
    let server = start(ChatConfig::default()).await;
    let mut other_room = server.ws("C").await;
    other_room.login("carl", "r2", &[]).await;

    let mut a = server.ws("A").await;
    a.login("juan", "r1", &[]).await;
    a.expect_silence().await;
    assert_eq!(server.users(), 2);

    let mut b = server.ws("B").await;
    let ua = a.user("juan", "r1");
    let ub = b.user("bob", "r1");
    // The joiner: `users` then the ack, and never the notification.
    b.login("bob", "r1", std::slice::from_ref(&ua)).await;
    // The others: the notification, then `users`.
    a.expect(entered("bob")).await;
    a.expect(users(&[ua.clone(), ub.clone()])).await;

    // Join order, not name order.
    let mut d = server.ws("D").await;
    let ud = d.user("ann", "r1");
    d.login("ann", "r1", &[ua.clone(), ub.clone()]).await;
    let all = [ua, ub, ud];
    for c in [&mut a, &mut b] {
        c.expect(entered("ann")).await;
        c.expect(users(&all)).await;
    }
    for c in [&mut a, &mut b, &mut d, &mut other_room] {
        c.expect_silence().await;
    }
    assert_eq!(server.users(), 4);
    assert_eq!(server.logins(), 4);

    // The user id is the Socket.IO socket id, which is not the Engine.IO session id.
    assert_ne!(a.id, a.engine_sid);
    assert_eq!(a.id.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_trims_both_ends_and_ignores_other_keys() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let payload = json!({
        "name": " \t Juan \n", "room": "\u{a0}R1\u{feff}",
        "admin": true, "id": "someone-else", "user": {"name": "root"}
    });
    let me = a.user("Juan", "R1");
    a.login_as(payload, "Juan", "R1", std::slice::from_ref(&me))
        .await;
    // The stored, trimmed name is what the room sees.
    let mut b = server.ws("B").await;
    let ub = b.user("bob", "R1");
    b.login("bob", "R1", std::slice::from_ref(&me)).await;
    a.expect(entered("bob")).await;
    a.expect(users(&[me, ub])).await;
    a.emit("roomMessage", &[json!("hi")]).await;
    a.expect(said("hi", "Juan")).await;
    b.expect(said("hi", "Juan")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_login_payloads_of_every_json_type() {
    let server = start(ChatConfig::default()).await;
    let mut watcher = server.ws("W").await;
    watcher.login("watcher", "r1", &[]).await;
    let mut c = server.ws("C").await;
    // Raw argument lists after the event name, so "no argument at all" is one of them.
    let cases = [
        r#"["login"]"#,
        r#"["login",null]"#,
        r#"["login",5]"#,
        r#"["login",-1.5]"#,
        r#"["login",true]"#,
        r#"["login","juan"]"#,
        r#"["login",[]]"#,
        r#"["login",["juan","r1"]]"#,
        r#"["login",{}]"#,
        r#"["login",{"name":"juan"}]"#,
        r#"["login",{"room":"r1"}]"#,
        r#"["login",{"name":null,"room":"r1"}]"#,
        r#"["login",{"name":"juan","room":null}]"#,
        r#"["login",{"name":5,"room":"r1"}]"#,
        r#"["login",{"name":"juan","room":5}]"#,
        r#"["login",{"name":true,"room":"r1"}]"#,
        r#"["login",{"name":["juan"],"room":"r1"}]"#,
        r#"["login",{"name":{"first":"juan"},"room":"r1"}]"#,
        r#"["login",{"name":"juan","room":{}}]"#,
        r#"["login",{"name":"","room":"r1"}]"#,
        r#"["login",{"name":"juan","room":""}]"#,
        r#"["login",{"name":"","room":""}]"#,
        r#"["login",{"name":"   ","room":"r1"}]"#,
        r#"["login",{"name":"juan","room":" \t\n "}]"#,
        r#"["login",{"name":"\u00a0\ufeff\u3000","room":"r1"}]"#,
        r#"["login",{"Name":"juan","Room":"r1"}]"#,
    ];
    for case in cases {
        let ack = c.call_raw(case).await;
        assert_eq!(ack, [json!({ "error": MISSING })], "{case}");
    }
    c.expect_silence().await;
    watcher.expect_silence().await;
    assert_eq!(server.users(), 1);
    // The socket and the server are fine: the same socket logs in now.
    let w = watcher.user("watcher", "r1");
    c.login("juan", "r1", std::slice::from_ref(&w)).await;
    watcher.expect(entered("juan")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_character_rule() {
    let server = start(ChatConfig::default()).await;
    let mut watcher = server.ws("W").await;
    watcher.login("watcher", "r1", &[]).await;
    let mut c = server.ws("C").await;
    let names = [
        "juan c",
        "juan-c",
        "juan_c",
        "juan.c",
        "<script>alert(1)</script>",
        "jüan",
        "日本",
        "ａｂｃ",
        "١٢٣",
        "\u{200b}bob",
        "\u{85}bob",
        "bob\u{85}",
        "\u{180e}bob",
        "bob\u{0}",
        "bob\u{7f}",
        "  bob  c  ",
    ];
    for name in names {
        c.login_fails(json!({"name": name, "room": "r1"}), NOT_ALNUM)
            .await;
        c.login_fails(json!({"name": "juan", "room": name}), NOT_ALNUM)
            .await;
    }
    c.expect_silence().await;
    watcher.expect_silence().await;
    assert_eq!(server.users(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_length_rule() {
    let server = start(ChatConfig::default()).await;
    let mut c = server.ws("C").await;
    let twenty = "a".repeat(20);
    let twenty_one = "b".repeat(21);
    c.login_fails(json!({"name": twenty_one, "room": "r1"}), TOO_LONG)
        .await;
    c.login_fails(json!({"name": "juan", "room": twenty_one}), TOO_LONG)
        .await;
    c.login_fails(json!({"name": "x".repeat(10_000), "room": "r1"}), TOO_LONG)
        .await;
    assert_eq!(server.users(), 0);
    // Exactly 20 is fine, for both; trimming happens before counting.
    let room = "R".repeat(20);
    let me = c.user(&twenty, &room);
    c.login_as(
        json!({"name": format!("  {twenty}\t"), "room": format!(" {room} ")}),
        &twenty,
        &room,
        &[me],
    )
    .await;
    assert_eq!(server.users(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_trims_like_javascript() {
    let server = start(ChatConfig::default()).await;
    let mut c = server.ws("C").await;
    // White space and line terminators for ECMAScript's `trim`, including U+FEFF.
    let accepted = [
        " bob",
        "bob ",
        "  bob  ",
        "\tbob\n",
        "\r\nbob\u{b}\u{c}",
        "\u{a0}bob",
        "\u{feff}bob",
        "bob\u{feff}",
        "\u{1680}bob",
        "\u{2000}bob\u{200a}",
        "\u{2028}bob\u{2029}",
        "\u{202f}bob\u{205f}",
        "\u{3000}bob",
    ];
    for name in accepted {
        let me = c.user("bob", "r1");
        c.login_as(json!({"name": name, "room": "r1"}), "bob", "r1", &[me])
            .await;
        c.logout().await;
    }
    // Not white space for JavaScript (U+0085 is for Rust; U+200B and U+180E are neither).
    for name in ["\u{85}bob", "bob\u{85}", "\u{200b}bob", "\u{180e}bob"] {
        c.login_fails(json!({"name": name, "room": "r1"}), NOT_ALNUM)
            .await;
    }
    assert_eq!(server.users(), 0);
    assert_eq!(server.logins(), accepted.len() as u64);
}

/// Each login sends the room's member list to every member, and so does the logout after it:
/// a client logging in and out in a loop must not flood the room. Beyond its connection's login
/// rate a login is refused and the room hears nothing; logins refused for other reasons tell
/// the room nothing either, and do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_beyond_the_rate_are_refused_and_the_room_hears_nothing() {
    let server = start(ChatConfig {
        login_burst: 3,
        logins_per_second: 0.5,
        ..ChatConfig::default()
    })
    .await;
    let mut m = server.ws("M").await;
    m.login("mia", "r1", &[]).await;
    let um = m.user("mia", "r1");
    let mut e = server.ws("E").await;
    let ue = e.user("eve", "r1");
    for _ in 0..5 {
        e.login_fails(json!({"name": "MIA", "room": "r1"}), TAKEN)
            .await;
    }
    for _ in 0..3 {
        e.login("eve", "r1", std::slice::from_ref(&um)).await;
        m.expect(entered("eve")).await;
        m.expect(users(&[um.clone(), ue.clone()])).await;
        e.logout().await;
        m.expect(left("eve")).await;
        m.expect(users(std::slice::from_ref(&um))).await;
    }
    e.login_fails(json!({"name": "eve", "room": "r1"}), TOO_MANY_LOGINS)
        .await;
    // The rate is the connection's: leaving the namespace and joining it again makes a new
    // socket, held to the same rate.
    e.send("1").await;
    e.connect().await;
    e.login_fails(json!({"name": "eve", "room": "r1"}), TOO_MANY_LOGINS)
        .await;
    m.expect_silence().await;
    assert_eq!(server.users(), 1);
    // One every two seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    e.login("eve", "r1", std::slice::from_ref(&um)).await;
    m.expect(entered("eve")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_login_of_a_socket_is_user_already_exists() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    a.login("juan", "r1", &[]).await;
    let mut r2 = server.ws("R2").await;
    r2.login("zed", "r2", &[]).await;
    for (name, room) in [("juan", "r1"), ("other", "r1"), ("juan", "r2"), ("x", "r3")] {
        a.login_fails(json!({"name": name, "room": room}), ALREADY)
            .await;
    }
    a.expect_silence().await;
    r2.expect_silence().await;
    assert_eq!(server.users(), 2);
    // A is still juan in r1, and only there.
    let mut b = server.ws("B").await;
    let ua = a.user("juan", "r1");
    b.login("bob", "r1", std::slice::from_ref(&ua)).await;
    a.expect(entered("bob")).await;
    a.expect(users(&[ua, b.user("bob", "r1")])).await;
    let mut c = server.ws("C").await;
    let z = r2.user("zed", "r2");
    c.login("x", "r3", &[]).await;
    c.logout().await;
    c.login("juan", "r2", std::slice::from_ref(&z)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_ignore_ascii_case_rooms_do_not() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    a.login("Juan", "r1", &[]).await;
    let mut b = server.ws("B").await;
    for name in ["Juan", "juan", "JUAN", "jUaN", "  juan\t"] {
        b.login_fails(json!({"name": name, "room": "r1"}), TAKEN)
            .await;
    }
    a.expect_silence().await;
    assert_eq!(server.users(), 1);

    // Room names are case-sensitive: `R1` is another room, where the name is free.
    b.login("juan", "R1", &[]).await;
    let mut c = server.ws("C").await;
    c.login("JUAN", "r2", &[]).await;
    a.expect_silence().await;
    assert_eq!(server.users(), 3);

    // Once Juan leaves r1, the name is free there.
    a.logout().await;
    let mut d = server.ws("D").await;
    d.login("jUAN", "r1", &[]).await;
    let mut e = server.ws("E").await;
    let ud = d.user("jUAN", "r1");
    e.login_fails(json!({"name": "juan", "room": "r1"}), TAKEN)
        .await;
    e.login("juan2", "r1", std::slice::from_ref(&ud)).await;
    // A (logged out) can come back under another name, at the end of the join order.
    a.login("Juana", "r1", &[ud.clone(), e.user("juan2", "r1")])
        .await;
    // B in `R1` and C in `r2` heard nothing of the comings and goings in `r1`.
    b.expect_silence().await;
    c.expect_silence().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_named_like_a_socket_id_reaches_nobody() {
    let server = start(ChatConfig::default()).await;
    // A victim that never logs in, and one logged in elsewhere.
    let mut idle = alnum_client(&server, "idle victim").await;
    let mut busy = alnum_client(&server, "busy victim").await;
    busy.login("vic", "r1", &[]).await;

    let mut eve = server.ws("eve").await;
    let room = idle.id.clone();
    eve.login("eve", &room, &[]).await;
    eve.emit("roomMessage", &[json!("hi")]).await;
    eve.expect(said("hi", "eve")).await;
    // The room behaves as an ordinary room for its members.
    let mut mal = server.ws("mal").await;
    let ue = eve.user("eve", &room);
    mal.login("mal", &room, std::slice::from_ref(&ue)).await;
    eve.expect(entered("mal")).await;
    eve.expect(users(&[ue, mal.user("mal", &room)])).await;
    mal.emit("roomMessage", &[json!("psst")]).await;
    eve.expect(said("psst", "mal")).await;
    mal.expect(said("psst", "mal")).await;
    mal.logout().await;
    eve.expect(left("mal")).await;
    eve.expect(users(&[eve.user("eve", &room)])).await;

    // Now the logged-in victim's id.
    eve.logout().await;
    let room = busy.id.clone();
    eve.login("eve", &room, &[]).await;
    eve.emit("roomMessage", &[json!("hello")]).await;
    eve.expect(said("hello", "eve")).await;
    eve.logout().await;

    idle.expect_silence().await;
    busy.expect_silence().await;
    eve.expect_silence().await;
}

// ---- the missing-ack rule -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_logout_ping_without_ack_disconnect() {
    let server = start(ChatConfig::default()).await;
    let mut watcher = server.ws("W").await;
    watcher.login("watcher", "r1", &[]).await;
    let w = watcher.user("watcher", "r1");

    for case in [
        r#"["login",{"name":"juan","room":"r1"}]"#,
        r#"["login",null]"#,
        r#"["login"]"#,
        r#"["logout"]"#,
        r#"["ping"]"#,
    ] {
        let mut c = server.ws(case).await;
        c.emit_raw(case).await;
        c.expect(Frame::Disconnect).await;
        c.expect_silence().await;
        assert_eq!(server.users(), 1, "{case}");
    }
    watcher.expect_silence().await;

    // A logged-in socket that breaks the rule is disconnected, and the room is told.
    for case in [
        r#"["logout"]"#,
        r#"["ping"]"#,
        r#"["login",{"name":"x","room":"r2"}]"#,
    ] {
        let mut c = server.ws(case).await;
        c.login("juan", "r1", std::slice::from_ref(&w)).await;
        watcher.expect(entered("juan")).await;
        watcher
            .expect(users(&[w.clone(), c.user("juan", "r1")]))
            .await;
        c.emit_raw(case).await;
        c.expect(Frame::Disconnect).await;
        watcher.expect(left("juan")).await;
        watcher.expect(users(std::slice::from_ref(&w))).await;
        server.wait_users(1).await;
    }
    watcher.expect_silence().await;
}

// ---- logout and disconnect ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_acks_with_no_arguments_and_tells_the_room() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let mut b = server.ws("B").await;
    let mut c = server.ws("C").await;
    a.login("juan", "r1", &[]).await;
    let ua = a.user("juan", "r1");
    let ub = b.user("bob", "r1");
    b.login("bob", "r1", std::slice::from_ref(&ua)).await;
    a.expect(entered("bob")).await;
    a.expect(users(&[ua.clone(), ub.clone()])).await;

    // The ack is `43<id>[]`; the leaver gets nothing else.
    a.logout().await;
    a.expect_silence().await;
    b.expect(left("juan")).await;
    b.expect(users(std::slice::from_ref(&ub))).await;
    assert_eq!(server.users(), 1);

    // Logged out: a second logout, and a logout of a socket that never logged in, are only acked.
    a.logout().await;
    c.logout().await;
    for x in [&mut a, &mut b, &mut c] {
        x.expect_silence().await;
    }

    // After logout, roomMessage is dropped silently; logging in again joins at the end.
    let relayed = server.relayed();
    a.emit("roomMessage", &[json!("ghost")]).await;
    let _ = a.emit_ack("roomMessage", &[json!("ghost")]).await;
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.relayed(), relayed);
    let ua = a.user("juan", "r1");
    a.login("juan", "r1", std::slice::from_ref(&ub)).await;
    b.expect(entered("juan")).await;
    b.expect(users(&[ub.clone(), ua])).await;

    // The last one out of a room: only the ack.
    b.logout().await;
    a.expect(left("bob")).await;
    a.expect(users(&[a.user("juan", "r1")])).await;
    a.logout().await;
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.users(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_close_of_a_logged_in_client_cleans_up() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let mut b = server.ws("B").await;
    a.login("juan", "r1", &[]).await;
    let ua = a.user("juan", "r1");
    let ub = b.user("bob", "r1");
    b.login("bob", "r1", std::slice::from_ref(&ua)).await;
    a.expect(entered("bob")).await;
    a.expect(users(&[ua, ub.clone()])).await;

    // A socket that never logged in goes away: nobody hears of it.
    let idle = server.ws("idle").await;
    drop(idle);
    b.expect_silence().await;

    // TCP reset, no WebSocket close frame.
    drop(a);
    b.expect(left("juan")).await;
    b.expect(users(std::slice::from_ref(&ub))).await;
    server.wait_users(1).await;

    // The name is free again.
    let mut c = server.ws("C").await;
    let uc = c.user("juan", "r1");
    c.login("juan", "r1", std::slice::from_ref(&ub)).await;
    b.expect(entered("juan")).await;
    b.expect(users(&[ub, uc.clone()])).await;

    drop(b);
    c.expect(left("bob")).await;
    c.expect(users(&[uc])).await;
    drop(c);
    server.wait_users(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_polling_client_is_cleaned_up_by_the_heartbeat() {
    let server = start_with(ChatConfig::default(), |b| {
        b.ping_interval(Duration::from_millis(200))
            .ping_timeout(Duration::from_millis(200))
    })
    .await;
    let mut p = server.polling("P").await;
    let mut w = server.ws("W").await;
    p.login("juan", "r1", &[]).await;
    let up = p.user("juan", "r1");
    w.login("bob", "r1", std::slice::from_ref(&up)).await;
    // Both keep answering pings: nothing happens for a few heartbeats.
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.expect(entered("bob")).await;
    p.expect(users(&[up, w.user("bob", "r1")])).await;
    p.expect_silence().await;
    assert_eq!(server.users(), 2);

    // P stops polling (and answering pings) without a word.
    let gone = Instant::now();
    drop(p);
    w.expect(left("juan")).await;
    w.expect(users(&[w.user("bob", "r1")])).await;
    assert!(
        gone.elapsed() < Duration::from_millis(1500),
        "noticed after {:?}",
        gone.elapsed()
    );
    server.wait_users(1).await;
}

// ---- roomMessage ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_message_reaches_the_whole_room_sender_included() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let mut b = server.ws("B").await;
    let mut c = server.ws("C").await;
    let mut idle = server.ws("idle").await;
    a.login_as(
        json!({"name": " juan ", "room": "r1"}),
        "juan",
        "r1",
        &[a.user("juan", "r1")],
    )
    .await;
    let ua = a.user("juan", "r1");
    b.login("bob", "r1", std::slice::from_ref(&ua)).await;
    a.expect(entered("bob")).await;
    a.expect(users(&[ua, b.user("bob", "r1")])).await;
    c.login("carl", "r2", &[]).await;

    let messages = [
        "U2FsdGVkX1+3N1YcZrQeKQvYx2mW0u1oFZ1sQmB4bVk=",
        "<img src=x onerror=alert(1)>",
        "\"quoted\" \\ back\\slash /slash\n\t\r",
        "héllo 🌍 \u{0} \u{1f} \u{7f} \u{2028} \u{feff}",
        "   padded   ",
        "",
        "42[\"roomMessage\",\"nested\"]",
    ];
    for m in messages {
        a.emit("roomMessage", &[json!(m)]).await;
        a.expect(said(m, "juan")).await;
        b.expect(said(m, "juan")).await;
    }
    b.emit("roomMessage", &[json!("back")]).await;
    a.expect(said("back", "bob")).await;
    b.expect(said("back", "bob")).await;
    for x in [&mut a, &mut b, &mut c, &mut idle] {
        x.expect_silence().await;
    }
    assert_eq!(server.relayed(), messages.len() as u64 + 1);
    assert_eq!(server.dropped_invalid(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_message_before_login_is_dropped_silently() {
    let server = start(ChatConfig::default()).await;
    let mut member = server.ws("M").await;
    member.login("mia", "r1", &[]).await;
    let mut s = server.ws("S").await;
    s.emit("roomMessage", &[json!("hi")]).await;
    let _ = s.emit_ack("roomMessage", &[json!("hi")]).await;
    let _ = s.emit_ack("roomMessage", &[json!(5)]).await;
    s.emit_raw(r#"["roomMessage"]"#).await;
    s.expect_silence().await;
    member.expect_silence().await;
    assert_eq!(server.relayed(), 0);
    // Still connected: ping answers.
    let ack = s.call("ping", &[]).await;
    assert_eq!(ack, [json!(s.id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_message_that_is_not_a_string_is_dropped_and_counted() {
    let server = start(ChatConfig::default()).await;
    let (mut a, mut b) = server.juan_and_bob().await;

    let with_ack = [
        r#"["roomMessage"]"#,
        r#"["roomMessage",null]"#,
        r#"["roomMessage",5]"#,
        r#"["roomMessage",true]"#,
        r#"["roomMessage",["x"]]"#,
        r#"["roomMessage",{"message":"x","from":"admin"}]"#,
        r#"["roomMessage",{}]"#,
    ];
    for case in with_ack {
        let ack = a.call_raw(case).await;
        assert_eq!(ack.len(), 1, "{case}: {ack:?}");
        let obj = ack[0].as_object().expect("an object");
        assert_eq!(obj.len(), 1, "{case}: only `error`: {ack:?}");
        assert!(
            obj["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{case}: {ack:?}"
        );
    }
    // Without an ack: dropped without a word.
    a.emit_raw(r#"["roomMessage",5]"#).await;
    a.emit_raw(r#"["roomMessage",{"message":"x","from":"admin"}]"#)
        .await;
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.dropped_invalid(), with_ack.len() as u64 + 2);
    assert_eq!(server.relayed(), 0);
    assert_eq!(server.dropped_rate(), 0);
    // The socket is still logged in and relaying.
    a.emit("roomMessage", &[json!("ok")]).await;
    a.expect(said("ok", "juan")).await;
    b.expect(said("ok", "juan")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_message_over_the_cap_is_dropped_and_counted() {
    // The default cap, 16 KiB.
    let server = start(ChatConfig::default()).await;
    let (mut a, mut b) = server.juan_and_bob().await;

    let at_cap = "x".repeat(16 * 1024);
    a.emit("roomMessage", &[json!(at_cap)]).await;
    a.expect(said(&at_cap, "juan")).await;
    b.expect(said(&at_cap, "juan")).await;
    let over = "x".repeat(16 * 1024 + 1);
    let ack = a.call("roomMessage", &[json!(over)]).await;
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert!(
        ack[0].as_object().is_some_and(|o| o.len() == 1)
            && ack[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{ack:?}"
    );
    a.emit("roomMessage", &[json!("y".repeat(100_000))]).await;
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.dropped_invalid(), 2);
    assert_eq!(server.relayed(), 1);

    // A configured cap, counted in bytes of UTF-8: four `é` are 8 bytes, five are 10.
    let small = start(ChatConfig {
        max_message_bytes: 8,
        ..ChatConfig::default()
    })
    .await;
    let mut c = small.ws("C").await;
    c.login("carl", "r1", &[]).await;
    c.emit("roomMessage", &[json!("éééé")]).await;
    c.expect(said("éééé", "carl")).await;
    let ack = c.call("roomMessage", &[json!("ééééé")]).await;
    assert!(ack[0]["error"].is_string(), "{ack:?}");
    c.emit("roomMessage", &[json!("123456789")]).await;
    c.expect_silence().await;
    assert_eq!(small.dropped_invalid(), 2);
    assert_eq!(small.relayed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_drops_after_the_burst_and_spares_others() {
    // No refill, so the count is exact.
    let server = start(small_rate(5, 0.0)).await;
    let (mut a, mut b) = server.juan_and_bob().await;
    let (mut c, mut d) = server.pair_in("r2", ("C", "carl"), ("D", "dan")).await;

    for i in 0..8 {
        a.emit("roomMessage", &[json!(format!("m{i}"))]).await;
    }
    for i in 0..5 {
        let m = format!("m{i}");
        a.expect(said(&m, "juan")).await;
        b.expect(said(&m, "juan")).await;
    }
    let ack = a.call("roomMessage", &[json!("one more")]).await;
    assert!(
        ack.len() == 1 && ack[0].as_object().is_some_and(|o| o.len() == 1),
        "{ack:?}"
    );
    assert!(ack[0]["error"].is_string(), "{ack:?}");
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.relayed(), 5);
    assert_eq!(server.dropped_rate(), 4);
    assert_eq!(server.dropped_invalid(), 0);

    // The bucket is per socket: B in the same room, and r2, are unaffected.
    b.emit("roomMessage", &[json!("from bob")]).await;
    a.expect(said("from bob", "bob")).await;
    b.expect(said("from bob", "bob")).await;
    for i in 0..5 {
        c.emit("roomMessage", &[json!(format!("c{i}"))]).await;
    }
    for i in 0..5 {
        let m = format!("c{i}");
        c.expect(said(&m, "carl")).await;
        d.expect(said(&m, "carl")).await;
    }
    for x in [&mut a, &mut b, &mut c, &mut d] {
        x.expect_silence().await;
    }
    assert_eq!(server.relayed(), 11);
    assert_eq!(server.dropped_rate(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_flooding_far_beyond_the_rate_is_disconnected() {
    // A burst of 5 and no refill: after 5 relayed, 25 drops (five bursts) are tolerated, the
    // 26th disconnects.
    let server = start(small_rate(5, 0.0)).await;
    let (mut a, mut b) = server.juan_and_bob().await;
    for i in 0..30 {
        a.emit("roomMessage", &[json!(format!("m{i}"))]).await;
    }
    for i in 0..5 {
        a.expect(said(&format!("m{i}"), "juan")).await;
        b.expect(said(&format!("m{i}"), "juan")).await;
    }
    // Still connected: a ping is answered.
    assert_eq!(a.call("ping", &[]).await, [json!(a.id)]);
    a.emit("roomMessage", &[json!("one too many")]).await;
    a.expect(Frame::Disconnect).await;
    b.expect(left("juan")).await;
    b.expect(users(&[b.user("bob", "r1")])).await;
    assert_eq!(server.relayed(), 5);
    assert_eq!(server.dropped_rate(), 25);
    assert_eq!(server.flood_disconnects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_disconnected_although_the_bucket_refills() {
    // A burst of 5 and 20 a second: 300 messages sent at once drop far more than the 25 drops
    // (plus 20 a second) a socket is allowed.
    let server = start(small_rate(5, 20.0)).await;
    let mut a = server.ws("A").await;
    a.login("juan", "r1", &[]).await;
    flood_until_disconnected(&mut a, 300).await;
    assert_eq!(server.flood_disconnects(), 1);
}

/// Sends up to `count` roomMessages as fast as they go (the disconnect may come while they
/// are being sent), then expects the messages relayed back and a disconnect.
async fn flood_until_disconnected(a: &mut Client, count: usize) {
    for i in 0..count {
        if !a.try_emit("roomMessage", &[json!(format!("m{i}"))]).await {
            break;
        }
    }
    loop {
        match a.next().await {
            Frame::Disconnect => break,
            Frame::Event(name, _) if name == "roomMessage" => {}
            other => panic!("expected messages then a disconnect, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refills_up_to_the_burst() {
    // One token every 250 ms: three messages sent back to back are two relayed, one dropped.
    let server = start(small_rate(2, 4.0)).await;
    let mut a = server.ws("A").await;
    a.login("juan", "r1", &[]).await;
    for round in 0..2 {
        for i in 0..3 {
            a.emit("roomMessage", &[json!(format!("{round}.{i}"))])
                .await;
        }
        a.expect(said(&format!("{round}.0"), "juan")).await;
        a.expect(said(&format!("{round}.1"), "juan")).await;
        a.expect_silence().await;
        // 4 per second for a second is 4 tokens, capped at the burst of 2.
        tokio::time::sleep(Duration::from_millis(750)).await;
    }
    assert_eq!(server.relayed(), 4);
    assert_eq!(server.dropped_rate(), 2);
}

// ---- ping and other events ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_acks_with_the_socket_id() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let ack = a.call("ping", &[]).await;
    assert_eq!(ack, [json!(a.id)]);
    assert_ne!(a.id, a.engine_sid);
    a.login("juan", "r1", &[]).await;
    let ack = a.call("ping", &[]).await;
    assert_eq!(ack, [json!(a.id)]);
    // Unknown events are ignored, with or without an ack id; the socket stays.
    a.emit_raw(r#"["unknownEvent",1]"#).await;
    let _ = a.emit_raw_ack(r#"["unknownEvent"]"#).await;
    a.expect_silence().await;
    let ack = a.call("ping", &[]).await;
    assert_eq!(ack, [json!(a.id)]);
    assert_eq!(server.users(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_id_from_users_does_not_open_a_session() {
    let server = start(ChatConfig::default()).await;
    let (mut a, mut b) = server.juan_and_bob().await;

    // B learned A's id from `users`; it is no session id.
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={}", a.id);
    let unknown = json!({"code": 1, "message": "Session ID unknown"});
    let resp = get(server.addr, &target).await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.body).ok(),
        Some(unknown.clone())
    );
    let resp = http(
        server.addr,
        "POST",
        &target,
        r#"42["roomMessage","x"]"#,
        WAIT,
    )
    .await
    .expect("POST");
    assert_eq!(resp.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.body).ok(),
        Some(unknown)
    );
    a.expect_silence().await;
    b.expect_silence().await;
    let ack = a.call("ping", &[]).await;
    assert_eq!(ack, [json!(a.id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_session() {
    let server = start(ChatConfig {
        max_sessions_per_ip: 2,
        ..ChatConfig::default()
    })
    .await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    for n in 1..=2 {
        let resp = get(server.addr, handshake).await;
        assert_eq!(resp.status, 200, "session {n} of the address");
    }
    let refused = get(server.addr, handshake).await;
    assert_eq!(refused.status, 429, "a third session of the same address");
    assert_eq!(
        serde_json::from_slice::<Value>(&refused.body).ok(),
        Some(json!({"message": "Too many requests"}))
    );
}

// ---- polling --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_over_polling() {
    let server = start(ChatConfig::default()).await;
    let mut p = server.polling("P").await;
    let mut w = server.ws("W").await;
    assert_ne!(p.id, p.engine_sid);
    p.login_fails(json!({"name": "juan c", "room": "r1"}), NOT_ALNUM)
        .await;
    p.login("juan", "r1", &[]).await;
    let up = p.user("juan", "r1");
    let uw = w.user("bob", "r1");
    w.login("bob", "r1", std::slice::from_ref(&up)).await;
    p.expect(entered("bob")).await;
    p.expect(users(&[up.clone(), uw.clone()])).await;
    w.login_fails(json!({"name": "JUAN", "room": "r1"}), ALREADY)
        .await;

    p.emit("roomMessage", &[json!("from polling ✓")]).await;
    p.expect(said("from polling ✓", "juan")).await;
    w.expect(said("from polling ✓", "juan")).await;
    w.emit("roomMessage", &[json!("from ws")]).await;
    p.expect(said("from ws", "bob")).await;
    w.expect(said("from ws", "bob")).await;

    let ack = p.call("ping", &[]).await;
    assert_eq!(ack, [json!(p.id)]);
    p.logout().await;
    w.expect(left("juan")).await;
    w.expect(users(std::slice::from_ref(&uw))).await;
    p.expect_silence().await;
    w.expect_silence().await;
    assert_eq!(server.users(), 1);

    // The missing-ack rule over polling too.
    p.emit_raw(r#"["ping"]"#).await;
    p.expect(Frame::Disconnect).await;
}

// ---- shutdown -------------------------------------------------------------------------------

/// Once nothing is connected, the serve future has nothing to wait for. `HttpConfig`'s grace
/// period (5 s) is for connections still finishing, so a prompt return is well under it.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_disconnects_everyone_and_returns() {
    let mut server = start(ChatConfig::default()).await;
    let (mut a, mut b) = server.juan_and_bob().await;
    let mut p = server.polling("P").await;
    let mut idle = server.ws("idle").await;
    p.login("ann", "r2", &[]).await;
    assert_eq!(server.users(), 3);
    // Let P's next long-poll reach the server: a poll sent after shutdown starts is not accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let _ = server.stop.take().expect("running").send(());
    // Before its own end, a client may hear of the others leaving, and nothing else.
    let leaving = |f: &Frame| {
        matches!(f, Frame::Disconnect)
            || matches!(f, Frame::Event(name, _) if name == "users")
            || *f == left("juan")
            || *f == left("bob")
    };
    for c in [&mut a, &mut b, &mut idle] {
        c.expect_end(leaving).await;
    }
    // The polling client's pending poll is answered with the Engine.IO close packet.
    assert_eq!(p.expect_end(leaving).await, Frame::EngineClose);

    let served = server.served.take().expect("serving");
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the serve future returns within 10 s of the shutdown")
        .expect("the serve task did not panic");
    // The serve future returns once every disconnect handler has run (a client may see its
    // end before its handler has finished on another thread).
    assert_eq!(server.users(), 0);
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "every client was gone at once, yet the serve future returned after {took:?}"
    );
    // No longer accepting.
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_connections_returns_promptly() {
    let mut server = start(ChatConfig::default()).await;
    assert_eq!(get(server.addr, "/").await.text(), "up and running");
    let started = Instant::now();
    let _ = server.stop.take().expect("running").send(());
    tokio::time::timeout(
        Duration::from_secs(10),
        server.served.take().expect("serving"),
    )
    .await
    .expect("the serve future returns within 10 s of the shutdown")
    .expect("the serve task did not panic");
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "no connection was open, yet the serve future returned after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_burst_of_messages_is_relayed_whole() {
    // What a client queued while it was away comes at once when it is back; a program relaying
    // a conversation sends as fast.
    let server = start(ChatConfig::default()).await;
    let (a, mut b) = server.juan_and_bob().await;
    for i in 0..500 {
        a.emit("roomMessage", &[json!(format!("m{i}"))]).await;
    }
    for i in 0..500 {
        b.expect(said(&format!("m{i}"), "juan")).await;
    }
    assert_eq!(server.dropped_rate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_take_from_the_rate_by_the_kib() {
    // 200 messages of 15 KiB at once are 3,000 KiB: the default burst of 1,000 lets 66 through
    // (and what refills while they are sent), and the rest is dropped.
    let server = start(ChatConfig::default()).await;
    let (a, _b) = server.juan_and_bob().await;
    let text = "x".repeat(15 * 1024);
    for _ in 0..200 {
        a.emit("roomMessage", &[json!(text)]).await;
    }
    tokio::time::timeout(WAIT, async {
        while server.relayed() + server.dropped_rate() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every message counted");
    let relayed = server.relayed();
    assert!((66..200).contains(&relayed), "{relayed} relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_thousands_of_messages_a_second_are_a_flood() {
    let server = start(ChatConfig::default()).await;
    let mut a = server.ws("A").await;
    let mut c = server.ws("C").await;
    a.login("juan", "r1", &[]).await;
    c.login("carla", "r2", &[]).await;
    // As fast as they go: 10,000 in a second are far more than the 2,000 a second lets
    // through and the 5,000 drops tolerated on top (a slow machine may send more first).
    flood_until_disconnected(&mut a, 100_000).await;
    assert_eq!(server.flood_disconnects(), 1);
    assert!(server.dropped_rate() > 0);
    // Another room heard nothing of it.
    c.expect_silence().await;
}
