//! Client transports: a WebSocket (direct, or reached by upgrading a polling session) and
//! HTTP long-polling over two hand-driven HTTP/1.1 keep-alive connections.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::proto::{self, Eio, Sio};

/// Where to connect and from which local addresses.
#[derive(Clone, Debug)]
pub struct Target {
    /// The servers: client `idx` goes to `addrs[idx % len]` (several nodes of one cluster).
    pub addrs: Vec<SocketAddr>,
    /// Engine.IO path, with trailing slash.
    pub path: String,
    /// How many loopback source addresses (127.0.0.2 upwards) to spread clients over.
    pub sources: u8,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Time any single handshake step may take.
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(STEP, f).await {
        Ok(r) => r,
        Err(_) => Err(err(format!("timeout: {what}"))),
    }
}

impl Target {
    /// The node client `idx` talks to.
    pub fn addr(&self, idx: usize) -> SocketAddr {
        self.addrs[idx % self.addrs.len()]
    }

    /// A TCP connection from source address number `idx` (round robin over the sources).
    pub async fn tcp(&self, idx: usize) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        // Ports of earlier runs still in TIME_WAIT may be taken again.
        socket.set_reuseaddr(true)?;
        if self.sources > 0 {
            let last = 2 + (idx % usize::from(self.sources)) as u8;
            socket.bind(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(127, 0, 0, last),
                0,
            )))?;
        }
        let stream = socket.connect(self.addr(idx)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn query(&self, transport: &str, sid: Option<&str>) -> String {
        match sid {
            Some(sid) => format!("{}?EIO=4&transport={transport}&sid={sid}", self.path),
            None => format!("{}?EIO=4&transport={transport}", self.path),
        }
    }
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: thousands of idle clients should cost the generator little memory.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// One packet received, whatever the transport.
pub enum Incoming {
    /// From a WebSocket text message.
    Ws(Utf8Bytes),
    /// From a polling payload.
    Poll(String),
}

impl Incoming {
    pub fn as_str(&self) -> &str {
        match self {
            Incoming::Ws(t) => t.as_str(),
            Incoming::Poll(s) => s.as_str(),
        }
    }
}

/// An open Engine.IO connection.
pub enum Conn {
    Ws(Box<WebSocketStream<TcpStream>>),
    Poll(Polling),
}

impl Conn {
    /// The next packet; `None` when the connection is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Incoming> {
        match self {
            Conn::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Text(t)) => return Some(Incoming::Ws(t)),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            },
            Conn::Poll(p) => p.rx.recv().await.map(Incoming::Poll),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, text: String) -> io::Result<()> {
        match self {
            Conn::Ws(ws) => ws.send(Message::text(text)).await.map_err(io::Error::other),
            Conn::Poll(p) => p.post(&[text]).await,
        }
    }

    /// Sends several packets with as few writes as the transport allows.
    pub async fn send_many(&mut self, texts: Vec<String>) -> io::Result<()> {
        match self {
            Conn::Ws(ws) => {
                for t in texts {
                    ws.feed(Message::text(t)).await.map_err(io::Error::other)?;
                }
                ws.flush().await.map_err(io::Error::other)
            }
            Conn::Poll(p) => p.post(&texts).await,
        }
    }

    /// Closes politely (best effort, bounded).
    pub async fn close(&mut self) {
        match self {
            Conn::Ws(ws) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            }
            Conn::Poll(p) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), p.post(&["1".to_owned()])).await;
                p.reader.abort();
            }
        }
    }
}

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    /// A WebSocket straight away (`transport=websocket`).
    WebSocket,
    /// A polling handshake, the namespace CONNECT over polling, then the upgrade to WebSocket,
    /// as browsers do.
    Upgrade,
    /// Long-polling only.
    Polling,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "ws" | "websocket" => Some(Transport::WebSocket),
            "upgrade" => Some(Transport::Upgrade),
            "polling" => Some(Transport::Polling),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Upgrade => "upgrade",
            Transport::Polling => "polling",
        }
    }
}

/// Opens a connection and joins the main namespace with `auth`. Returns the connection and
/// the server's ping interval.
pub async fn open(
    target: &Target,
    idx: usize,
    transport: Transport,
    auth: Option<&serde_json::Value>,
) -> io::Result<(Conn, u64)> {
    match transport {
        Transport::WebSocket => {
            let tcp = within("tcp connect", target.tcp(idx)).await?;
            let url = format!("ws://{}{}", target.addr(idx), target.query("websocket", None));
            let (ws, _) = within("websocket handshake", async {
                tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
                    .await
                    .map_err(io::Error::other)
            })
            .await?;
            let mut conn = Conn::Ws(Box::new(ws));
            let open = within("open packet", async {
                let first = conn.recv().await.ok_or_else(|| err("closed before open"))?;
                match proto::eio(first.as_str()) {
                    Eio::Open(json) => Ok(json.to_owned()),
                    _ => Err(err(format!("expected open, got {:?}", first.as_str()))),
                }
            })
            .await?;
            let interval = proto::ping_interval_ms(&open).unwrap_or(25_000);
            conn.send(proto::connect_packet(auth)).await?;
            within("namespace connect", wait_connect(&mut conn)).await?;
            Ok((conn, interval))
        }
        Transport::Upgrade => {
            let tcp = within("tcp connect", target.tcp(idx)).await?;
            let mut http = Http::new(tcp, target.addr(idx));
            let (sid, interval) = within("polling handshake", handshake(&mut http, target)).await?;
            let q = target.query("polling", Some(&sid));
            within("polling connect", async {
                http.request("POST", &q, proto::connect_packet(auth).as_bytes())
                    .await?;
                // The CONNECT reply comes on the next GET.
                loop {
                    let body = http.request("GET", &q, b"").await?;
                    for p in split_payload(&body) {
                        if let Eio::Message(m) = proto::eio(p) {
                            match proto::sio(m) {
                                Sio::Connect => return Ok(()),
                                Sio::ConnectError(e) => {
                                    return Err(err(format!("connect refused: {e}")));
                                }
                                _ => {}
                            }
                        }
                    }
                }
            })
            .await?;
            let tcp = within("tcp connect", target.tcp(idx)).await?;
            let url = format!(
                "ws://{}{}",
                target.addr(idx),
                target.query("websocket", Some(&sid))
            );
            let (ws, _) = within("websocket handshake", async {
                tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
                    .await
                    .map_err(io::Error::other)
            })
            .await?;
            drop(http);
            let mut conn = Conn::Ws(Box::new(ws));
            conn.send("2probe".to_owned()).await?;
            within("upgrade probe", async {
                loop {
                    let m = conn
                        .recv()
                        .await
                        .ok_or_else(|| err("closed during probe"))?;
                    if let Eio::Pong("probe") = proto::eio(m.as_str()) {
                        return Ok(());
                    }
                }
            })
            .await?;
            conn.send("5".to_owned()).await?;
            Ok((conn, interval))
        }
        Transport::Polling => {
            let tcp = within("tcp connect", target.tcp(idx)).await?;
            let mut get = Http::new(tcp, target.addr(idx));
            let (sid, interval) = within("polling handshake", handshake(&mut get, target)).await?;
            let tcp = within("tcp connect", target.tcp(idx)).await?;
            let post = Http::new(tcp, target.addr(idx));
            let q = target.query("polling", Some(&sid));
            let (tx, rx) = mpsc::channel(256);
            let reader = tokio::spawn(poll_loop(get, q.clone(), tx));
            let mut conn = Conn::Poll(Polling {
                post,
                query: q,
                rx,
                reader,
            });
            conn.send(proto::connect_packet(auth)).await?;
            within("namespace connect", wait_connect(&mut conn)).await?;
            Ok((conn, interval))
        }
    }
}

async fn wait_connect(conn: &mut Conn) -> io::Result<()> {
    loop {
        let m = conn
            .recv()
            .await
            .ok_or_else(|| err("closed before namespace connect"))?;
        match proto::eio(m.as_str()) {
            Eio::Message(s) => match proto::sio(s) {
                Sio::Connect => return Ok(()),
                Sio::ConnectError(e) => return Err(err(format!("connect refused: {e}"))),
                _ => {}
            },
            Eio::Ping => conn.send("3".to_owned()).await?,
            Eio::Close => return Err(err("closed before namespace connect")),
            _ => {}
        }
    }
}

async fn handshake(http: &mut Http, target: &Target) -> io::Result<(String, u64)> {
    let body = http
        .request("GET", &target.query("polling", None), b"")
        .await?;
    let first = split_payload(&body)
        .next()
        .ok_or_else(|| err("empty handshake"))?;
    let Eio::Open(json) = proto::eio(first) else {
        return Err(err(format!("expected open, got {first:?}")));
    };
    let sid = proto::session_id(json).ok_or_else(|| err("no sid in handshake"))?;
    Ok((sid, proto::ping_interval_ms(json).unwrap_or(25_000)))
}

fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split('\u{1e}').filter(|p| !p.is_empty())
}

/// A long-polling session: GETs run on their own task and connection, POSTs on another.
pub struct Polling {
    post: Http,
    query: String,
    rx: mpsc::Receiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Polling {
    async fn post(&mut self, packets: &[String]) -> io::Result<()> {
        let body = packets.join("\u{1e}");
        let reply = self
            .post
            .request("POST", &self.query, body.as_bytes())
            .await?;
        if reply != "ok" {
            return Err(err(format!("POST answered {reply:?}")));
        }
        Ok(())
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn poll_loop(mut http: Http, query: String, tx: mpsc::Sender<String>) {
    loop {
        let Ok(body) = http.request("GET", &query, b"").await else {
            return;
        };
        for p in split_payload(&body) {
            let close = p == "1";
            if tx.send(p.to_owned()).await.is_err() || close {
                return;
            }
        }
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection: one request at a time,
/// `Content-Length` or chunked bodies.
pub struct Http {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Http {
    pub fn new(stream: TcpStream, addr: SocketAddr) -> Http {
        Http {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Sends a request and returns the body of a 200 answer as text.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<String> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if method == "POST" {
            req.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;

        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| err("response head not UTF-8"))?
            .to_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| err("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let n = length.unwrap_or(0);
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect()
        };
        let text = String::from_utf8(body).map_err(|_| err("body not UTF-8"))?;
        if status != 200 {
            return Err(err(format!("HTTP {status}: {text}")));
        }
        Ok(text)
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(err("connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap_or("");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| err("bad chunk size"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
