//! Namespaces: their sockets, connect middleware, connection handler, and broadcasts.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::adapter::{Adapter, BroadcastTarget, LocalAdapter};
use super::binary;
use super::error::{AckError, ConnectError, EmitError};
use super::packet::Packet;
use super::socket::{AckResponse, Socket, encode_frames};
use crate::id::Id;

type MiddlewareFuture = Pin<Box<dyn Future<Output = Result<(), ConnectError>> + Send>>;
type Middleware = Arc<dyn Fn(Arc<Socket>) -> MiddlewareFuture + Send + Sync>;
type ConnectHandler = Arc<dyn Fn(Arc<Socket>) + Send + Sync>;

/// A namespace: a channel of its own multiplexed over each client connection.
pub struct Namespace {
    name: String,
    sockets: RwLock<HashMap<Id, Arc<Socket>>>,
    adapter: Box<dyn Adapter>,
    middleware: RwLock<Vec<Middleware>>,
    on_connect: RwLock<Option<ConnectHandler>>,
    ack_timeout: Duration,
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
    pub(crate) fn new(name: String, adapter: Box<dyn Adapter>, ack_timeout: Duration) -> Namespace {
        Namespace {
            name,
            sockets: RwLock::new(HashMap::new()),
            adapter,
            middleware: RwLock::new(Vec::new()),
            on_connect: RwLock::new(None),
            ack_timeout,
        }
    }

    pub(crate) fn with_local_adapter(name: String, ack_timeout: Duration) -> Namespace {
        Namespace::new(name, Box::new(LocalAdapter::default()), ack_timeout)
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
    /// sent to the client as CONNECT_ERROR with its message and data.
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

    pub(crate) async fn run_middleware(&self, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let chain: Vec<Middleware> = read(&self.middleware).clone();
        for middleware in chain {
            middleware(socket.clone()).await?;
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

    /// The local sockets a broadcast reaches.
    fn targets(&self, target: &BroadcastTarget) -> Vec<Arc<Socket>> {
        let sockets = read(&self.sockets);
        let mut excluded: Vec<Id> = Vec::new();
        for room in &target.except {
            self.room_members(room, &mut excluded);
        }
        let keep = |s: &&Arc<Socket>| !excluded.contains(&s.id());
        if target.rooms.is_empty() {
            return sockets.values().filter(keep).cloned().collect();
        }
        let mut ids = Vec::new();
        for room in &target.rooms {
            self.room_members(room, &mut ids);
        }
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .filter_map(|id| sockets.get(id))
            .filter(keep)
            .cloned()
            .collect()
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

/// A broadcast being described: rooms, exceptions and flags, then an emit or an action.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    target: BroadcastTarget,
    volatile: bool,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> BroadcastOperator {
        BroadcastOperator {
            ns,
            target: BroadcastTarget::default(),
            volatile: false,
            timeout: None,
        }
    }

    /// Adds a room to reach.
    pub fn to(mut self, room: &str) -> Self {
        self.target.rooms.push(room.to_owned());
        self
    }

    /// Leaves out a room's members.
    pub fn except(mut self, room: &str) -> Self {
        self.target.except.push(room.to_owned());
        self
    }

    /// Drops the packet for clients that cannot take it now, instead of queueing it.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Only this process's clients (the in-memory adapter reaches no others anyway).
    pub fn local(self) -> Self {
        self
    }

    /// How long [`emit_with_ack`](Self::emit_with_ack) waits for each reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The sockets this broadcast reaches now.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.ns.targets(&self.target)
    }

    /// Sends an event to every recipient; returns how many queued it. The packet is encoded
    /// once and every recipient's queue shares the same bytes. A client that cannot take it is
    /// skipped (and, when its queue overflowed, disconnected): nobody waits for it.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<usize, EmitError> {
        let packet = binary::event_packet(self.ns.name(), event, args)?;
        Ok(self.send(&packet))
    }

    /// Sends a prepared packet to every recipient.
    pub fn send(&self, packet: &Packet) -> usize {
        let frames = encode_frames(packet);
        let mut delivered = 0;
        for socket in self.sockets() {
            let session = socket.session();
            let sent = if self.volatile {
                session.send_volatile(frames.iter().cloned())
            } else {
                session.send_all(frames.iter().cloned())
            };
            if sent.is_ok() {
                delivered += 1;
            }
        }
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
        let packet = binary::event_packet(self.ns.name(), event, args)?;
        let timeout = self.timeout.unwrap_or(self.ns.ack_timeout);
        let mut pending = Vec::new();
        for socket in self.sockets() {
            match socket.send_with_ack(packet.clone(), timeout) {
                Ok(fut) => pending.push(fut),
                Err(e) => {
                    tracing::debug!(socket = %socket.id(), error = %e, "broadcast with ack not sent")
                }
            }
        }
        let replies = futures_util::future::join_all(pending).await;
        Ok(replies
            .into_iter()
            .map(|r: Result<AckResponse, AckError>| {
                r.and_then(|resp| resp.args().map_err(AckError::Decode))
            })
            .collect())
    }

    /// Makes every recipient join a room.
    pub fn join(&self, room: &str) {
        for socket in self.sockets() {
            socket.join(room);
        }
    }

    /// Makes every recipient leave a room.
    pub fn leave(&self, room: &str) {
        for socket in self.sockets() {
            socket.leave(room);
        }
    }

    /// Disconnects every recipient from the namespace.
    pub fn disconnect(&self) {
        for socket in self.sockets() {
            socket.disconnect();
        }
    }
}
