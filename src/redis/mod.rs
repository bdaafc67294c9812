//! Several nodes as one Socket.IO cluster through Redis pub/sub, wire-compatible with npm
//! `@socket.io/redis-adapter`: Rust and Node.js nodes can serve one cluster together.
//!
//! One [`RedisNode`] per process holds three Redis connections, all spoken by hand over a
//! small RESP2 codec (`resp.rs`): one for publishes and one for questions about the cluster,
//! each made again when lost, and a subscriber owned by one task that resubscribes after
//! every reconnection. Each namespace gets a [`RedisAdapter`] from
//! [`RedisNode::adapter_factory`]; rooms stay in memory (every node knows only its own sockets)
//! and what crosses nodes goes through the node's channels ([`wire`] has the format).
//!
//! Nothing here waits on Redis while holding up a client: publishes go through a bounded queue
//! to the publisher task. While Redis cannot be reached (a restart, a failover), the publisher
//! holds them, in order, for up to [`RedisConfig::publish_patience`] each, and sends them once
//! Redis and the other nodes' subscribers are back, so a short outage delays messages rather
//! than losing them; a Redis that answers slowly (a long command) is waited for as long. A
//! publish that cannot be made in that time (or queued: the queue is full) is counted in
//! [`RedisStats::publish_failed`] and logged once per outage. Publishes whose connection broke
//! before Redis answered are sent again, as Node's ioredis does (so another node may, rarely,
//! get one twice); ones that Redis did not answer in time are not (a slow Redis may still carry
//! them out). While Redis is away the node keeps serving its own clients; requests to other
//! nodes fail fast, on their own connection, whatever the publishes wait for.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use socketio_server::redis::{RedisConfig, RedisNode};
//! use socketio_server::socketio::SocketIo;
//!
//! let node = RedisNode::connect("redis://127.0.0.1:6379/", RedisConfig::default()).await?;
//! let io = SocketIo::builder().adapter(node.adapter_factory()).build();
//! io.of("/").on_connect(|socket| socket.join("everyone"));
//! // io.to("everyone").emit(...) now reaches the sockets of every node.
//! # Ok(()) }
//! ```

mod address;
mod commands;
mod connection;
mod resp;
#[cfg(feature = "redis-tls")]
mod tls;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::id::Id;
use crate::socketio::adapter::{
    Adapter, AdapterFuture, BroadcastOptions, ClusterError, FetchedSockets, LocalAdapter,
    RemoteAck, RoomListener, SocketInfo,
};
use crate::socketio::namespace::ServerAck;
use crate::socketio::packet::{Packet, json_len};
use crate::socketio::{AckResponse, BroadcastOperator, Namespace};
use address::Address;
pub use address::AddressError;
use commands::{CallError, Commands};
pub use connection::ConnectionError;
use connection::{Backoff, CONNECT_TIMEOUT, Connection, Dialer, Incoming};
pub use resp::RespError;
use resp::{Frame, Limits, Push};
use wire::{Channels, Message, RequestType};

/// Settings of a node's link to Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Channel prefix, the same on every node (Node's `key`; default `socket.io`).
    pub key: String,
    /// How long a request to other nodes waits for their answers (default 5 s, as in Node).
    pub requests_timeout: Duration,
    /// Answer another node's request on that node's own response channel rather than on the
    /// shared one, which every node reads (Node's `publishOnSpecificResponseChannel`: it is
    /// the answering node's setting, so set it on every node). This node always listens on
    /// both.
    pub specific_response_channel: bool,
    /// Publishes that may wait for the publisher (default 65,536); beyond, they fail.
    pub publish_queue: usize,
    /// Bytes those publishes may hold (default 64 MiB); beyond, they fail.
    pub publish_queue_bytes: usize,
    /// How long a publish may wait for Redis (default 10 s): while Redis cannot be reached,
    /// counted from when the publish was made until Redis is back (one that waited longer is
    /// dropped and counted), and how long Redis may take to answer a batch of them. A restart
    /// or a failover shorter than this delays messages to other nodes instead of losing them.
    pub publish_patience: Duration,
    /// The largest message from other nodes this node reads (default 64 MiB); a larger one is
    /// skipped as it arrives and counted in [`RedisStats::malformed`].
    pub max_message_bytes: usize,
    /// How long the subscriber connection may stay silent before Redis is pinged; a ping not
    /// answered within as long again ends the connection, which is then made again (default
    /// 15 s). A Redis that stopped answering is found this way, not only one that hung up.
    pub ping_interval: Duration,
    /// For `rediss://`: a PEM file of the certificate authorities that Redis's certificate must
    /// chain to, instead of the system's (default none: the system's, which `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` replace).
    pub tls_ca_file: Option<PathBuf>,
    /// For `rediss://`: the PEM files of this node's certificate (chain) and private key,
    /// shown to a Redis that asks clients for one (Redis's default, `tls-auth-clients yes`);
    /// default none.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            key: wire::DEFAULT_KEY.to_owned(),
            requests_timeout: Duration::from_secs(5),
            specific_response_channel: false,
            publish_queue: 65_536,
            publish_queue_bytes: 64 << 20,
            publish_patience: Duration::from_secs(10),
            max_message_bytes: 64 << 20,
            ping_interval: Duration::from_secs(15),
            tls_ca_file: None,
            tls_client_cert: None,
        }
    }
}

/// What went through Redis, for metrics.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Messages published.
    pub published: AtomicU64,
    /// Messages that could not be published (queue full, Redis away): lost, and counted here.
    pub publish_failed: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// Messages from other nodes that could not be read.
    pub malformed: AtomicU64,
    /// Times the subscriber connection was made again after a loss.
    pub reconnects: AtomicU64,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not name a Redis server this node can reach.
    #[error("redis URL: {0}")]
    Address(#[from] AddressError),
    /// The first connection failed.
    #[error("redis: {0}")]
    Connection(#[from] ConnectionError),
}

impl RedisError {
    /// Whether nothing could be reached at the address (nothing listens there yet, no route
    /// to it, no such socket file), as opposed to something there that refused this node or
    /// does not speak as expected (a wrong password, TLS on one side only, a certificate not
    /// trusted): worth trying again later. A Redis that does not answer in time is not told
    /// from TLS spoken to a plain port, and counts as the latter.
    pub fn is_unreachable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            RedisError::Connection(ConnectionError::Io(e)) => matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NotFound
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::TimedOut
            ),
            RedisError::Connection(ConnectionError::Down) => true,
            _ => false,
        }
    }
}

/// This process's link to the cluster; cheap to clone.
#[derive(Clone)]
pub struct RedisNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode")
            .field("uid", &self.inner.uid)
            .finish_non_exhaustive()
    }
}

struct NodeInner {
    uid: String,
    config: RedisConfig,
    dialer: Dialer,
    /// Questions about the cluster.
    commands: Commands,
    /// Publishes, which may wait for a slow Redis where questions must not.
    publishes: Commands,
    outbox: mpsc::Sender<Outgoing>,
    outbox_bytes: AtomicUsize,
    /// A full queue was logged; logged again only once the queue has been emptied.
    queue_full_told: AtomicBool,
    namespaces: Mutex<HashMap<String, Arc<NsLink>>>,
    /// Wakes the subscriber when a namespace was added or removed.
    namespaces_changed: Notify,
    /// Bumped whenever `namespaces` changes, so that the subscriber looks at it only then.
    namespaces_generation: AtomicU64,
    subscribed: AtomicBool,
    stats: RedisStats,
    shutdown: watch::Sender<bool>,
}

/// One namespace's side of the node.
struct NsLink {
    channels: Channels,
    namespace: OnceLock<Weak<Namespace>>,
    rooms: Arc<LocalAdapter>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A request of this node waiting for answers.
enum Pending {
    /// Answers to a fetch, a server-side emit, ...: each body goes to the requester.
    Answers(mpsc::Sender<wire::Body>),
    /// Client counts and acknowledgements of a broadcast.
    Acks(mpsc::Sender<RemoteAck>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisNode {
    /// Connects to Redis at `url` and starts the node's tasks. The URL is
    /// `redis://[user[:password]@]host[:port][/db]`, or `redis+unix:///path?user=..&pass=..`
    /// for a Unix socket; `rediss://` for TLS (with the `redis-tls` feature, which the chat
    /// server's build has).
    pub async fn connect(url: &str, config: RedisConfig) -> Result<RedisNode, RedisError> {
        let address: Address = url.parse()?;
        // The TLS setup reads certificate files (the system's authorities may be hundreds):
        // blocking reads, kept off the runtime's threads.
        let ca_file = config.tls_ca_file.clone();
        let client = config.tls_client_cert.clone();
        let dialer = tokio::task::spawn_blocking(move || {
            let client = client
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            Dialer::new(address, ca_file.as_deref(), client)
        })
        .await
        .map_err(|e| ConnectionError::Tls(format!("the TLS setup did not finish: {e}")))??;
        let commands = Commands::open(dialer.clone()).await?;
        let publishes = Commands::open(dialer.clone()).await?;
        let (outbox, outbox_rx) = mpsc::channel(config.publish_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(NodeInner {
            uid: Id::random().to_string(),
            config,
            dialer,
            commands,
            publishes,
            outbox,
            outbox_bytes: AtomicUsize::new(0),
            queue_full_told: AtomicBool::new(false),
            namespaces: Mutex::new(HashMap::new()),
            namespaces_changed: Notify::new(),
            namespaces_generation: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            stats: RedisStats::default(),
            shutdown,
        });
        tokio::spawn(publisher(inner.clone(), outbox_rx));
        tokio::spawn(subscriber(inner.clone()));
        Ok(RedisNode { inner })
    }

    /// What [`SocketIoBuilder::adapter`](crate::socketio::SocketIoBuilder::adapter) takes:
    /// a [`RedisAdapter`] for every namespace.
    pub fn adapter_factory(&self) -> impl Fn(&str) -> Box<dyn Adapter> + Send + Sync + 'static {
        let node = self.inner.clone();
        move |nsp: &str| Box::new(RedisAdapter::new(node.clone(), nsp)) as Box<dyn Adapter>
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }

    /// The counters.
    pub fn stats(&self) -> &RedisStats {
        &self.inner.stats
    }

    /// Whether the subscriber connection is up (other nodes' messages are arriving).
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
    }

    /// Appends the Redis counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::socketio::metrics::family;
        let s = &self.inner.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            out,
            "redis_published_total",
            "counter",
            "Messages published to other nodes.",
            &[("", load(&s.published))],
        );
        family(
            out,
            "redis_publish_failed_total",
            "counter",
            "Messages that could not be published (lost).",
            &[("", load(&s.publish_failed))],
        );
        family(
            out,
            "redis_received_total",
            "counter",
            "Messages received from Redis.",
            &[("", load(&s.received))],
        );
        family(
            out,
            "redis_malformed_total",
            "counter",
            "Messages from other nodes that could not be read.",
            &[("", load(&s.malformed))],
        );
        family(
            out,
            "redis_reconnects_total",
            "counter",
            "Subscriber reconnections.",
            &[("", load(&s.reconnects))],
        );
        family(
            out,
            "redis_subscribed",
            "gauge",
            "Whether the subscriber connection is up.",
            &[("", u64::from(self.is_subscribed()))],
        );
    }

    /// Stops the node's tasks; its subscriptions end with the connection, so other nodes stop
    /// counting it.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }
}

/// Bytes of handshakes a fetch answer carries at most. Redis disconnects a subscriber whose
/// unread pub/sub messages pass 8 MiB for a minute or 32 MiB at once (its default
/// `client-output-buffer-limit`), and every node subscribes to the answers: one answer that
/// large would cut the whole cluster off. Headers and auth are bounded per socket (16 KiB each
/// by default) but not per room.
const FETCH_HANDSHAKE_BUDGET: usize = 4 << 20;

/// The sockets of a fetch answer, with their handshakes' headers, query, auth and the URL's
/// query string left out when all of them together would be larger than
/// [`FETCH_HANDSHAKE_BUDGET`]. Ids, rooms and data (what applications look at across nodes)
/// always go.
fn within_answer_budget(mut sockets: Vec<SocketInfo>) -> Vec<SocketInfo> {
    let bytes: usize = sockets.iter().map(|s| json_len(&s.handshake)).sum();
    if bytes <= FETCH_HANDSHAKE_BUDGET {
        return sockets;
    }
    tracing::warn!(
        sockets = sockets.len(),
        bytes,
        "fetch answer too large for one message: handshakes sent without headers, query, auth and the URL's query"
    );
    for socket in &mut sockets {
        if let Value::Object(handshake) = &mut socket.handshake {
            for key in ["headers", "query", "auth"] {
                if let Some(field) = handshake.get_mut(key) {
                    *field = json!({});
                }
            }
            // The URL's query string is as long as the client made it.
            if let Some(Value::String(url)) = handshake.get_mut("url") {
                if let Some(query) = url.find('?') {
                    url.truncate(query);
                }
            }
        }
    }
    sockets
}

impl NodeInner {
    /// A namespace came or left: the subscriber looks at the table again.
    fn namespaces_updated(&self) {
        self.namespaces_generation.fetch_add(1, Ordering::AcqRel);
        self.namespaces_changed.notify_one();
    }

    /// Queues a publish; never waits. A publish that cannot be queued is lost and counted.
    fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        let size = channel.len() + payload.len();
        let queued = self.outbox_bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size <= self.config.publish_queue_bytes {
            let outgoing = Outgoing {
                channel,
                payload,
                queued_at: Instant::now(),
            };
            if self.outbox.try_send(outgoing).is_ok() {
                return true;
            }
        }
        self.outbox_bytes.fetch_sub(size, Ordering::AcqRel);
        self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
        if !self.queue_full_told.swap(true, Ordering::Relaxed) {
            tracing::warn!("redis publish queue full: messages to other nodes are dropped");
        }
        false
    }

    /// Subscribers of a namespace's request channel: the nodes serving it.
    async fn server_count(&self, channels: &Channels) -> Result<usize, ClusterError> {
        let request = channels.request.as_bytes();
        // `[channel, count]`
        self.ask_redis(&[b"PUBSUB", b"NUMSUB", request], |reply| match reply {
            Frame::Array(Some(items)) => match items.get(1) {
                Some(&Frame::Integer(n)) => usize::try_from(n).ok(),
                _ => None,
            },
            _ => None,
        })
        .await
    }

    /// Every node listens on its own answer channel (`key-response#nsp#uid#`, Node's nodes
    /// too), so the channels Redis has for that pattern name the live nodes.
    async fn node_ids(&self, channels: &Channels) -> Result<Vec<String>, ClusterError> {
        let pattern = format!("{}*#", glob_escape(&channels.response));
        let found = self
            .ask_redis(&[b"PUBSUB", b"CHANNELS", pattern.as_bytes()], |reply| {
                let Frame::Array(Some(items)) = reply else {
                    return None;
                };
                let names = items.iter().filter_map(|item| match item {
                    Frame::Bulk(Some(name)) => std::str::from_utf8(name).ok(),
                    _ => None,
                });
                Some(names.map(str::to_owned).collect::<Vec<String>>())
            })
            .await?;
        let mut ids: Vec<String> = found
            .iter()
            .filter_map(|c| c.strip_prefix(channels.response.as_str()))
            .filter_map(|rest| rest.strip_suffix('#'))
            .filter(|uid| !uid.is_empty())
            .map(str::to_owned)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Sends Redis one command; `read` makes the answer out of its reply (`None`: not the
    /// reply that command has).
    async fn ask_redis<T>(
        &self,
        args: &[&[u8]],
        read: impl FnMut(Frame<'_>) -> Option<T>,
    ) -> Result<T, ClusterError> {
        let mut command = Vec::new();
        resp::command(&mut command, args);
        let replies = self
            .commands
            .call(&command, 1, commands::RESPONSE_TIMEOUT, read)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        replies.into_iter().next().flatten().ok_or_else(|| {
            let words: Vec<_> = args
                .iter()
                .take(2)
                .map(|a| String::from_utf8_lossy(a))
                .collect();
            ClusterError::Unavailable(format!("unexpected reply to {}", words.join(" ")))
        })
    }
}

/// A socket another node described; a room of its that is a number (Node's rooms may be)
/// reads as its decimal text, rather than the socket being dropped.
fn socket_info(value: &Value) -> Option<SocketInfo> {
    let mut value = value.clone();
    if let Some(rooms) = value.get_mut("rooms").and_then(Value::as_array_mut) {
        for room in rooms.iter_mut() {
            if room.is_number() {
                *room = wire::room_name(room).map_or(Value::Null, Value::String);
            }
        }
    }
    serde_json::from_value(value).ok()
}

/// Escapes Redis glob characters.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A publish waiting for the publisher.
struct Outgoing {
    channel: String,
    payload: Vec<u8>,
    queued_at: Instant,
}

impl Outgoing {
    /// What it counts for in the queue's bytes.
    fn size(&self) -> usize {
        self.channel.len() + self.payload.len()
    }
}

/// Sends queued publishes, as many per round trip as are waiting, in the order they came.
async fn publisher(node: Arc<NodeInner>, mut rx: mpsc::Receiver<Outgoing>) {
    const BATCH: usize = 512;
    let patience = node.config.publish_patience;
    let mut shutdown = node.shutdown.subscribe();
    let mut batch = Vec::with_capacity(BATCH);
    let mut commands = Vec::new();
    // Publishes lost since the last that went through, while they are being lost.
    let mut losing: Option<u64> = None;
    // Redis could not be reached (or the connection broke): what is held waits for the
    // cluster to be back.
    let mut cut_off = false;
    // When Redis was last found back: a publish queued before then waited for it until then.
    let mut back_at: Option<Instant> = None;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = shutdown.changed() => return,
        };
        if n == 0 {
            return;
        }
        // Counted in the queue's bytes until it is sent or given up, held or not.
        let bytes: usize = batch.iter().map(Outgoing::size).sum();
        let sent = loop {
            // Those that waited for Redis longer than their patience go; the rest keep their
            // order. Waiting for a Redis that answers (a backlog on a slow link) is not that.
            let now = Instant::now();
            let before = batch.len();
            batch.retain(|o| {
                let until = if cut_off {
                    now
                } else {
                    back_at.unwrap_or(o.queued_at)
                };
                until.saturating_duration_since(o.queued_at) < patience
            });
            let expired = before - batch.len();
            if expired > 0 {
                let why = "redis was away for longer than publish_patience";
                node.lost_publishes(&mut losing, expired, &why);
            }
            if batch.is_empty() {
                break Ok(Vec::new());
            }
            if cut_off {
                if node.publishes.connect().await.is_err() {
                    if !pause(PUBLISH_RETRY, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
                // Redis is back for this node. The other nodes' subscribers come back on the
                // same schedule of attempts, at most `Backoff::MAX` apart: what was held waits
                // that long, or it would reach only the nodes that happened to be back first.
                cut_off = false;
                back_at = Some(Instant::now());
                if !pause(RESUBSCRIBE_WAIT, &mut shutdown).await {
                    return;
                }
            }
            commands.clear();
            for o in &batch {
                resp::command(
                    &mut commands,
                    &[b"PUBLISH", o.channel.as_bytes(), &o.payload],
                );
            }
            // Each reply is the number of subscribers reached, or an error for that one message.
            let call = node
                .publishes
                .call(&commands, batch.len(), patience, |frame| {
                    !matches!(frame, Frame::Error(_))
                });
            match call.await {
                Ok(replies) => break Ok(replies),
                // Nothing went out; or the connection broke before Redis answered (Redis went
                // away: a connection it left is not always found out before it is written to),
                // and as Node's ioredis does, what was not answered is sent again. Either way,
                // try again in a moment, on a new connection.
                Err(
                    CallError::Unreachable(_)
                    | CallError::Failed(ConnectionError::Closed | ConnectionError::Io(_)),
                ) => {
                    cut_off = true;
                    if commands.capacity() > KEEP_COMMANDS_CAPACITY {
                        commands = Vec::new();
                    }
                    if !pause(PUBLISH_RETRY, &mut shutdown).await {
                        return;
                    }
                }
                Err(e) => break Err(e),
            }
        };
        node.outbox_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let n = batch.len();
        batch.clear();
        if commands.capacity() > KEEP_COMMANDS_CAPACITY {
            commands = Vec::new();
        }
        match sent {
            Ok(replies) => {
                let ok = replies.iter().filter(|&&ok| ok).count();
                node.stats.published.fetch_add(ok as u64, Ordering::Relaxed);
                if ok < n {
                    node.stats
                        .publish_failed
                        .fetch_add((n - ok) as u64, Ordering::Relaxed);
                    tracing::warn!(refused = n - ok, "redis refused publishes; messages lost");
                }
                if ok > 0 {
                    if let Some(lost) = losing.take() {
                        tracing::info!(lost, "redis publishes go through again");
                    }
                    if rx.is_empty() {
                        node.queue_full_told.store(false, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => node.lost_publishes(&mut losing, n, &e),
        }
    }
}

/// Waits `wait`, unless the node shuts down first (then `false`).
async fn pause(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.changed() => false,
    }
}

/// How often the publisher tries again while Redis cannot be reached (each try is one look at
/// when the command connection may next be made).
const PUBLISH_RETRY: Duration = Duration::from_millis(50);

/// How long publishes held through an outage wait once Redis is back, for the other nodes'
/// subscribers to be back too: their attempts are at most `Backoff::MAX` apart, and one may
/// take a moment.
const RESUBSCRIBE_WAIT: Duration = Backoff::MAX.saturating_add(Duration::from_millis(500));

impl NodeInner {
    /// Counts publishes lost; the first loss since they last went through is logged.
    fn lost_publishes(&self, losing: &mut Option<u64>, n: usize, why: &dyn std::fmt::Display) {
        self.stats
            .publish_failed
            .fetch_add(n as u64, Ordering::Relaxed);
        match losing {
            Some(lost) => *lost += n as u64,
            None => {
                tracing::warn!(
                    error = %why,
                    messages = n,
                    "redis publish failed; messages to other nodes are lost until it answers again"
                );
                *losing = Some(n as u64);
            }
        }
    }
}

/// A publish buffer larger than this is let go after use, so one burst of large messages does
/// not keep its capacity for the life of the node.
const KEEP_COMMANDS_CAPACITY: usize = 1 << 20;

/// Owns the subscriber connection: subscribes every namespace, hands on messages, and after a
/// loss connects and subscribes again (with backoff) until the node shuts down.
async fn subscriber(node: Arc<NodeInner>) {
    let mut shutdown = node.shutdown.subscribe();
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let opened = tokio::select! {
            c = Connection::open(
                &node.dialer,
                Limits::subscriber(node.config.max_message_bytes),
                CONNECT_TIMEOUT,
            ) => c,
            _ = shutdown.changed() => return,
        };
        match opened {
            Ok(conn) => {
                let ended = node
                    .listen(conn, &mut shutdown, &mut first, &mut backoff)
                    .await;
                node.subscribed.store(false, Ordering::Release);
                match ended {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "redis subscriber connection lost; reconnecting");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "redis subscriber cannot connect; retrying"),
        }
        if !pause(backoff.next(), &mut shutdown).await {
            return;
        }
    }
}

/// The commands that subscribe to a namespace's channels (four confirmations follow), or
/// unsubscribe from them.
fn subscriptions(c: &Channels, subscribe: bool) -> Vec<u8> {
    let (pattern, channels): (&[u8], &[u8]) = if subscribe {
        (b"PSUBSCRIBE", b"SUBSCRIBE")
    } else {
        (b"PUNSUBSCRIBE", b"UNSUBSCRIBE")
    };
    let mut commands = Vec::new();
    resp::command(&mut commands, &[pattern, c.broadcast_pattern.as_bytes()]);
    resp::command(
        &mut commands,
        &[
            channels,
            c.request.as_bytes(),
            c.response.as_bytes(),
            c.own_response.as_bytes(),
        ],
    );
    commands
}

impl NodeInner {
    /// Serves one subscriber connection until it fails (an error) or the node shuts down.
    async fn listen(
        self: &Arc<Self>,
        mut conn: Connection,
        shutdown: &mut watch::Receiver<bool>,
        first: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), ConnectionError> {
        // The namespaces subscribed on this connection, as of the table's generation `synced`.
        let mut done: HashMap<String, Arc<NsLink>> = HashMap::new();
        let mut synced = None;
        // Subscriptions sent and not yet confirmed: the node counts as subscribed at zero.
        let mut unconfirmed = 0usize;
        let mut announced = false;
        let mut health = tokio::time::interval(self.config.ping_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.reset();
        let (mut heard, mut pinged) = (false, false);
        loop {
            // The namespaces that came or left since the last look: with thousands of them,
            // a look at every wake-up would cost more than the messages.
            let generation = self.namespaces_generation.load(Ordering::Acquire);
            if synced != Some(generation) {
                synced = Some(generation);
                let (gone, todo) = {
                    let namespaces = lock(&self.namespaces);
                    let gone: Vec<String> = done
                        .keys()
                        .filter(|name| !namespaces.contains_key(*name))
                        .cloned()
                        .collect();
                    let todo: Vec<(String, Arc<NsLink>)> = namespaces
                        .iter()
                        .filter(|(name, _)| !done.contains_key(*name))
                        .map(|(name, link)| (name.clone(), link.clone()))
                        .collect();
                    (gone, todo)
                };
                for name in gone {
                    if let Some(link) = done.remove(&name) {
                        conn.send(&subscriptions(&link.channels, false)).await?;
                    }
                }
                for (name, link) in todo {
                    conn.send(&subscriptions(&link.channels, true)).await?;
                    unconfirmed += 4;
                    done.insert(name, link);
                }
            }
            if !announced && unconfirmed == 0 {
                announced = true;
                backoff.reset();
                self.subscribed.store(true, Ordering::Release);
                if !*first {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("redis subscriber connected again, subscriptions restored");
                }
                *first = false;
            }
            tokio::select! {
                read = conn.read_more() => {
                    read?;
                    (heard, pinged) = (true, false);
                    conn.drain(|incoming| {
                        match incoming {
                            Incoming::Push(Push::Message { pattern, channel, payload }) => {
                                match std::str::from_utf8(channel) {
                                    Ok(channel) => self.on_message(pattern, channel, payload),
                                    Err(_) => {
                                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            Incoming::Push(Push::Subscribed) => {
                                unconfirmed = unconfirmed.saturating_sub(1);
                            }
                            Incoming::Push(Push::Error(e)) => {
                                return Err(ConnectionError::Refused(
                                    String::from_utf8_lossy(e).into_owned(),
                                ));
                            }
                            Incoming::Push(Push::Pong | Push::Other) => {}
                            Incoming::Oversized(len) => {
                                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    len,
                                    limit = self.config.max_message_bytes,
                                    "message from redis over max_message_bytes skipped"
                                );
                            }
                        }
                        Ok(())
                    })?;
                }
                _ = self.namespaces_changed.notified() => {}
                _ = health.tick() => {
                    if pinged {
                        return Err(ConnectionError::Unresponsive);
                    }
                    if !heard {
                        let mut ping = Vec::new();
                        resp::command(&mut ping, &[b"PING"]);
                        conn.send(&ping).await?;
                        pinged = true;
                    }
                    heard = false;
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

impl NodeInner {
    /// Routes one message from Redis to its namespace. A broadcast comes by the pattern of
    /// the namespace that subscribed it, and once for each such pattern that matches its
    /// channel (`/a`'s takes `/a#b`'s broadcasts too): it is taken by that namespace's link
    /// only, or by none when it is another's.
    fn on_message(self: &Arc<Self>, pattern: Option<&[u8]>, channel: &str, payload: &[u8]) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        for link in self.links_of(channel) {
            let c = &link.channels;
            let handled = if let Some(pattern) = pattern {
                if pattern != c.broadcast_pattern.as_bytes() {
                    continue;
                }
                if let Some(room) = c.room_of(channel) {
                    self.on_broadcast(&link, room, payload);
                }
                true
            } else if channel == c.request {
                self.on_request(&link, payload);
                true
            } else if channel == c.response || channel == c.own_response {
                self.on_response(&link, payload);
                true
            } else {
                false
            };
            if handled {
                return;
            }
        }
    }

    fn malformed(&self, what: &str, e: &wire::WireError) {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "{what} from another node not understood");
    }

    /// The namespaces a channel may belong to, the longest name first. A channel is
    /// `key#nsp#…`, `key-request#nsp#` or `key-response#nsp#…`, and a namespace's name may
    /// hold `#` itself, so the name ends at one of the `#`s after the key's: a lookup for
    /// each rather than a look at every namespace the node serves.
    fn links_of(&self, channel: &str) -> Vec<Arc<NsLink>> {
        let Some(rest) = channel.strip_prefix(self.config.key.as_str()) else {
            return Vec::new();
        };
        let Some(name) = ["#", "-request#", "-response#"]
            .iter()
            .find_map(|kind| rest.strip_prefix(kind))
        else {
            return Vec::new();
        };
        let namespaces = lock(&self.namespaces);
        name.match_indices('#')
            .rev()
            .filter_map(|(end, _)| namespaces.get(&name[..end]).cloned())
            .collect()
    }

    fn on_broadcast(&self, link: &NsLink, room: &str, payload: &[u8]) {
        let Some(ns) = link.namespace() else { return };
        // A room this node has no member of needs no decoding.
        if !room.is_empty() && !ns.has_room(room) {
            return;
        }
        let message = match wire::decode_broadcast(payload) {
            Ok(m) => m,
            Err(e) => return self.malformed("broadcast", &e),
        };
        // Another namespace's, under a name this one's is a prefix of.
        if message.uid == self.uid || message.packet.nsp != ns.name() {
            return;
        }
        let mut opts = message.opts;
        opts.flags.local = true;
        BroadcastOperator::with_options(ns, opts).send(&message.packet);
    }

    fn on_request(self: &Arc<Self>, link: &NsLink, payload: &[u8]) {
        let request = match wire::decode_message(payload) {
            Ok(m) => m,
            Err(e) => return self.malformed("request", &e),
        };
        // This node applied its own requests already.
        if request.uid.as_deref() == Some(self.uid.as_str()) {
            return;
        }
        let Some(ns) = link.namespace() else { return };
        let Some(kind) = request.kind else { return };
        let body = &request.body.value;
        let opts = || {
            let mut opts = wire::opts_from_value(&body["opts"]);
            opts.flags.local = true;
            BroadcastOperator::with_options(ns.clone(), opts)
        };
        // Room names; a number is one too, as Node's `socket.join(1)` makes it.
        let strings = |key: &str| -> Vec<String> {
            body[key]
                .as_array()
                .map(|a| a.iter().filter_map(wire::room_name).collect())
                .unwrap_or_default()
        };
        let by_sid = || {
            body["sid"]
                .as_str()
                .and_then(Id::parse)
                .and_then(|id| ns.socket(id))
        };
        match kind {
            RequestType::Sockets => {
                let mut local =
                    BroadcastOperator::with_options(ns.clone(), Default::default()).local();
                for room in strings("rooms") {
                    local = local.to(&room);
                }
                let ids: Vec<String> = local.sockets().iter().map(|s| s.id().to_string()).collect();
                self.answer(link, &request, json!({ "sockets": ids }));
            }
            RequestType::AllRooms => {
                // Every socket's own-id room too, as Node's adapter answers.
                let mut rooms = link.rooms.room_names();
                rooms.extend(ns.sockets().iter().map(|s| s.id().to_string()));
                self.answer(link, &request, json!({ "rooms": rooms }));
            }
            RequestType::RemoteJoin | RequestType::RemoteLeave => {
                let join = kind == RequestType::RemoteJoin;
                if body.get("opts").is_some_and(Value::is_object) {
                    let op = opts();
                    for room in strings("rooms") {
                        if join {
                            op.join(&room)
                        } else {
                            op.leave(&room)
                        }
                    }
                } else if let (Some(socket), Some(room)) = (by_sid(), body["room"].as_str()) {
                    if join {
                        socket.join(room)
                    } else {
                        socket.leave(room)
                    }
                    self.answer(link, &request, json!({}));
                }
            }
            RequestType::RemoteDisconnect => {
                let close = body["close"].as_bool().unwrap_or(false);
                if body.get("opts").is_some_and(Value::is_object) {
                    opts().disconnect_with(close);
                } else if let Some(socket) = by_sid() {
                    if close {
                        socket.disconnect_and_close()
                    } else {
                        socket.disconnect()
                    }
                    self.answer(link, &request, json!({}));
                }
            }
            RequestType::RemoteFetch => {
                let sockets: Vec<SocketInfo> = opts().sockets().iter().map(|s| s.info()).collect();
                let sockets = within_answer_budget(sockets);
                self.answer(link, &request, json!({ "sockets": sockets }));
            }
            RequestType::ServerSideEmit => {
                let Some(data) = body["data"].as_array().cloned() else {
                    return;
                };
                let ack = match &request.request_id {
                    Some(id) => {
                        let node = self.clone();
                        let channel = link.channels.response.clone();
                        let id = id.clone();
                        ServerAck::new(move |value| {
                            let answer = json!({ "type": 6, "requestId": id, "data": value });
                            node.publish(channel, wire::encode_json(&answer));
                        })
                    }
                    None => ServerAck::none(),
                };
                ns.dispatch_server_event(data, ack);
            }
            RequestType::Broadcast => self.on_broadcast_with_ack(link, &ns, &request),
            RequestType::BroadcastClientCount | RequestType::BroadcastAck => {}
        }
    }

    /// Another node's broadcast that wants acknowledgements: tell it how many clients got it,
    /// then relay each client's answer (its first argument, as Node's adapter does).
    fn on_broadcast_with_ack(
        self: &Arc<Self>,
        link: &NsLink,
        ns: &Arc<Namespace>,
        request: &Message,
    ) {
        let Some(request_id) = request.request_id.clone() else {
            return;
        };
        let body = &request.body;
        let packet =
            match wire::packet_from_value(body.value["packet"].clone(), body.attachments.clone()) {
                Ok(p) => p,
                Err(e) => return self.malformed("broadcast with ack", &e),
            };
        if packet.nsp != ns.name() {
            return;
        }
        let opts = wire::opts_from_value(&body.value["opts"]);
        let timeout = opts.flags.timeout.unwrap_or(Duration::from_secs(10));
        let mut acks = FuturesUnordered::new();
        let targets = BroadcastOperator::with_options(ns.clone(), opts)
            .local()
            .sockets();
        for socket in targets {
            if let Ok(fut) = socket.send_with_ack(packet.clone(), timeout) {
                acks.push(fut);
            }
        }
        let channel = link.channels.response_to(
            request.uid.as_deref().unwrap_or_default(),
            self.config.specific_response_channel,
        );
        let count = json!({ "type": 8, "requestId": request_id, "clientCount": acks.len() });
        self.publish(channel.clone(), wire::encode_json(&count));
        if acks.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            while let Some(reply) = acks.next().await {
                let Ok(reply) = reply else { continue };
                let first = reply.args.into_iter().next().unwrap_or(Value::Null);
                let answer = json!({ "type": 9, "requestId": request_id, "packet": first });
                node.publish(
                    channel.clone(),
                    wire::encode_msgpack(&answer, &reply.attachments),
                );
            }
        });
    }

    /// Answers a request with `fields` plus its `requestId`.
    fn answer(&self, link: &NsLink, request: &Message, mut fields: Value) {
        let Some(id) = &request.request_id else {
            return;
        };
        fields["requestId"] = Value::String(id.clone());
        let channel = link.channels.response_to(
            request.uid.as_deref().unwrap_or_default(),
            self.config.specific_response_channel,
        );
        self.publish(channel, wire::encode_json(&fields));
    }

    fn on_response(&self, link: &NsLink, payload: &[u8]) {
        let response = match wire::decode_message(payload) {
            Ok(m) => m,
            Err(e) => return self.malformed("answer", &e),
        };
        let Some(id) = &response.request_id else {
            return;
        };
        let pending = lock(&link.pending);
        match pending.get(id) {
            Some(Pending::Acks(tx)) => {
                let event = match response.kind {
                    Some(RequestType::BroadcastClientCount) => {
                        let n = response.body.value["clientCount"].as_u64().unwrap_or(0);
                        RemoteAck::ClientCount(usize::try_from(n).unwrap_or(usize::MAX))
                    }
                    Some(RequestType::BroadcastAck) => RemoteAck::Ack(AckResponse {
                        args: vec![response.body.value["packet"].clone()],
                        attachments: response.body.attachments,
                    }),
                    _ => return,
                };
                let _ = tx.try_send(event);
            }
            Some(Pending::Answers(tx)) => {
                let _ = tx.try_send(response.body);
            }
            None => {}
        }
    }
}

impl NsLink {
    fn namespace(&self) -> Option<Arc<Namespace>> {
        self.namespace.get().and_then(Weak::upgrade)
    }
}

/// The adapter of one namespace on a Redis cluster.
pub struct RedisAdapter {
    node: Arc<NodeInner>,
    link: Arc<NsLink>,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("channels", &self.link.channels)
            .finish_non_exhaustive()
    }
}

impl RedisAdapter {
    fn new(node: Arc<NodeInner>, nsp: &str) -> RedisAdapter {
        let link = Arc::new(NsLink {
            channels: Channels::new(&node.config.key, nsp, &node.uid),
            namespace: OnceLock::new(),
            rooms: Arc::new(LocalAdapter::default()),
            pending: Mutex::new(HashMap::new()),
        });
        RedisAdapter { node, link }
    }

    /// Registers a request and removes it when `ttl` has passed.
    fn register(&self, id: &str, pending: Pending, ttl: Duration) {
        lock(&self.link.pending).insert(id.to_owned(), pending);
        let link = Arc::downgrade(&self.link);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(link) = link.upgrade() {
                lock(&link.pending).remove(&id);
            }
        });
    }

    fn request_json(
        &self,
        kind: RequestType,
        request_id: Option<&str>,
        mut fields: Value,
    ) -> Vec<u8> {
        fields["uid"] = Value::String(self.node.uid.clone());
        fields["type"] = Value::from(kind as u8);
        if let Some(id) = request_id {
            fields["requestId"] = Value::String(id.to_owned());
        }
        wire::encode_json(&fields)
    }

    /// Publishes a request that wants no answer; false when it could not be queued.
    fn tell(&self, kind: RequestType, fields: Value) -> bool {
        let request = self.request_json(kind, None, fields);
        self.node
            .publish(self.link.channels.request.clone(), request)
    }

    /// Publishes a request and gathers one answer per other node, until the timeout.
    fn ask(
        &self,
        kind: RequestType,
        fields: Value,
    ) -> AdapterFuture<Result<Answers, ClusterError>> {
        let node = self.node.clone();
        let link = self.link.clone();
        let id = Id::random().to_string();
        let payload = self.request_json(kind, Some(&id), fields);
        Box::pin(async move {
            let others = node.server_count(&link.channels).await?.saturating_sub(1);
            let mut answers = Answers {
                bodies: Vec::with_capacity(others),
                asked: others,
                missing: 0,
            };
            if others == 0 {
                return Ok(answers);
            }
            let (tx, mut rx) = mpsc::channel(others);
            lock(&link.pending).insert(id.clone(), Pending::Answers(tx));
            let _forget = Forget {
                link: &link,
                id: &id,
            };
            if !node.publish(link.channels.request.clone(), payload) {
                return Err(ClusterError::Unavailable("publish queue full".into()));
            }
            // A node that dies while asked never answers, but it stops being counted: recount
            // now and then, so the wait ends with the live nodes rather than at the timeout.
            // The answers do not say which node sent them, so one that answered and then left
            // cannot be told from one still to answer: every node asked that did not answer
            // counts as missing, and the caller knows the answers may be incomplete.
            let deadline = tokio::time::Instant::now() + node.config.requests_timeout;
            let mut recount = tokio::time::interval(RECOUNT);
            recount.tick().await;
            let mut expected = others;
            while answers.bodies.len() < expected {
                tokio::select! {
                    body = rx.recv() => match body {
                        Some(body) => answers.bodies.push(body),
                        None => break,
                    },
                    _ = recount.tick() => {
                        if let Ok(n) = node.server_count(&link.channels).await {
                            expected = expected.min(n.saturating_sub(1));
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            answers.asked = others.max(answers.bodies.len());
            answers.missing = answers.asked - answers.bodies.len();
            Ok(answers)
        })
    }
}

/// Acknowledgements from other nodes that may wait for a broadcast's caller.
const REMOTE_ACKS_QUEUED: usize = 1 << 16;

/// How often a request waiting for answers recounts the nodes.
const RECOUNT: Duration = Duration::from_millis(250);

/// The answers to one request.
struct Answers {
    bodies: Vec<wire::Body>,
    asked: usize,
    missing: usize,
}

/// Removes a pending request however its wait ends.
struct Forget<'a> {
    link: &'a NsLink,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.link.pending).remove(self.id);
    }
}

impl Adapter for RedisAdapter {
    fn join(&self, socket: Id, room: &str) {
        self.link.rooms.join(socket, room);
    }
    fn leave(&self, socket: Id, room: &str) {
        self.link.rooms.leave(socket, room);
    }
    fn leave_all(&self, socket: Id) {
        self.link.rooms.leave_all(socket);
    }
    fn rooms_of(&self, socket: Id) -> Vec<String> {
        self.link.rooms.rooms_of(socket)
    }
    fn members(&self, room: &str) -> Vec<Id> {
        self.link.rooms.members(room)
    }
    fn room_count(&self) -> usize {
        self.link.rooms.room_count()
    }
    fn room_names(&self) -> Vec<String> {
        self.link.rooms.room_names()
    }
    fn on_room_event(&self, listener: RoomListener) -> bool {
        self.link.rooms.on_room_event(listener)
    }

    fn bind(&self, namespace: Weak<Namespace>) {
        let name = namespace.upgrade().map(|ns| ns.name().to_owned());
        let _ = self.link.namespace.set(namespace);
        if let Some(name) = name {
            lock(&self.node.namespaces).insert(name, self.link.clone());
            self.node.namespaces_updated();
        }
    }

    fn close(&self) {
        lock(&self.node.namespaces).retain(|_, link| !Arc::ptr_eq(link, &self.link));
        self.node.namespaces_updated();
    }

    fn publish(&self, packet: &Packet, opts: &BroadcastOptions) {
        let payload = wire::encode_broadcast(&self.node.uid, packet, opts);
        let channel = self.link.channels.broadcast_channel(&opts.target);
        self.node.publish(channel, payload);
    }

    fn publish_with_ack(
        &self,
        packet: &Packet,
        opts: &BroadcastOptions,
    ) -> Option<mpsc::Receiver<RemoteAck>> {
        let id = Id::random().to_string();
        let mut fields = json!({
            "uid": self.node.uid,
            "requestId": id,
            "type": RequestType::Broadcast as u8,
            "packet": wire::packet_to_value(packet),
            "opts": wire::opts_to_value(opts, true),
        });
        if fields["packet"]["data"].is_null() {
            fields["packet"]["data"] = json!([]);
        }
        // The subscriber hands over a whole read at once: room for the acknowledgements of a
        // broadcast to a large room, which a smaller queue would drop as timeouts. (The
        // queue's memory is taken only as it fills.)
        let (tx, rx) = mpsc::channel(REMOTE_ACKS_QUEUED);
        let ttl = opts.flags.timeout.unwrap_or(Duration::from_secs(10));
        self.register(&id, Pending::Acks(tx), ttl);
        let payload = wire::encode_msgpack(&fields, &packet.attachments);
        self.node
            .publish(self.link.channels.request.clone(), payload);
        Some(rx)
    }

    fn server_count(&self) -> AdapterFuture<Result<usize, ClusterError>> {
        let node = self.node.clone();
        let link = self.link.clone();
        Box::pin(async move { node.server_count(&link.channels).await })
    }

    fn fetch_remote_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> AdapterFuture<Result<FetchedSockets, ClusterError>> {
        let asked = self.ask(
            RequestType::RemoteFetch,
            json!({ "opts": wire::opts_to_value(opts, false) }),
        );
        Box::pin(async move {
            let answers = asked.await?;
            let mut fetched = FetchedSockets {
                sockets: Vec::new(),
                nodes_asked: answers.asked,
                nodes_missing: answers.missing,
            };
            for body in answers.bodies {
                let Some(list) = body.value.get("sockets").and_then(Value::as_array) else {
                    continue;
                };
                fetched.sockets.extend(list.iter().filter_map(socket_info));
            }
            Ok(fetched)
        })
    }

    fn node_id(&self) -> Option<String> {
        Some(self.node.uid.clone())
    }

    fn reconnections(&self) -> u64 {
        self.node.stats.reconnects.load(Ordering::Relaxed)
    }

    fn node_ids(&self) -> AdapterFuture<Result<Vec<String>, ClusterError>> {
        let node = self.node.clone();
        let link = self.link.clone();
        Box::pin(async move { node.node_ids(&link.channels).await })
    }

    fn remote_join(&self, opts: &BroadcastOptions, rooms: &[String]) {
        self.tell(
            RequestType::RemoteJoin,
            json!({ "opts": wire::opts_to_value(opts, false), "rooms": rooms }),
        );
    }

    fn remote_leave(&self, opts: &BroadcastOptions, rooms: &[String]) {
        self.tell(
            RequestType::RemoteLeave,
            json!({ "opts": wire::opts_to_value(opts, false), "rooms": rooms }),
        );
    }

    fn remote_disconnect(&self, opts: &BroadcastOptions, close: bool) {
        self.tell(
            RequestType::RemoteDisconnect,
            json!({ "opts": wire::opts_to_value(opts, false), "close": close }),
        );
    }

    fn server_side_emit(
        &self,
        data: Vec<Value>,
        want_acks: bool,
    ) -> AdapterFuture<Result<Vec<Value>, ClusterError>> {
        if !want_acks {
            let sent = self.tell(RequestType::ServerSideEmit, json!({ "data": data }));
            return Box::pin(async move {
                if sent {
                    Ok(Vec::new())
                } else {
                    Err(ClusterError::Unavailable("publish queue full".into()))
                }
            });
        }
        let asked = self.ask(RequestType::ServerSideEmit, json!({ "data": data }));
        Box::pin(async move {
            let answers = asked.await?;
            if answers.missing > 0 {
                return Err(ClusterError::Timeout {
                    expected: answers.asked,
                    missing: answers.missing,
                });
            }
            Ok(answers
                .bodies
                .into_iter()
                .map(|mut body| body.value["data"].take())
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_in_a_numbered_room_is_read_with_the_room_as_text() {
        let described = json!({"id": "s1", "rooms": ["s1", 1, "r", 2.5], "data": {}});
        let info = socket_info(&described).expect("a socket");
        assert_eq!(info.rooms, ["s1", "1", "r", "2.5"]);
        assert!(socket_info(&json!({"id": "s1", "rooms": [null]})).is_none());
    }

    fn socket(auth_bytes: usize) -> SocketInfo {
        SocketInfo {
            id: "s".to_owned(),
            rooms: vec!["s".to_owned(), "room".to_owned()],
            data: json!({ "user": "u" }),
            handshake: json!({
                "headers": { "user-agent": "x" },
                "query": { "EIO": "4" },
                "auth": { "token": "t".repeat(auth_bytes) },
                "address": "127.0.0.1",
                "url": format!("/socket.io/?EIO=4&transport=websocket&pad={}", "p".repeat(auth_bytes)),
            }),
        }
    }

    #[test]
    fn fetch_answers_keep_handshakes_within_the_budget() {
        let small: Vec<SocketInfo> = (0..100).map(|_| socket(100)).collect();
        assert_eq!(within_answer_budget(small.clone()), small);

        let large: Vec<SocketInfo> = (0..300).map(|_| socket(16 * 1024)).collect();
        let sent = within_answer_budget(large.clone());
        let bytes: usize = sent.iter().map(|s| json_len(&s.handshake)).sum();
        assert!(bytes < FETCH_HANDSHAKE_BUDGET / 10, "{bytes} bytes");
        for (sent, full) in sent.iter().zip(&large) {
            assert_eq!(
                (&sent.id, &sent.rooms, &sent.data),
                (&full.id, &full.rooms, &full.data)
            );
            assert_eq!(sent.handshake["auth"], json!({}));
            assert_eq!(sent.handshake["headers"], json!({}));
            assert_eq!(sent.handshake["address"], full.handshake["address"]);
            assert_eq!(sent.handshake["url"], "/socket.io/");
        }
    }
}
