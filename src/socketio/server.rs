//! The Socket.IO server handle: settings, namespaces, and the HTTP entry points.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;

use super::adapter::{Adapter, AdapterFactory, LocalAdapter};
use super::client::{AttachmentBudget, Client};
use super::error::EmitError;
use super::namespace::{BroadcastOperator, Hold, Lease, Namespace};
use super::packet::DecoderLimits;
use super::recovery::RecoveryConfig;
use crate::engineio::{
    AllowRequest, AllowedOrigins, Body, EngineConfig, EngineIo, ResponseHeaders, Transport,
};
use crate::server::HttpConfig;

/// Socket.IO settings on top of the Engine.IO ones.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// The Engine.IO settings (path `/socket.io/` by default).
    pub engine: EngineConfig,
    /// Time a connection has to join a namespace.
    pub connect_timeout: Duration,
    /// Binary attachments one packet may carry.
    pub max_attachments: usize,
    /// JSON nesting one packet may have, its own array included (at most 127 takes effect:
    /// the JSON parser's own limit).
    pub max_json_depth: usize,
    /// Default time to wait for an acknowledgement of a broadcast.
    pub ack_timeout: Duration,
    /// Acknowledgements one socket may owe at once: an emit that asks for one more fails with
    /// [`EmitError::TooManyPendingAcks`]. A client that never answers cannot make the server
    /// hold an unbounded number of them (and of whatever waits on them).
    pub max_pending_acks: usize,
    /// Bytes of binary attachments the server holds at once, over all connections, for packets
    /// still waiting for more of theirs; a connection whose attachment would pass it is closed.
    /// Each connection may hold `max_attachments` × maxPayload, and a client may stop before
    /// its packet's last attachment for as long as it answers pings: this bounds the sum.
    pub max_buffered_attachment_bytes: usize,
    /// The same, over the connections from one client address (an IPv6 client's /64): without
    /// it one client with a few such connections takes the whole budget, and everybody else's
    /// attachments are refused.
    pub max_buffered_attachment_bytes_per_address: usize,
    /// Bytes of JSON a CONNECT's auth object may take; a larger one is refused with a
    /// `connect_error`. A socket keeps its auth for as long as it lives (its handshake, here and
    /// to the other nodes of a cluster), so this bounds what each socket holds.
    pub max_auth_bytes: usize,
    /// Namespaces one connection may be in at once, CONNECTs still in their middleware
    /// included; one more is refused with a `connect_error`. Only namespaces made on demand
    /// ([`SocketIo::dynamic_namespace`]) let a client name as many as it likes: this bounds
    /// what one connection holds then.
    pub max_namespaces_per_connection: usize,
    /// Namespaces the server holds at once. A CONNECT that would make one more on demand
    /// ([`SocketIo::dynamic_namespace`]) is refused as an unknown namespace is, so that the
    /// names clients send cannot fill the server's memory (every connection may name
    /// `max_namespaces_per_connection` of them, and with connection state recovery a namespace
    /// stays until the sockets it keeps have expired). The program's own
    /// [`SocketIo::of`] is never refused.
    pub max_namespaces: usize,
    /// Connection state recovery (off by default, as in Node): see [`RecoveryConfig`].
    pub connection_state_recovery: Option<RecoveryConfig>,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".to_owned(),
                ..EngineConfig::default()
            },
            connect_timeout: Duration::from_millis(45_000),
            max_attachments: 10,
            max_json_depth: 100,
            ack_timeout: Duration::from_secs(10),
            max_pending_acks: 1024,
            max_buffered_attachment_bytes: 256 * 1024 * 1024,
            max_buffered_attachment_bytes_per_address: 32 * 1024 * 1024,
            max_auth_bytes: 16 * 1024,
            max_namespaces_per_connection: 100,
            max_namespaces: 10_000,
            connection_state_recovery: None,
        }
    }
}

impl SocketIoConfig {
    pub(crate) fn decoder_limits(&self) -> DecoderLimits {
        DecoderLimits {
            max_attachments: self.max_attachments,
            max_depth: self.max_json_depth,
        }
    }
}

type DynamicMatcher = Box<dyn Fn(&str) -> bool + Send + Sync>;
type DynamicSetup = Arc<dyn Fn(&Arc<Namespace>) + Send + Sync>;

thread_local! {
    /// The dynamic namespaces whose `setup` this thread is running, innermost last, each with
    /// the server (its state's address) making it: a setup that looks its own namespace up
    /// finds it, and one that makes another namespace of its server does not wait for the lock
    /// it holds itself.
    static MAKING: RefCell<Vec<(usize, Arc<Namespace>)>> = const { RefCell::new(Vec::new()) };
}

/// Takes a namespace off [`MAKING`] when its setup is over, however it ends; a setup that
/// panicked leaves a namespace that never joins the table, whose adapter is closed.
struct Made {
    ns: Arc<Namespace>,
    done: bool,
}

impl Drop for Made {
    fn drop(&mut self) {
        MAKING.with_borrow_mut(|making| making.pop());
        if !self.done {
            self.ns.adapter().close();
        }
    }
}

/// What every connection shares: the settings and the namespaces.
pub(crate) struct ServerState {
    pub(crate) config: SocketIoConfig,
    /// Bytes of attachments held for incomplete packets, over all connections.
    pub(crate) buffered_attachments: AttachmentBudget,
    adapter: AdapterFactory,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    dynamic: RwLock<Vec<(DynamicMatcher, DynamicSetup)>>,
    /// Held while a namespace is made, so that one name never gets two: a dynamic namespace's
    /// setup runs under it, outside the table's lock, and may look namespaces up.
    making: Mutex<()>,
    /// [`SocketIo::serve`]s running: the io closes when the last of them stops.
    serving: AtomicUsize,
    /// Set once any `serve` has been told to stop.
    stopping: AtomicBool,
}

impl ServerState {
    fn new_namespace(&self, name: &str, lease: Option<Lease>) -> Arc<Namespace> {
        Namespace::new(
            name.to_owned(),
            (self.adapter)(name),
            self.config.ack_timeout,
            self.config.max_pending_acks,
            self.config.connection_state_recovery.clone(),
            lease,
        )
    }

    /// The namespace a CONNECT names, held for it: a static one, or a dynamic one created on
    /// first use. A setup that panics refuses the CONNECT, not the whole connection.
    pub(crate) fn namespace(self: &Arc<Self>, name: &str) -> Option<Hold> {
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.find_or_make(name, Hold::new, self.config.max_namespaces)
        }));
        made.unwrap_or_else(|_| {
            tracing::error!(
                nsp = name,
                "a dynamic namespace's setup panicked; CONNECT refused"
            );
            None
        })
    }

    /// This server's mark in [`MAKING`].
    fn id(&self) -> usize {
        self as *const ServerState as usize
    }

    /// Serializes the making of namespaces; `None` inside a setup of this server's on this
    /// thread, which holds it already.
    fn making(&self) -> Option<MutexGuard<'_, ()>> {
        let nested = MAKING.with_borrow(|making| making.iter().any(|(id, _)| *id == self.id()));
        (!nested).then(|| self.making.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The namespace named `name` whose setup this thread is running for this server.
    fn being_made(&self, name: &str) -> Option<Arc<Namespace>> {
        MAKING.with_borrow(|making| {
            making
                .iter()
                .find(|(id, ns)| *id == self.id() && ns.name() == name)
                .map(|(_, ns)| ns.clone())
        })
    }

    /// Runs `keep` on the namespace named `name` if the table has it, under the table's lock.
    fn keep_found<T>(
        &self,
        name: &str,
        keep: &mut Option<impl FnOnce(&Arc<Namespace>) -> T>,
    ) -> Option<T> {
        let namespaces = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        let ns = namespaces.get(name)?;
        keep.take().map(|keep| keep(ns))
    }

    /// The namespace named `name`, made now (and set up) when it is new, a dynamic matcher
    /// accepts the name and the server holds fewer than `limit` namespaces; `keep` runs while
    /// the table is locked, so that a [`Hold`] it takes is seen by any retirement.
    fn find_or_make<T>(
        self: &Arc<Self>,
        name: &str,
        keep: impl FnOnce(&Arc<Namespace>) -> T,
        limit: usize,
    ) -> Option<T> {
        let mut keep = Some(keep);
        if let Some(kept) = self.keep_found(name, &mut keep) {
            return Some(kept);
        }
        let setup = {
            let dynamic = self.dynamic.read().unwrap_or_else(|e| e.into_inner());
            let (_, setup) = dynamic.iter().find(|(matches, _)| matches(name))?;
            setup.clone()
        };
        let _making = self.making();
        // Another CONNECT may have made it while this one waited.
        if let Some(kept) = self.keep_found(name, &mut keep) {
            return Some(kept);
        }
        if self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            >= limit
        {
            // Debug: a client naming namespaces in a loop would fill the log.
            tracing::debug!(
                nsp = name,
                limit,
                "namespace not made: the server holds as many as it may"
            );
            return None;
        }
        let state = Arc::downgrade(self);
        let lease = Lease::new(
            move |ns| {
                if let Some(state) = state.upgrade() {
                    state.retire(ns);
                }
            },
            tokio::runtime::Handle::try_current().ok(),
        );
        let ns = self.new_namespace(name, Some(lease));
        MAKING.with_borrow_mut(|making| making.push((self.id(), ns.clone())));
        let mut made = Made {
            ns: ns.clone(),
            done: false,
        };
        setup(&ns);
        made.done = true;
        drop(made);
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let kept = namespaces
            .entry(name.to_owned())
            .or_insert_with(|| ns.clone());
        if !Arc::ptr_eq(kept, &ns) {
            // Made meanwhile by what does not take `making` (nothing should): ours is let go.
            ns.adapter().close();
        }
        keep.take().map(|keep| keep(kept))
    }

    /// Takes a dynamic namespace that nothing holds out of the server, and closes its adapter.
    /// One that keeps disconnected sockets for recovery stays until they have expired.
    fn retire(self: &Arc<Self>, ns: &Arc<Namespace>) {
        if let Some(wait) = ns.recovery_pending() {
            if !ns.defer_retirement() {
                return; // a wait is under way already
            }
            if let Some(runtime) = ns.runtime() {
                let state = Arc::downgrade(self);
                let ns = ns.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(wait + Duration::from_millis(1)).await;
                    ns.end_deferral();
                    if let Some(state) = state.upgrade()
                        && !ns.is_held()
                    {
                        state.retire(&ns);
                    }
                });
                return;
            }
            // Nothing to wait on: the namespace stays, for the next socket's leaving.
            ns.end_deferral();
            return;
        }
        {
            let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
            let current = namespaces
                .get(ns.name())
                .is_some_and(|n| Arc::ptr_eq(n, ns));
            // A CONNECT may have taken a hold since the last one was let go, and its socket
            // may have been kept for recovery since (its leaving waits for that, then).
            if !current || ns.is_held() || ns.recovery_pending().is_some() {
                return;
            }
            namespaces.remove(ns.name());
        }
        tracing::debug!(nsp = %ns.name(), "dynamic namespace removed: no socket left");
        ns.adapter().close();
    }
}

/// A Socket.IO server. Cheap to clone; every clone is the same server.
///
/// ```no_run
/// use socketio_server::socketio::SocketIo;
///
/// # async fn run() -> std::io::Result<()> {
/// let io = SocketIo::builder().build();
/// io.of("/").on_connect(|socket| {
///     socket.on("chat", |socket, text: String, _ack| async move {
///         let _ = socket.broadcast().emit("chat", &text);
///     });
/// });
/// let listener = socketio_server::server::bind("127.0.0.1:3000", 1024).await?;
/// io.serve(listener, std::future::pending()).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SocketIo {
    engine: Arc<EngineIo<Client>>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo").finish_non_exhaustive()
    }
}

/// Builds a [`SocketIo`] with every setting.
#[derive(Clone, Default)]
pub struct SocketIoBuilder {
    config: SocketIoConfig,
    adapter: Option<AdapterFactory>,
}

impl std::fmt::Debug for SocketIoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoBuilder")
            .field("config", &self.config)
            .field("adapter", &self.adapter.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl SocketIoBuilder {
    /// The request path (default `/socket.io/`).
    pub fn path(mut self, path: &str) -> Self {
        let mut path = path.trim_end_matches('/').to_owned();
        path.push('/');
        self.config.engine.path = path;
        self
    }
    /// Time between pings (default 25 s).
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.config.engine.ping_interval = d;
        self
    }
    /// Time a client has to answer a ping (default 20 s).
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.config.engine.ping_timeout = d;
        self
    }
    /// Time a client has to complete an upgrade (default 10 s).
    pub fn upgrade_timeout(mut self, d: Duration) -> Self {
        self.config.engine.upgrade_timeout = d;
        self
    }
    /// The transports clients may use (default both). A WebSocket-only server needs no sticky
    /// sessions behind a load balancer; its clients must be told to skip polling
    /// (`transports: ["websocket"]` in socket.io-client), as the polling handshake they start
    /// with by default gets 400 with code 0 "Transport unknown".
    pub fn transports(mut self, transports: &[Transport]) -> Self {
        self.config.engine.transports = transports.to_vec();
        self
    }
    /// Whether polling clients are offered the upgrade to WebSocket (default yes); without, an
    /// upgrade request is refused (400, code 3), which Node would still carry out.
    pub fn allow_upgrades(mut self, allow: bool) -> Self {
        self.config.engine.allow_upgrades = allow;
        self
    }
    /// Largest message or polling body, in bytes (default 1,000,000).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.config.engine.max_payload = bytes;
        self
    }
    /// Bytes of JSON a CONNECT's auth object may take (default 16 KiB); a larger one gets a
    /// `connect_error`.
    pub fn max_auth_bytes(mut self, n: usize) -> Self {
        self.config.max_auth_bytes = n;
        self
    }
    /// Decides which handshakes may open a connection (Node's `allowRequest`); a refused one
    /// gets 403 with code 4. See [`AllowRequest`].
    pub fn allow_request<F>(mut self, allow: F) -> Self
    where
        F: Fn(&Request<()>) -> bool + Send + Sync + 'static,
    {
        self.config.engine.allow_request = Some(AllowRequest::new(allow));
        self
    }
    /// Adds headers to the answers (Node's `initial_headers` and `headers` events): called
    /// with the request, whether it is a handshake, and the headers to add. See
    /// [`ResponseHeaders`].
    pub fn response_headers<F>(mut self, add: F) -> Self
    where
        F: Fn(&Request<()>, bool, &mut HeaderMap) + Send + Sync + 'static,
    {
        self.config.engine.response_headers = Some(ResponseHeaders::new(add));
        self
    }
    /// Namespaces one connection may be in at once (default 100); one more gets a
    /// `connect_error`.
    pub fn max_namespaces_per_connection(mut self, n: usize) -> Self {
        self.config.max_namespaces_per_connection = n;
        self
    }
    /// Namespaces the server holds at once (default 10,000): see
    /// [`SocketIoConfig::max_namespaces`].
    pub fn max_namespaces(mut self, n: usize) -> Self {
        self.config.max_namespaces = n;
        self
    }
    /// Acknowledgements one socket may owe at once (default 1024, as many as packets its queue
    /// holds).
    pub fn max_pending_acks(mut self, n: usize) -> Self {
        self.config.max_pending_acks = n;
        self
    }
    /// Bytes of binary attachments the server holds at once for packets still waiting for more
    /// of theirs, over all connections (default 256 MiB).
    pub fn max_buffered_attachment_bytes(mut self, n: usize) -> Self {
        self.config.max_buffered_attachment_bytes = n;
        self
    }
    /// The same, over the connections from one client address, or IPv6 /64 (default 32 MiB).
    pub fn max_buffered_attachment_bytes_per_address(mut self, n: usize) -> Self {
        self.config.max_buffered_attachment_bytes_per_address = n;
        self
    }
    /// Time a connection has to join a namespace (default 45 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }
    /// Allowed browser origins (default: any).
    pub fn allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.config.engine.allowed_origins = origins;
        self
    }
    /// Also allow pages this server serves itself (default: no).
    pub fn allow_same_origin(mut self, allow: bool) -> Self {
        self.config.engine.allow_same_origin = allow;
        self
    }
    /// Binary attachments per packet (default 10).
    pub fn max_attachments(mut self, n: usize) -> Self {
        self.config.max_attachments = n;
        self
    }
    /// Packets and bytes a client's outbound queue may hold (default 1024 and 4 MiB). A client
    /// whose queue stays over either for 2 seconds, or reaches 8 times either, is disconnected
    /// as one that does not read.
    pub fn outbound_queue(mut self, packets: usize, bytes: usize) -> Self {
        self.config.engine.max_queued_packets = packets;
        self.config.engine.max_queued_bytes = bytes;
        self
    }
    /// Sessions the server holds at most (default 100,000); beyond, handshakes get `503`.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.config.engine.max_sessions = n;
        self
    }
    /// Sessions one client address may hold (default 20,000); beyond, handshakes get `429`.
    /// The address is the TCP peer's (an IPv6 one counts by its /64, an IPv4-mapped one as its
    /// IPv4 address): behind a reverse proxy, which is one address for all its clients, set it
    /// to the global cap.
    pub fn max_sessions_per_ip(mut self, n: usize) -> Self {
        self.config.engine.max_sessions_per_ip = n;
        self
    }
    /// Handshakes one client address (or IPv6 /64) may make at once and per second (default
    /// 20,000 and 5,000).
    pub fn handshake_rate_per_ip(mut self, burst: u32, per_second: f64) -> Self {
        self.config.engine.handshake_burst_per_ip = burst;
        self.config.engine.handshakes_per_second_per_ip = per_second;
        self
    }
    /// WebSocket messages a client may send at once and per second (default 100,000 and 50,000;
    /// a message in fragments counts one per fragment); beyond, the connection is closed with
    /// 1008.
    pub fn ws_message_rate(mut self, burst: u32, per_second: f64) -> Self {
        self.config.engine.ws_message_burst = burst;
        self.config.engine.ws_messages_per_second = per_second;
        self
    }
    /// Packets one polling POST may carry (default 16,384).
    pub fn max_packets_per_post(mut self, n: usize) -> Self {
        self.config.engine.max_packets_per_post = n;
        self
    }
    /// JSON nesting one packet may have, its own array included (default 100).
    pub fn max_json_depth(mut self, depth: usize) -> Self {
        self.config.max_json_depth = depth;
        self
    }
    /// Turns on connection state recovery: a client that lost its connection for at most
    /// `config.max_disconnection` gets its socket back, rooms and data included, and the events
    /// it missed (Node's `connectionStateRecovery`; stock clients from socket.io-client 4.6 on
    /// take part without any setting).
    pub fn connection_state_recovery(mut self, config: RecoveryConfig) -> Self {
        self.config.connection_state_recovery = Some(config);
        self
    }
    /// Default timeout of broadcast acknowledgements (default 10 s).
    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.config.ack_timeout = d;
        self
    }
    /// The adapter of every namespace (default: [`LocalAdapter`], rooms in memory, one node).
    /// `factory` gets the namespace's name.
    pub fn adapter<F>(mut self, factory: F) -> Self
    where
        F: Fn(&str) -> Box<dyn Adapter> + Send + Sync + 'static,
    {
        self.adapter = Some(Arc::new(factory));
        self
    }
    /// Replaces every setting at once.
    pub fn config(mut self, config: SocketIoConfig) -> Self {
        self.config = config;
        self
    }
    /// The server.
    pub fn build(self) -> SocketIo {
        let adapter = self.adapter.unwrap_or_else(|| {
            Arc::new(|_: &str| Box::new(LocalAdapter::default()) as Box<dyn Adapter>)
        });
        let state = Arc::new(ServerState {
            config: self.config.clone(),
            buffered_attachments: AttachmentBudget::default(),
            adapter,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            making: Mutex::new(()),
            serving: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        // The main namespace always exists (as in Node), so that no dynamic matcher makes it.
        let main = state.new_namespace("/", None);
        state
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert("/".to_owned(), main);
        SocketIo {
            engine: EngineIo::new(self.config.engine, Client { state }),
        }
    }
}

impl Default for SocketIo {
    fn default() -> Self {
        SocketIo::builder().build()
    }
}

impl SocketIo {
    /// A builder with the default settings.
    pub fn builder() -> SocketIoBuilder {
        SocketIoBuilder::default()
    }

    fn state(&self) -> &ServerState {
        &self.engine.handler().state
    }

    /// The settings.
    pub fn config(&self) -> &SocketIoConfig {
        &self.state().config
    }

    /// The namespace of this name, created if it does not exist yet. A name that a
    /// [`dynamic_namespace`](Self::dynamic_namespace) matcher accepts gets that kind of
    /// namespace, set up by its `setup`, as with Node's `io.of` under a parent namespace: it
    /// stays until a socket has joined and left it, and once it has left the server, the same
    /// name gives a new namespace.
    pub fn of(&self, name: &str) -> Arc<Namespace> {
        let name = super::packet::normalize_nsp(name);
        let state = &self.engine.handler().state;
        // A setup looking up its own namespace, which joins the table once the setup is over.
        if let Some(ns) = state.being_made(&name) {
            return ns;
        }
        if let Some(ns) = state.find_or_make(&name, Arc::clone, usize::MAX) {
            return ns;
        }
        let _making = state.making();
        state
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| state.new_namespace(&name, None))
            .clone()
    }

    /// Namespaces created on first CONNECT when `matches` accepts the name; `setup` configures
    /// each one (middleware, connection handler) as it is created. No CONNECT finds the
    /// namespace before its setup is over (one racing for the same name waits for it), and
    /// the setup may use the server: look namespaces up ([`of`](Self::of) gives the namespace
    /// being set up for its own name, and makes others), emit, add matchers. It must not wait
    /// for another thread or task that makes a namespace of this server: namespaces are made
    /// one at a time, and the setup's own counts as under way until it returns.
    ///
    /// Such a namespace leaves the server once no socket and no CONNECT under way holds it
    /// (Node's `cleanupEmptyChildNamespaces`, always on), so that the names clients send cannot
    /// fill the server; with connection state recovery it stays until the sockets it keeps for
    /// their clients' return have expired. A later CONNECT makes it anew and runs `setup` again:
    /// what a program keeps for a namespace belongs in `setup`, not in a handle held elsewhere.
    pub fn dynamic_namespace<M, S>(&self, matches: M, setup: S)
    where
        M: Fn(&str) -> bool + Send + Sync + 'static,
        S: Fn(&Arc<Namespace>) + Send + Sync + 'static,
    {
        self.state()
            .dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((Box::new(matches), Arc::new(setup)));
    }

    /// Every namespace that exists now.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.state()
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A broadcast to a room of the main namespace.
    pub fn to(&self, room: &str) -> BroadcastOperator {
        self.of("/").to(room)
    }

    /// A broadcast to every socket of the main namespace (see [`Namespace::broadcast`]).
    pub fn broadcast(&self) -> BroadcastOperator {
        self.of("/").broadcast()
    }

    /// Sends an event to every socket of the main namespace.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<usize, EmitError> {
        self.of("/").emit(event, args)
    }

    /// The Engine.IO server underneath (session counts, raw sessions).
    pub fn engine(&self) -> &Arc<EngineIo<Client>> {
        &self.engine
    }

    /// Whether a request is for the Socket.IO path.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        self.engine.matches(req)
    }

    /// Answers a request for the Socket.IO path. Use [`matches`](Self::matches) first and
    /// serve everything else yourself. The request should carry the client's address as a
    /// [`RemoteAddr`](crate::engineio::RemoteAddr) extension (this crate's own servers add
    /// it): the limits per address count by it, and without it they cannot apply.
    ///
    /// The body may be of any type: hyper's own, or a framework's whose requests hyper served
    /// (the WebSocket upgrade is hyper's, found among the request's extensions).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.engine.handle(req).await
    }

    /// Disconnects every client with reason `server shutting down`, and accepts none from
    /// now on (their handshakes get 503), as Node's `io.close()`: clients that reconnect by
    /// themselves find the server gone, also where the program goes on serving other paths.
    pub fn close(&self) {
        self.engine.shut_down();
    }

    /// [`close`](Self::close), then waits until every session has ended (their disconnect
    /// handlers have run, polling clients have had their close packet and WebSockets their
    /// close frame) or `grace` has passed, as Node's `io.close(callback)`: for a program that
    /// serves Socket.IO from its own server, to call before it stops serving HTTP (a polling
    /// client fetches its close packet with one more request). Whether every session ended in
    /// time.
    pub async fn close_within(&self, grace: Duration) -> bool {
        self.close();
        let engine = &self.engine;
        wait_until(tokio::time::Instant::now() + grace, || {
            engine.session_count() == 0 && engine.websocket_count() == 0
        })
        .await
    }

    /// Serves Socket.IO on `listener` until `shutdown` resolves; other paths get 404.
    ///
    /// When `shutdown` resolves and no other `serve` of this server runs (one per listener,
    /// say), the server is [closed](Self::close): clients are told it is shutting down, and
    /// their disconnect handlers run. This returns once they and the HTTP connections are gone,
    /// or after a grace period of 5 seconds.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_with(listener, shutdown, |_req| async { not_found() })
            .await;
    }

    /// Serves Socket.IO on `listener`, handing every other request to `fallback`; shuts down
    /// as [`serve`](Self::serve) does.
    pub async fn serve_with<F, Fut>(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        fallback: F,
    ) where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let io = self.clone();
        let handler = move |req: Request<Incoming>| {
            let io = io.clone();
            let fallback = fallback.clone();
            async move {
                if io.matches(&req) {
                    io.handle(req).await
                } else {
                    // An upgrade nobody accepted ends the connection, rather than leaving a
                    // kept-alive socket behind for a client that expected a WebSocket.
                    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
                    let mut resp = fallback(req).await;
                    if upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    resp
                }
            }
        };
        let config = HttpConfig::default();
        let serving = Serving::start(self);
        // The clients are told first: a pending poll is answered with the close packet, so
        // the HTTP connections do not wait out the grace for it.
        let began = std::sync::OnceLock::new();
        let shutdown = async {
            shutdown.await;
            let _ = began.set(tokio::time::Instant::now());
            serving.stop();
        };
        crate::server::serve(listener, config.clone(), handler, shutdown).await;
        let Some(&began) = began.get() else {
            return;
        };
        if !self.engine.is_shut_down() {
            return;
        }
        // Every session's end is to be handled (its sockets' disconnect handlers run); then
        // polling sessions have nothing more to wait for, their HTTP connections gone, while
        // WebSockets may still be sending their close frames.
        let engine = &self.engine;
        let gone = wait_until(began + config.shutdown_grace, || {
            engine.unended_sessions() == 0 && engine.websocket_count() == 0
        })
        .await;
        if !gone {
            tracing::debug!(
                websockets = engine.websocket_count(),
                "clients still connected after the shutdown grace"
            );
        }
    }
}

/// Waits until `done` or `deadline`; whether `done`. Only shutdown waits so, so it looks every
/// few milliseconds rather than keep a notification that every session would pay for.
async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) -> bool {
    const LOOK_EVERY: Duration = Duration::from_millis(10);
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
    true
}

/// Counts one [`SocketIo::serve`] among the server's while it runs.
struct Serving<'a> {
    io: &'a SocketIo,
    counted: AtomicBool,
}

impl<'a> Serving<'a> {
    fn start(io: &'a SocketIo) -> Self {
        io.state().serving.fetch_add(1, Ordering::AcqRel);
        Serving {
            io,
            counted: AtomicBool::new(true),
        }
    }

    /// This `serve` was told to stop: the server closes if it was the last.
    fn stop(&self) {
        self.io.state().stopping.store(true, Ordering::Release);
        self.count_out();
    }

    /// Counts this one out; the last one out closes the server once any was told to stop
    /// (also when the last is dropped rather than stopped: serves raced in a `select!`).
    fn count_out(&self) {
        let state = self.io.state();
        if self.counted.swap(false, Ordering::AcqRel)
            && state.serving.fetch_sub(1, Ordering::AcqRel) == 1
            && state.stopping.load(Ordering::Acquire)
        {
            self.io.close();
        }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.count_out();
    }
}

/// A plain `404 Not Found`.
pub fn not_found() -> Response<Body> {
    let mut resp = Response::new(Body::from("Not Found"));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}
