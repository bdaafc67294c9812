//! Namespaces: their sockets, connect middleware, connection handler, and broadcasts.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::adapter::{
    Adapter, BroadcastFlags, BroadcastOptions, BroadcastTarget, ClusterError, FetchedSockets,
    RemoteAck, RoomEvent, SocketInfo, hold_room_events,
};
use super::binary;
use super::client::run_inline;
use super::error::{AckError, ConnectError, EmitError};
use super::packet::{Packet, PacketKind};
use super::recovery::{Kept, Recovery, RecoveryConfig, Restored};
use super::socket::{AckResponse, Socket, check_event_name, encode_frames, typed_frames};
use crate::engineio::Frame;
use crate::id::{Id, IdMap};

type MiddlewareFuture = Pin<Box<dyn Future<Output = Result<(), ConnectError>> + Send>>;
type Middleware = Arc<dyn Fn(Arc<Socket>) -> MiddlewareFuture + Send + Sync>;
type ConnectHandler = Arc<dyn Fn(Arc<Socket>) + Send + Sync>;
type ServerEventHandler = Arc<dyn Fn(Vec<Value>, ServerAck) + Send + Sync>;
type Retire = Box<dyn Fn(&Arc<Namespace>) + Send + Sync>;

/// The answer to a server-side event from another node; it can be sent once.
pub struct ServerAck {
    reply: Option<Box<dyn FnOnce(Value) + Send>>,
}

impl std::fmt::Debug for ServerAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAck")
            .field("requested", &self.requested())
            .finish()
    }
}

impl ServerAck {
    /// An acknowledgement that goes to `reply`; adapters build these.
    pub fn new(reply: impl FnOnce(Value) + Send + 'static) -> ServerAck {
        ServerAck {
            reply: Some(Box::new(reply)),
        }
    }

    /// No acknowledgement was asked for.
    pub fn none() -> ServerAck {
        ServerAck { reply: None }
    }

    /// Whether the sending node waits for an answer.
    pub fn requested(&self) -> bool {
        self.reply.is_some()
    }

    /// Answers with one value (the Node adapter carries exactly one).
    pub fn send(mut self, value: Value) {
        if let Some(reply) = self.reply.take() {
            reply(value);
        }
    }
}

/// What keeps a namespace made on demand for a client's CONNECT (see
/// [`SocketIo::dynamic_namespace`](super::SocketIo::dynamic_namespace)) in its server: its
/// sockets and the CONNECTs under way for it. When the last of them goes, `retire` takes the
/// namespace out, so that namespaces clients name do not pile up in the server.
pub(crate) struct Lease {
    holders: AtomicUsize,
    retire: Retire,
    /// Whether a retirement waits for the sockets kept for recovery to expire.
    deferred: AtomicBool,
    /// Where that wait runs: the runtime the namespace was made on, for a retirement that
    /// starts on a thread of the program's own.
    runtime: Option<tokio::runtime::Handle>,
}

impl Lease {
    pub(crate) fn new(
        retire: impl Fn(&Arc<Namespace>) + Send + Sync + 'static,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Lease {
        Lease {
            holders: AtomicUsize::new(0),
            retire: Box::new(retire),
            deferred: AtomicBool::new(false),
            runtime,
        }
    }
}

/// A hold on a namespace for a CONNECT under way, let go when dropped, unless
/// [kept](Hold::keep) for the socket the CONNECT made: that socket's leaving lets it go.
pub(crate) struct Hold {
    ns: Arc<Namespace>,
    kept: bool,
}

impl Hold {
    /// Takes a hold; the server's map of namespaces must be locked, so that a retirement sees
    /// every hold.
    pub(crate) fn new(ns: &Arc<Namespace>) -> Hold {
        if let Some(lease) = &ns.lease {
            lease.holders.fetch_add(1, Ordering::AcqRel);
        }
        Hold {
            ns: ns.clone(),
            kept: false,
        }
    }

    pub(crate) fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// Passes the hold on to the socket the CONNECT made.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.kept {
            self.ns.let_go();
        }
    }
}

/// A namespace: a channel of its own multiplexed over each client connection.
pub struct Namespace {
    name: String,
    sockets: RwLock<IdMap<Arc<Socket>>>,
    adapter: Box<dyn Adapter>,
    middleware: RwLock<Vec<Middleware>>,
    on_connect: RwLock<Option<ConnectHandler>>,
    server_events: RwLock<HashMap<String, ServerEventHandler>>,
    ack_timeout: Duration,
    pub(crate) max_pending_acks: usize,
    recovery: Option<Recovery>,
    /// Set for a namespace made on demand: it leaves the server once nothing holds it.
    lease: Option<Lease>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

impl Namespace {
    pub(crate) fn new(
        name: String,
        adapter: Box<dyn Adapter>,
        ack_timeout: Duration,
        max_pending_acks: usize,
        recovery: Option<RecoveryConfig>,
        lease: Option<Lease>,
    ) -> Arc<Namespace> {
        let ns = Arc::new(Namespace {
            name,
            sockets: RwLock::new(IdMap::default()),
            adapter,
            middleware: RwLock::new(Vec::new()),
            on_connect: RwLock::new(None),
            server_events: RwLock::new(HashMap::new()),
            ack_timeout,
            max_pending_acks,
            recovery: recovery.map(Recovery::new),
            lease,
        });
        ns.adapter.bind(Arc::downgrade(&ns));
        ns
    }

    /// The name, starting with `/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room bookkeeping of this namespace.
    pub fn adapter(&self) -> &dyn Adapter {
        &*self.adapter
    }

    /// Adds connect middleware: it runs in order for every CONNECT, and the first refusal is
    /// sent to the client as CONNECT_ERROR with its message and data. A middleware may emit
    /// to the socket: the event goes ahead of the CONNECT answer, and the client holds it until
    /// it is connected.
    pub fn use_middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(Arc<Socket>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        let middleware: Middleware = Arc::new(move |s| Box::pin(middleware(s)));
        self.middleware
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(middleware);
    }

    /// Sets what runs for every new socket: typically registering its event handlers. It runs
    /// before any event of the socket is read, right after the client was told it connected.
    pub fn on_connect<F>(&self, handler: F)
    where
        F: Fn(Arc<Socket>) + Send + Sync + 'static,
    {
        *self.on_connect.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    }

    /// Listens to this namespace's room events on this node (Node's
    /// `io.of(name).adapter.on("join-room", ...)` and the like); returns whether the adapter
    /// reports them. See [`RoomEvent`].
    pub fn on_room_event<F>(&self, listener: F) -> bool
    where
        F: Fn(&RoomEvent) + Send + Sync + 'static,
    {
        self.adapter.on_room_event(Arc::new(listener))
    }

    /// A connected socket by id.
    pub fn socket(&self, id: Id) -> Option<Arc<Socket>> {
        read(&self.sockets).get(&id).cloned()
    }

    /// Every connected socket.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        read(&self.sockets).values().cloned().collect()
    }

    /// Connected sockets.
    pub fn socket_count(&self) -> usize {
        read(&self.sockets).len()
    }

    /// A broadcast to every socket of the namespace, to narrow or flag before acting: Node's
    /// `io.local.emit`, `io.timeout(ms).emitWithAck`, `io.fetchSockets()`,
    /// `io.disconnectSockets()` and `io.socketsJoin(room)` are `broadcast().local().emit`,
    /// `broadcast().timeout(d).emit_with_ack`, `broadcast().fetch_sockets()`,
    /// `broadcast().disconnect()` and `broadcast().join(room)`.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// The rooms that have a member on this node (Node's `adapter.rooms`), sockets' own-id
    /// rooms left out.
    pub fn rooms(&self) -> Vec<String> {
        self.adapter.room_names()
    }

    /// A broadcast to a room.
    pub fn to(self: &Arc<Self>, room: &str) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(room)
    }

    /// A broadcast leaving out a room.
    pub fn except(self: &Arc<Self>, room: &str) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).except(room)
    }

    /// Sends an event to every socket of the namespace.
    pub fn emit<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        event: &str,
        args: &T,
    ) -> Result<usize, EmitError> {
        BroadcastOperator::new(self.clone()).emit(event, args)
    }

    /// Handles a server-side event sent by another node with
    /// [`server_side_emit`](Self::server_side_emit) (here or in Node's socket.io, where it is
    /// `io.serverSideEmit`). The handler gets the arguments and, when the sender waits for
    /// answers, an acknowledgement to send.
    pub fn on_server_event<F>(&self, event: &str, handler: F)
    where
        F: Fn(Vec<Value>, ServerAck) + Send + Sync + 'static,
    {
        self.server_events
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event.to_owned(), Arc::new(handler));
    }

    /// Sends an event to the other nodes' handlers of this namespace (never to clients).
    ///
    /// Like every other emit, it may be called from any thread: a single node's (the local
    /// adapter's) is done at once; an adapter that publishes needs the runtime the server runs
    /// on, and without one the event is dropped with a warning.
    pub fn server_side_emit(&self, event: &str, args: Vec<Value>) {
        let mut data = Vec::with_capacity(1 + args.len());
        data.push(Value::String(event.to_owned()));
        data.extend(args);
        let sent = self.adapter.server_side_emit(data, false);
        run_inline(async move {
            if let Err(e) = sent.await {
                tracing::warn!(error = %e, "server-side event not sent");
            }
        });
    }

    /// Sends an event to the other nodes' handlers and waits for one answer per node (as long
    /// as the adapter's request timeout).
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, ClusterError> {
        let mut data = Vec::with_capacity(1 + args.len());
        data.push(Value::String(event.to_owned()));
        data.extend(args);
        self.adapter.server_side_emit(data, true).await
    }

    /// Runs this namespace's handler for a server-side event from another node. `data` is
    /// `[name, args...]`; an unknown or malformed event is dropped (and its ack never sent).
    pub fn dispatch_server_event(&self, mut data: Vec<Value>, ack: ServerAck) {
        if data.is_empty() {
            return;
        }
        let Value::String(name) = data.remove(0) else {
            return;
        };
        let handler = read(&self.server_events).get(&name).cloned();
        match handler {
            Some(handler) => handler(data, ack),
            None => tracing::trace!(event = %name, "no handler for a server-side event"),
        }
    }

    /// This node's id among [`node_ids`](Self::node_ids) (`None` on one node).
    pub fn node_id(&self) -> Option<String> {
        self.adapter.node_id()
    }

    /// Times this node's link to the other nodes was made again after a loss: what they sent
    /// in between may have been missed (always 0 on one node).
    pub fn reconnections(&self) -> u64 {
        self.adapter.reconnections()
    }

    /// Ids of the nodes serving this namespace, this one included (empty on one node).
    pub async fn node_ids(&self) -> Result<Vec<String>, ClusterError> {
        self.adapter.node_ids().await
    }

    /// Nodes serving this namespace, this one included.
    pub async fn server_count(&self) -> Result<usize, ClusterError> {
        self.adapter.server_count().await
    }

    /// A middleware that panics refuses the socket: otherwise its CONNECT would go unanswered
    /// and the rooms it joined would stay behind.
    pub(crate) async fn run_middleware(&self, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let chain: Vec<Middleware> = read(&self.middleware).clone();
        for middleware in chain {
            let ran = AssertUnwindSafe(async { middleware(socket.clone()).await })
                .catch_unwind()
                .await;
            let Ok(passed) = ran else {
                tracing::error!(socket = %socket.id(), nsp = %self.name, "a middleware panicked");
                return Err(ConnectError::new("Internal server error"));
            };
            passed?;
        }
        Ok(())
    }

    pub(crate) fn add(&self, socket: &Arc<Socket>) {
        self.sockets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(socket.id(), socket.clone());
    }

    pub(crate) fn connect_handler(&self) -> Option<ConnectHandler> {
        read(&self.on_connect).clone()
    }

    pub(crate) fn remove(&self, socket: &Socket) {
        self.adapter.leave_all(socket.id());
        self.sockets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&socket.id());
    }

    /// Lets go of a [`Hold`] (a socket's, when it leaves); the last one retires the namespace.
    pub(crate) fn let_go(self: &Arc<Self>) {
        if let Some(lease) = &self.lease
            && lease.holders.fetch_sub(1, Ordering::AcqRel) == 1
        {
            (lease.retire)(self);
        }
    }

    /// Whether a socket or a CONNECT under way holds this namespace (always, for one that was
    /// not made on demand).
    pub(crate) fn is_held(&self) -> bool {
        self.lease
            .as_ref()
            .is_none_or(|lease| lease.holders.load(Ordering::Acquire) > 0)
    }

    /// How long until the last socket kept for recovery expires, when any is kept.
    pub(crate) fn recovery_pending(&self) -> Option<Duration> {
        let recovery = self.recovery.as_ref()?;
        recovery.lock().kept_until(&recovery.config, Instant::now())
    }

    /// Marks a retirement as waiting for [`recovery_pending`](Self::recovery_pending) to end;
    /// false when one already waits.
    pub(crate) fn defer_retirement(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| !lease.deferred.swap(true, Ordering::AcqRel))
    }

    /// Where a deferred retirement waits: the runtime this namespace was made on, or else the
    /// caller's.
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.lease
            .as_ref()
            .and_then(|lease| lease.runtime.clone())
            .or_else(|| tokio::runtime::Handle::try_current().ok())
    }

    /// The wait of [`defer_retirement`](Self::defer_retirement) is over.
    pub(crate) fn end_deferral(&self) {
        if let Some(lease) = &self.lease {
            lease.deferred.store(false, Ordering::Release);
        }
    }

    /// Whether connection state recovery is on.
    pub(crate) fn recovers(&self) -> bool {
        self.recovery.is_some()
    }

    /// Delivers an event to `target`'s sockets with `deliver`; with recovery on, stamped with
    /// its offset and kept, under the store's lock (see [`Recovery`]).
    fn deliver_event<R>(
        &self,
        frames: Vec<Frame>,
        target: &BroadcastTarget,
        deliver: impl FnOnce(Vec<Frame>) -> R,
    ) -> R {
        match &self.recovery {
            Some(recovery) => {
                let mut state = recovery.lock();
                let frames = state.stamp(&recovery.config, frames, target);
                deliver(frames)
            }
            None => deliver(frames),
        }
    }

    /// Sends an event to one socket of this namespace, as an event to its own room (so that
    /// it can be replayed when the socket is recovered).
    pub(crate) fn deliver_to_socket<R>(
        &self,
        socket: Id,
        frames: Vec<Frame>,
        deliver: impl FnOnce(Vec<Frame>) -> R,
    ) -> R {
        if self.recovery.is_none() {
            // No room to name: the target is only for the store.
            return deliver(frames);
        }
        let target = BroadcastTarget {
            rooms: vec![socket.as_str().to_owned()],
            except: Vec::new(),
        };
        self.deliver_event(frames, &target, deliver)
    }

    /// A new socket's private id (`None` without recovery).
    pub(crate) fn register_pid(&self, socket: Id) -> Option<Id> {
        let recovery = self.recovery.as_ref()?;
        let pid = Id::random();
        recovery.lock().register(socket, pid);
        Some(pid)
    }

    /// Finds the socket a reconnecting client had, from the `pid` and `offset` of its auth, and
    /// runs `connect` with it under the store's lock: what `connect` queues comes before any
    /// event sent after the missed ones. The socket `connect` returns is the one recovered.
    /// Room listeners hear of its rooms once the lock is released, since they may broadcast.
    pub(crate) fn restore(
        &self,
        auth: &Value,
        connect: impl FnOnce(&Restored) -> Option<Arc<Socket>>,
    ) -> Option<Arc<Socket>> {
        let recovery = self.recovery.as_ref()?;
        let pid = auth.get("pid").and_then(Value::as_str)?;
        let offset = auth.get("offset").and_then(Value::as_str)?;
        hold_room_events(|| {
            let mut state = recovery.lock();
            let restored = state.restore(&recovery.config, pid, offset)?;
            let socket = connect(&restored)?;
            restored.register(&mut state);
            Some(socket)
        })
    }

    /// What a leaving socket had, when recovery is on and it may come back: its rooms (read
    /// before it leaves them), data and extensions.
    pub(crate) fn keep_for_recovery(&self, socket: &Socket, recoverable: bool) -> Option<Kept> {
        if self.recovery.is_none() || !recoverable {
            return None;
        }
        Some(Kept {
            rooms: self.adapter.rooms_of(socket.id()),
            data: socket.data(),
            extensions: socket.extensions(),
        })
    }

    /// A socket has left the namespace: what it had, if anything, is kept for its return. Called
    /// once it is gone from the namespace, so that it cannot be recovered while still there.
    pub(crate) fn forget_socket(&self, socket: Id, kept: Option<Kept>) {
        if let Some(recovery) = &self.recovery {
            recovery.lock().leave(&recovery.config, socket, kept);
        }
    }

    /// The local sockets a broadcast reaches.
    fn targets(&self, target: &BroadcastTarget) -> Vec<Arc<Socket>> {
        let mut out = Vec::new();
        self.for_each_target(target, |socket| out.push(socket.clone()));
        out
    }

    /// Calls `f` for every socket a broadcast reaches, under the read lock of the sockets: a
    /// broadcast then neither clones an `Arc` nor collects a list per recipient. `f` must not
    /// take that lock again (it would wait behind a waiting writer).
    fn for_each_target(&self, target: &BroadcastTarget, f: impl FnMut(&Arc<Socket>)) {
        let sockets = read(&self.sockets);
        let mut excluded: Vec<Id> = Vec::new();
        for room in &target.except {
            self.room_members(room, &mut excluded);
        }
        // Sorted, so that leaving out a large room costs a search per recipient, not a scan.
        excluded.sort_unstable();
        let keep = |s: &Arc<Socket>| excluded.binary_search(&s.id()).is_err();
        if target.rooms.is_empty() {
            sockets.values().filter(|s| keep(s)).for_each(f);
            return;
        }
        let mut ids = Vec::new();
        for room in &target.rooms {
            self.room_members(room, &mut ids);
        }
        // One explicit room lists each member once; a socket in several of the rooms (or in
        // a room named like a socket id, and that socket) gets the broadcast once.
        let single = matches!(&target.rooms[..], [room] if Id::parse(room).is_none());
        if !single {
            ids.sort_unstable();
            ids.dedup();
        }
        ids.iter()
            .filter_map(|id| sockets.get(id))
            .filter(|s| keep(s))
            .for_each(f);
    }

    /// Whether this node has a member of `room` (a socket's own-id room included). A name may
    /// be both: any 20 URL-safe characters read as an id.
    pub fn has_room(&self, room: &str) -> bool {
        Id::parse(room).is_some_and(|id| read(&self.sockets).contains_key(&id))
            || !self.adapter.members(room).is_empty()
    }

    /// Members of a room, the implicit own-id rooms included. An id that is no socket of this
    /// namespace is dropped by the caller's lookup; this takes no lock on the sockets, which the
    /// caller already holds (taking it again could deadlock behind a waiting writer).
    fn room_members(&self, room: &str, into: &mut Vec<Id>) {
        if let Some(id) = Id::parse(room) {
            into.push(id);
        }
        into.extend(self.adapter.members(room));
    }
}

/// A broadcast being described: rooms, exceptions and flags, then an emit or an action. With a
/// multi-node adapter, everything it does reaches the other nodes' sockets too, unless
/// [`local`](Self::local) says otherwise.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    opts: BroadcastOptions,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> BroadcastOperator {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
        }
    }

    /// A broadcast with options that came from another node.
    pub fn with_options(ns: Arc<Namespace>, opts: BroadcastOptions) -> BroadcastOperator {
        BroadcastOperator { ns, opts }
    }

    /// Adds a room to reach.
    pub fn to(mut self, room: &str) -> Self {
        self.opts.target.rooms.push(room.to_owned());
        self
    }

    /// Leaves out a room's members.
    pub fn except(mut self, room: &str) -> Self {
        self.opts.target.except.push(room.to_owned());
        self
    }

    /// Drops the packet for clients that cannot take it now, instead of queueing it.
    pub fn volatile(mut self) -> Self {
        self.opts.flags.volatile = true;
        self
    }

    /// Only this node's clients.
    pub fn local(mut self) -> Self {
        self.opts.flags.local = true;
        self
    }

    /// How long [`emit_with_ack`](Self::emit_with_ack) waits for each reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.flags.timeout = Some(timeout);
        self
    }

    /// The rooms, exceptions and flags.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    fn target(&self) -> &BroadcastTarget {
        &self.opts.target
    }

    fn flags(&self) -> &BroadcastFlags {
        &self.opts.flags
    }

    /// This node's sockets that the broadcast reaches now.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.ns.targets(self.target())
    }

    /// Every socket the broadcast reaches, across the cluster: this node's first, then the
    /// other nodes' answers. A node that does not answer in time makes it fail, as in Node.
    pub async fn fetch_sockets(&self) -> Result<Vec<SocketInfo>, ClusterError> {
        let fetched = self.fetch_available_sockets().await?;
        if fetched.nodes_missing > 0 {
            return Err(ClusterError::Timeout {
                expected: fetched.nodes_asked,
                missing: fetched.nodes_missing,
            });
        }
        Ok(fetched.sockets)
    }

    /// Like [`fetch_sockets`](Self::fetch_sockets), but a node that does not answer in time is
    /// left out (and counted) instead of failing the whole answer.
    pub async fn fetch_available_sockets(&self) -> Result<FetchedSockets, ClusterError> {
        let local: Vec<SocketInfo> = self.sockets().iter().map(|s| s.info()).collect();
        let mut fetched = if self.flags().local {
            FetchedSockets::default()
        } else {
            self.ns.adapter.fetch_remote_sockets(&self.opts).await?
        };
        let mut all = local;
        all.append(&mut fetched.sockets);
        fetched.sockets = all;
        Ok(fetched)
    }

    /// Sends an event to every recipient; returns how many of this node's clients queued it.
    /// The packet is encoded once and every recipient's queue shares the same bytes. A client
    /// that cannot take it is skipped (and, when its queue overflowed, disconnected): nobody
    /// waits for it.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<usize, EmitError> {
        let frames = typed_frames(self.ns.name(), None, Some(event), args)?;
        if !self.flags().local && self.ns.adapter.publishes() {
            let packet = binary::event_packet(self.ns.name(), event, args)?;
            self.ns.adapter.publish(&packet, &self.opts);
        }
        Ok(self.deliver_event(frames))
    }

    /// Sends a prepared packet to every recipient.
    pub fn send(&self, packet: &Packet) -> usize {
        if !self.flags().local {
            self.ns.adapter.publish(packet, &self.opts);
        }
        let frames = encode_frames(packet);
        let event = matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent);
        if event && packet.id.is_none() {
            self.deliver_event(frames)
        } else {
            self.deliver(&frames)
        }
    }

    /// Queues an event for this node's recipients; one that is not volatile can be replayed to
    /// a recovered socket.
    fn deliver_event(&self, frames: Vec<Frame>) -> usize {
        if self.flags().volatile {
            return self.deliver(&frames);
        }
        self.ns
            .deliver_event(frames, self.target(), |frames| self.deliver(&frames))
    }

    /// Queues an encoded packet for this node's recipients.
    fn deliver(&self, frames: &[Frame]) -> usize {
        let volatile = self.flags().volatile;
        let mut delivered = 0;
        // Queueing only: closing a client that does not read is left to its own tasks.
        self.ns.for_each_target(self.target(), |socket| {
            let session = socket.session();
            let sent = if volatile {
                session.send_volatile(frames.iter().cloned())
            } else {
                session.send_all(frames.iter().cloned())
            };
            if sent.is_ok() {
                delivered += 1;
            }
        });
        delivered
    }

    /// Sends an event asking each recipient for an acknowledgement; resolves with every reply
    /// (or its timeout), in no particular order.
    pub async fn emit_with_ack<T, R>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Vec<Result<R, AckError>>, EmitError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        check_event_name(event)?;
        let packet = binary::event_packet(self.ns.name(), event, args)?;
        let raw = self.send_with_ack(packet).await;
        Ok(raw
            .into_iter()
            .map(|r| r.and_then(|resp| resp.args().map_err(AckError::Decode)))
            .collect())
    }

    /// [`emit_with_ack`](Self::emit_with_ack) for a prepared packet, with raw replies. Other
    /// nodes carry one argument per reply (as Node's adapter does); a node that does not say
    /// in time how many clients it asked counts as none, and a reply that does not come in
    /// time is a timeout. A local recipient the event could not be sent to (it left, or owes
    /// too many acknowledgements) has its error among the replies.
    pub async fn send_with_ack(&self, packet: Packet) -> Vec<Result<AckResponse, AckError>> {
        let timeout = self.flags().timeout.unwrap_or(self.ns.ack_timeout);
        let mut opts = self.opts.clone();
        opts.flags.timeout = Some(timeout);
        let remote = if self.flags().local {
            None
        } else {
            self.ns.adapter.publish_with_ack(&packet, &opts)
        };
        let mut pending = Vec::new();
        for socket in self.sockets() {
            use futures_util::future::{Either, ready};
            match socket.send_with_ack(packet.clone(), timeout) {
                Ok(fut) => pending.push(Either::Left(fut)),
                // Counted like a recipient that did not answer: every recipient has a reply.
                Err(e) => {
                    tracing::debug!(socket = %socket.id(), error = %e, "broadcast with ack not sent");
                    pending.push(Either::Right(ready(Err(AckError::Emit(e)))));
                }
            }
        }
        let local = futures_util::future::join_all(pending);
        let remote = collect_remote_acks(remote, timeout, self.ns.adapter.server_count());
        let (mut replies, remote) = tokio::join!(local, remote);
        replies.extend(remote);
        replies
    }

    /// Makes every recipient join a room.
    pub fn join(&self, room: &str) {
        for socket in self.sockets() {
            socket.join(room);
        }
        if !self.flags().local {
            self.ns.adapter.remote_join(&self.opts, &[room.to_owned()]);
        }
    }

    /// Makes every recipient leave a room.
    pub fn leave(&self, room: &str) {
        for socket in self.sockets() {
            socket.leave(room);
        }
        if !self.flags().local {
            self.ns.adapter.remote_leave(&self.opts, &[room.to_owned()]);
        }
    }

    /// Disconnects every recipient from the namespace.
    pub fn disconnect(&self) {
        self.disconnect_with(false);
    }

    /// Disconnects every recipient; with `close`, their whole connection.
    pub fn disconnect_with(&self, close: bool) {
        for socket in self.sockets() {
            if close {
                socket.disconnect_and_close();
            } else {
                socket.disconnect();
            }
        }
        if !self.flags().local {
            self.ns.adapter.remote_disconnect(&self.opts, close);
        }
    }
}

/// Gathers other nodes' answers to a broadcast with acknowledgements: every node says how many
/// clients it asked, then relays their replies. Done when every node has spoken and every
/// announced reply is in, or at the timeout, where each announced but missing reply is a
/// timeout.
async fn collect_remote_acks(
    remote: Option<tokio::sync::mpsc::Receiver<RemoteAck>>,
    timeout: Duration,
    server_count: super::adapter::AdapterFuture<Result<usize, ClusterError>>,
) -> Vec<Result<AckResponse, AckError>> {
    let Some(mut rx) = remote else {
        return Vec::new();
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // Other nodes: everyone subscribed but this one. Unknown (broker down) means wait for the
    // timeout, counting whatever arrives.
    let mut nodes_left = match tokio::time::timeout_at(deadline, server_count).await {
        Ok(Ok(n)) => Some(n.saturating_sub(1)),
        _ => None,
    };
    let mut expected = 0usize;
    let mut replies = Vec::new();
    loop {
        if nodes_left == Some(0) && replies.len() >= expected {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(RemoteAck::ClientCount(n))) => {
                expected = expected.saturating_add(n);
                nodes_left = nodes_left.map(|left| left.saturating_sub(1));
            }
            Ok(Some(RemoteAck::Ack(reply))) => replies.push(Ok(reply)),
            Ok(None) | Err(_) => break,
        }
    }
    // The counts come off the wire: a timeout per missing reply, but not past what any
    // cluster could have asked.
    let missing = expected
        .saturating_sub(replies.len())
        .min(MAX_REMOTE_REPLIES);
    replies.extend((0..missing).map(|_| Err(AckError::Timeout)));
    replies
}

/// The most replies from other nodes a broadcast with acknowledgements reports.
const MAX_REMOTE_REPLIES: usize = 1 << 20;
