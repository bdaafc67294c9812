//! A socket: one client's membership of one namespace, with its event handlers and pending acks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use super::adapter::SocketInfo;
use super::binary::{self, BinaryError};
use super::client::{SessionState, run_inline};
use super::error::{AckError, DisconnectReason, EmitError, EventRefused};
use super::namespace::{BroadcastOperator, Namespace};
use super::packet::{Packet, RESERVED_EVENTS};
use crate::engineio::{CloseReason, Frame, Session, Transport, query};
use crate::id::Id;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
type EventHandler = Arc<dyn Fn(Arc<Socket>, Event) -> BoxFuture + Send + Sync>;
type DisconnectHandler = Box<dyn FnOnce(Arc<Socket>, DisconnectReason) + Send>;

type AnyListener = Arc<dyn Fn(&Arc<Socket>, &str, &[Value]) + Send + Sync>;
type EventMiddleware = Arc<
    dyn Fn(Arc<Socket>, Event) -> Pin<Box<dyn Future<Output = Result<Event, EventRefused>> + Send>>
        + Send
        + Sync,
>;

/// A socket's event handlers: one per event name, and the rarely set ones.
#[derive(Default)]
struct Handlers {
    /// Sorted by name. Every connection keeps its own handlers, a handful in most programs: a
    /// sorted list with the names inline is one allocation, where a map took two per name.
    by_name: Vec<(EventName, EventHandler)>,
    /// Boxed: most sockets have none, and every socket pays for this field.
    rare: Option<Box<RareHandlers>>,
}

#[derive(Default)]
struct RareHandlers {
    /// For the names that have no handler of their own.
    fallback: Option<EventHandler>,
    /// For every event, before its handler.
    any: Vec<AnyListener>,
    /// For every event, after the `any` listeners: each may change the event or stop it.
    middleware: Vec<EventMiddleware>,
    /// Events that came while the socket was being set up, in order.
    early: Vec<EarlyEvent>,
    /// Why the socket is to leave once set up: the client left, its connection closed, or
    /// the server disconnected it, while the connection handler ran on another thread.
    leaving: Option<DisconnectReason>,
}

/// An event from the client, as it came.
struct EarlyEvent {
    name: String,
    args: Vec<Value>,
    attachments: Vec<Bytes>,
    id: Option<u64>,
}

/// Events a socket takes while its connection handler runs, before the connection is closed.
const MAX_EARLY_EVENTS: usize = 1024;

/// The name of an event that has a handler, inline when it is short (almost every name is).
enum EventName {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Heap(Box<str>),
}

/// The longest name kept inline: with the length and the variant's tag, as big as a `String`.
const INLINE_NAME: usize = 22;

impl EventName {
    fn new(name: &str) -> EventName {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE_NAME => {
                let mut bytes = [0; INLINE_NAME];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                EventName::Inline { len, bytes }
            }
            _ => EventName::Heap(name.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            EventName::Inline { len, bytes } => &bytes[..usize::from(*len)],
            EventName::Heap(name) => name.as_bytes(),
        }
    }
}

impl Handlers {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.by_name
            .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
    }

    fn get(&self, name: &str) -> Option<EventHandler> {
        let own = self.position(name).ok().map(|i| &self.by_name[i].1);
        let fallback = self.rare.as_ref().and_then(|r| r.fallback.as_ref());
        own.or(fallback).cloned()
    }

    fn set(&mut self, name: &str, handler: EventHandler) {
        match self.position(name) {
            Ok(i) => self.by_name[i].1 = handler,
            Err(i) => self.by_name.insert(i, (EventName::new(name), handler)),
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let found = self.position(name);
        if let Ok(i) = found {
            self.by_name.remove(i);
        }
        found.is_ok()
    }

    fn any(&self) -> Option<Vec<AnyListener>> {
        self.rare
            .as_ref()
            .filter(|r| !r.any.is_empty())
            .map(|r| r.any.clone())
    }

    fn middleware(&self) -> Option<Vec<EventMiddleware>> {
        self.rare
            .as_ref()
            .filter(|r| !r.middleware.is_empty())
            .map(|r| r.middleware.clone())
    }

    fn rare(&mut self) -> &mut RareHandlers {
        self.rare.get_or_insert_with(Box::default)
    }
}

fn boxed_handler<F, Fut>(handler: F) -> EventHandler
where
    F: Fn(Arc<Socket>, Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |s, e| Box::pin(handler(s, e)))
}

/// What an acknowledgement carries: its arguments and binary attachments.
#[derive(Debug, Clone, Default)]
pub struct AckResponse {
    /// The arguments, with binary placeholders.
    pub args: Vec<Value>,
    /// The binary attachments the placeholders refer to.
    pub attachments: Vec<Bytes>,
}

impl AckResponse {
    /// The arguments deserialised (a tuple takes several arguments, anything else the first).
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, BinaryError> {
        binary::values_to_args(self.args.clone(), &self.attachments)
    }
}

/// An event as it arrived, for handlers that take the raw arguments.
#[derive(Debug)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The arguments, with binary placeholders.
    pub args: Vec<Value>,
    /// Binary attachments the placeholders refer to.
    pub attachments: Vec<Bytes>,
    /// The acknowledgement the client asked for, if any.
    pub ack: Ack,
}

impl Event {
    /// The arguments deserialised (a tuple takes several arguments, anything else the first).
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, BinaryError> {
        binary::values_to_args(self.args.clone(), &self.attachments)
    }
}

/// The answer to a client's event; it can be sent once. Dropping it sends nothing.
#[derive(Debug)]
pub struct Ack {
    socket: Option<Arc<Socket>>,
    id: Option<u64>,
}

impl Ack {
    /// Whether the client asked for an acknowledgement.
    pub fn requested(&self) -> bool {
        self.id.is_some()
    }

    /// Sends the acknowledgement with these arguments (a tuple for several, `()` for none).
    /// Without a request from the client this does nothing.
    pub fn send<T: Serialize + ?Sized>(self, args: &T) -> Result<(), EmitError> {
        let (Some(socket), Some(id)) = (self.socket, self.id) else {
            return Ok(());
        };
        let frames = typed_frames(socket.ns.name(), Some(id), None, args)?;
        socket.send_frames(frames)
    }

    /// Sends raw arguments with their attachments.
    pub fn send_raw(self, args: Vec<Value>, attachments: Vec<Bytes>) -> Result<(), EmitError> {
        let (Some(socket), Some(id)) = (self.socket, self.id) else {
            return Ok(());
        };
        let packet = Packet::ack(socket.ns.name(), id, args).with_attachments(attachments);
        socket.send_packet(&packet)
    }
}

/// Removes a pending acknowledgement's id when dropped.
struct ForgetAck {
    socket: std::sync::Weak<Socket>,
    id: u64,
}

impl Drop for ForgetAck {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.upgrade() {
            lock(&socket.acks).remove(&self.id);
        }
    }
}

/// Lets go of a leaving socket's hold on its namespace when dropped.
struct LetGo<'a>(&'a Arc<Namespace>);

impl Drop for LetGo<'_> {
    fn drop(&mut self) {
        self.0.let_go();
    }
}

/// One client connected to one namespace.
pub struct Socket {
    id: Id,
    pub(crate) ns: Arc<Namespace>,
    session: Arc<Session<SessionState>>,
    /// `None` for `{}`. A `Value` takes 72 bytes, a box 8, and most clients send no auth.
    auth: Option<Box<Value>>,
    /// [`CONNECTING`], [`SETTING_UP`], [`CONNECTED`] or [`GONE`].
    state: AtomicU8,
    /// Set when the socket is to leave once set up: it no longer counts as connected.
    leave_pending: AtomicBool,
    /// Whether this socket is one the client had before its connection dropped.
    recovered: bool,
    handlers: RwLock<Handlers>,
    on_disconnecting: Mutex<Vec<DisconnectHandler>>,
    on_disconnect: Mutex<Vec<DisconnectHandler>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<AckResponse>>>,
    /// The id the next acknowledgement asked for gets. Ids start at 1, as the Socket.IO
    /// protocol's test suite expects of a new socket.
    next_ack: AtomicU64,
    /// `None` for `{}`, as `auth`.
    data: RwLock<Option<Box<Value>>>,
    /// The program's own typed values (see [`Socket::insert_extension`]); empty, they hold no
    /// memory of their own.
    extensions: Mutex<hyper::http::Extensions>,
    issued_ms: u64,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("ns", &self.ns.name())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `None` for an empty object, which a socket's auth and data are unless the client or the
/// program fills them.
fn boxed_unless_empty(value: Value) -> Option<Box<Value>> {
    match &value {
        Value::Object(map) if map.is_empty() => None,
        _ => Some(Box::new(value)),
    }
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        session: Arc<Session<SessionState>>,
        auth: Value,
        id: Id,
        recovered: bool,
    ) -> Socket {
        Socket {
            id,
            ns,
            session,
            auth: boxed_unless_empty(auth),
            state: AtomicU8::new(CONNECTING),
            leave_pending: AtomicBool::new(false),
            recovered,
            handlers: RwLock::new(Handlers::default()),
            on_disconnecting: Mutex::new(Vec::new()),
            on_disconnect: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(1),
            data: RwLock::new(None),
            extensions: Mutex::new(hyper::http::Extensions::new()),
            issued_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The socket id: random, public (other clients may see it), unrelated to the session id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The auth object the client sent with CONNECT (`{}` when none).
    pub fn auth(&self) -> &Value {
        static EMPTY: LazyLock<Value> = LazyLock::new(|| Value::Object(serde_json::Map::new()));
        self.auth.as_deref().unwrap_or(&EMPTY)
    }

    /// Headers of the request that opened the connection.
    pub fn headers(&self) -> &HeaderMap {
        &self.session.request().headers
    }

    /// Query string of the request that opened the connection, as it came (escaped).
    pub fn query(&self) -> &str {
        self.session.request().query()
    }

    /// One parameter of that query string, decoded, as `socket.handshake.query[key]` is in
    /// Node (of a repeated key, the first: see [`crate::engineio::query`]).
    pub fn query_param(&self, key: &str) -> Option<String> {
        query::get(self.query(), key).map(Cow::into_owned)
    }

    /// Whether the client got this socket back after its connection dropped (connection state
    /// recovery): same id, rooms and data, and the events it missed were sent just ahead of
    /// the CONNECT answer (the client hands them over before its `connect` event, as with
    /// Node's server). The connect handler runs for it all the same; the middleware does not.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The client's address, when known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.session.request().remote_addr
    }

    /// What the application keeps on this socket for others to see: other nodes get it with
    /// [`fetch_sockets`](BroadcastOperator::fetch_sockets), like `socket.data` in Node. An
    /// empty object until set, as in Node (whose programs read `socket.data.user` on sockets
    /// of every node of a cluster).
    pub fn data(&self) -> Value {
        match &*self.data.read().unwrap_or_else(|e| e.into_inner()) {
            Some(data) => Value::clone(data),
            None => Value::Object(serde_json::Map::new()),
        }
    }

    /// Replaces [`data`](Self::data).
    pub fn set_data(&self, data: Value) {
        *self.data.write().unwrap_or_else(|e| e.into_inner()) = boxed_unless_empty(data);
    }

    /// Attaches a typed value of the program's own to this socket, one per type (a user, a
    /// session handle), replacing and returning the one before. Unlike [`data`](Self::data)
    /// it is no JSON and stays on this node: for what a middleware finds out and the handlers
    /// use (socketioxide's `extensions`). A recovered socket has them back, as its data (the
    /// middleware does not run for it again): with connection state recovery on, a copy of
    /// them is kept after a socket leaves until it is recovered or its `max_disconnection`
    /// has passed, so a value whose drop means something (a guard, a channel) goes then.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        lock(&self.extensions).insert(value)
    }

    /// A copy of this socket's value of type `T`, if one was attached (wrap a large or
    /// changing one in an `Arc`).
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.extensions).get::<T>().cloned()
    }

    /// Takes this socket's value of type `T` off it.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.extensions).remove::<T>()
    }

    /// Every extension, for a socket kept for recovery.
    pub(crate) fn extensions(&self) -> hyper::http::Extensions {
        lock(&self.extensions).clone()
    }

    /// The extensions of the socket this one recovers.
    pub(crate) fn set_extensions(&self, extensions: hyper::http::Extensions) {
        *lock(&self.extensions) = extensions;
    }

    /// The socket as the cluster sees it, with a handshake shaped like Node's
    /// (`headers`, `time`, `address`, `xdomain`, `secure`, `issued`, `url`, `query`, `auth`).
    pub fn info(&self) -> SocketInfo {
        let request = self.session.request();
        let headers: serde_json::Map<String, Value> = request
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), Value::from(v.to_str().ok()?))))
            .collect();
        let mut query = serde_json::Map::new();
        for (k, v) in query::pairs(request.query()) {
            query
                .entry(k.into_owned())
                .or_insert_with(|| Value::from(v.into_owned()));
        }
        let handshake = serde_json::json!({
            "headers": headers,
            "time": crate::js_date::to_utc_string(self.issued_ms),
            "address": request.remote_addr.map(|a| a.ip().to_string()),
            "xdomain": request.headers.contains_key(hyper::header::ORIGIN),
            "secure": false,
            "issued": self.issued_ms,
            "url": request.uri.to_string(),
            "query": query,
            "auth": self.auth(),
        });
        SocketInfo {
            id: self.id.to_string(),
            rooms: self.rooms(),
            data: self.data(),
            handshake,
        }
    }

    /// The transport the connection uses now.
    pub fn transport(&self) -> Transport {
        self.session.transport()
    }

    /// Whether the socket is still connected to its namespace. (A socket told to leave while
    /// its connection handler runs on another thread is no longer connected at once; it leaves,
    /// and its disconnect handlers run, once that handler has returned.)
    pub fn connected(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), SETTING_UP | CONNECTED)
            && !self.leave_pending.load(Ordering::Acquire)
    }

    /// The client is told it is connected; its connection handler is to run.
    pub(crate) fn mark_connected(&self) {
        let _ = self.state.compare_exchange(
            CONNECTING,
            SETTING_UP,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Runs the namespace's connection handler (which registers the event handlers), then
    /// the events that came meanwhile, in order: when middleware waited, the rest of the
    /// connect runs on a task of its own, and a client told it is connected may have emitted
    /// already.
    pub(crate) fn set_up(self: &Arc<Self>) {
        let _here = SettingUpHere::enter(self);
        if let Some(on_connect) = self.ns.connect_handler() {
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_connect(self.clone())));
            if ran.is_err() {
                tracing::error!(socket = %self.id, "a connection handler panicked");
            }
        }
        loop {
            let early = {
                let mut handlers = self.handlers_mut();
                let early = handlers
                    .rare
                    .as_mut()
                    .map(|rare| std::mem::take(&mut rare.early))
                    .unwrap_or_default();
                if early.is_empty() {
                    let leaving = handlers.rare.as_mut().and_then(|rare| rare.leaving.take());
                    if let Some(reason) = leaving {
                        drop(handlers);
                        self.close(reason);
                        return;
                    }
                    // Under the lock that an event arriving now takes to wait here.
                    let _ = self.state.compare_exchange(
                        SETTING_UP,
                        CONNECTED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    return;
                }
                early
            };
            for e in early {
                self.dispatch_now(e.name, e.args, e.attachments, e.id);
            }
        }
    }

    /// Leaves for a reason that came from the client, its connection, or another thread of the
    /// server. While the socket is being set up (on another thread, or as soon as its
    /// middleware is done), it leaves once that is over, after the events that came before:
    /// the connection handler registers the disconnect handlers, which must hear of it (Node
    /// runs the handler before it reads the next packet).
    pub(crate) fn close_when_set_up(self: &Arc<Self>, reason: DisconnectReason) {
        if self.state.load(Ordering::Acquire) < CONNECTED {
            let mut handlers = self.handlers_mut();
            // Checked again under the lock, which `set_up` holds when it ends the wait.
            if self.state.load(Ordering::Acquire) < CONNECTED {
                handlers.rare().leaving.get_or_insert(reason);
                self.leave_pending.store(true, Ordering::Release);
                drop(handlers);
                // The namespace is the client's to join again meanwhile (socket.io-client's
                // `disconnect(); connect()`).
                self.session.data().remove_socket(self.ns.name(), self.id);
                return;
            }
        }
        self.close(reason);
    }

    /// Gives up a socket whose CONNECT did not go through: rooms its middleware joined are
    /// left, and it joins none from now on.
    pub(crate) fn abandon(&self) {
        self.state.store(GONE, Ordering::Release);
        self.ns.adapter().leave_all(self.id);
    }

    /// Handles an event with typed arguments: a tuple takes several arguments, any other type
    /// the first. Arguments that do not deserialise are logged (at `debug`: any client can send
    /// them) and, when the client asked for an acknowledgement, answered with `{"error": ...}`;
    /// the handler is not called.
    ///
    /// Handlers start in the order the events arrive. One that awaits continues on its own task,
    /// so a slow handler never holds up the client's other traffic. An event has one handler:
    /// another `on` (or [`on_raw`](Self::on_raw)) for its name replaces it, and
    /// [`off`](Self::off) removes it. To see every event beside its handler, use
    /// [`on_any`](Self::on_any).
    pub fn on<T, F, Fut>(&self, event: &str, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Arc<Socket>, T, Ack) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = event.to_owned();
        self.on_raw(event, move |socket: Arc<Socket>, event: Event| -> BoxFuture {
            match binary::values_to_args::<T>(event.args, &event.attachments) {
                Ok(args) => Box::pin(handler(socket, args, event.ack)),
                Err(e) => {
                    tracing::debug!(socket = %socket.id, event = %name, error = %e, "arguments do not deserialise");
                    let _ = event.ack.send(&serde_json::json!({ "error": format!("invalid arguments: {e}") }));
                    Box::pin(async {})
                }
            }
        });
    }

    /// Handles an event with its raw arguments and attachments (replacing any handler the
    /// name had, as [`on`](Self::on) does).
    pub fn on_raw<F, Fut>(&self, event: &str, handler: F)
    where
        F: Fn(Arc<Socket>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers_mut().set(event, boxed_handler(handler));
    }

    /// Removes the handler of an event (Node's `socket.off(event)`, or
    /// `removeAllListeners(event)`): its events go to the fallback, if any, or are dropped.
    /// Returns whether the name had a handler.
    pub fn off(&self, event: &str) -> bool {
        self.handlers_mut().remove(event)
    }

    /// Handles every event that has no handler of its own, with its raw arguments: a program
    /// that learns event names only at run time (a gateway, a relay, a logger of what clients
    /// send) sees them here, in [`Event::name`]. Without it such events are dropped, and an
    /// acknowledgement they ask for is never sent, as with Node's server.
    pub fn on_fallback<F, Fut>(&self, handler: F)
    where
        F: Fn(Arc<Socket>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers_mut().rare().fallback = Some(boxed_handler(handler));
    }

    /// Sees every event the client sends, its name and raw arguments, before the event's
    /// handler runs (Node's `socket.onAny`): for logging, metrics or tracing. Several may be
    /// added; they run in order, on the task that read the event, so they must not block.
    pub fn on_any<F>(&self, listener: F)
    where
        F: Fn(&Arc<Socket>, &str, &[Value]) + Send + Sync + 'static,
    {
        self.handlers_mut().rare().any.push(Arc::new(listener));
    }

    /// Adds event middleware (Node's `socket.use`): every event the client sends passes through
    /// each in the order they were added, after the [`on_any`](Self::on_any) listeners and before
    /// its handler, which is looked up by the name the event has once all have passed it. A
    /// middleware may change the event or refuse it: a refused event reaches no handler, and an
    /// acknowledgement it asked for is never sent, as with Node's server. To tell the client, or
    /// to disconnect it, a middleware uses the socket it is given before refusing.
    ///
    /// Middleware that completes without waiting keeps events in the order they arrived; one
    /// that waits lets the client's later events go ahead of the one it holds.
    pub fn use_event_middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(Arc<Socket>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Event, EventRefused>> + Send + 'static,
    {
        let middleware: EventMiddleware = Arc::new(move |s, e| Box::pin(middleware(s, e)));
        self.handlers_mut().rare().middleware.push(middleware);
    }

    fn handlers_mut(&self) -> RwLockWriteGuard<'_, Handlers> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs when the socket is about to leave: it is still in its rooms.
    pub fn on_disconnecting<F>(&self, handler: F)
    where
        F: FnOnce(Arc<Socket>, DisconnectReason) + Send + 'static,
    {
        lock(&self.on_disconnecting).push(Box::new(handler));
    }

    /// Runs once the socket has left its namespace and rooms.
    pub fn on_disconnect<F>(&self, handler: F)
    where
        F: FnOnce(Arc<Socket>, DisconnectReason) + Send + 'static,
    {
        lock(&self.on_disconnect).push(Box::new(handler));
    }

    /// Sends an event to this client. Arguments: a tuple for several, `()` for none, anything
    /// else is one argument; `Bytes` anywhere inside becomes a binary attachment. A
    /// `serde_json::Value::Null` serialises as `()` does, so it sends no argument either: one
    /// `null` argument is `&(Value::Null,)` (or `&None::<T>`).
    ///
    /// With connection state recovery, an event for a socket whose connection has dropped is
    /// kept, as Node keeps it: the client gets it if it comes back in time. Without, it is
    /// refused with [`EmitError::Disconnected`].
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        let frames = typed_frames(self.ns.name(), None, Some(event), args)?;
        self.send_event(frames)
    }

    /// Sends an event that may be dropped (Node's `socket.volatile.emit`): when the client is
    /// behind (its queue holds more than a few packets), the event is not queued, and the
    /// error says so. For what the next one replaces, such as positions in a game. Not kept
    /// for connection state recovery.
    pub fn emit_volatile<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<(), EmitError> {
        if self.left() {
            return Err(EmitError::Disconnected);
        }
        let frames = typed_frames(self.ns.name(), None, Some(event), args)?;
        self.session.send_volatile(frames).map_err(EmitError::from)
    }

    /// Sends an event with raw arguments and attachments.
    pub fn emit_raw(
        &self,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        check_event_name(event)?;
        let packet = Packet::event(self.ns.name(), event, args).with_attachments(attachments);
        self.send_event(encode_frames(&packet))
    }

    /// Sends an event that asks for no acknowledgement: with connection state recovery, it is
    /// kept for this socket's return (once the socket is connected).
    fn send_event(&self, frames: Vec<Frame>) -> Result<(), EmitError> {
        if self.left() {
            if !self.ns.recovers() {
                return Err(EmitError::Disconnected);
            }
            // As Node keeps it: a handler that answers after the client's connection dropped
            // reaches the client when it comes back (or at once, if it is back already).
            return self.ns.deliver_to_socket(self.id, frames, |frames| {
                match self.ns.socket(self.id) {
                    Some(back) if !back.left() => back.session.send_all(frames)?,
                    _ => {}
                }
                Ok(())
            });
        }
        if self.state.load(Ordering::Acquire) == CONNECTING {
            // From a middleware: sent ahead of the CONNECT answer, as Node does (the client
            // holds it until it is connected). Not kept for recovery: the socket has no
            // private id yet.
            return self.session.send_all(frames).map_err(EmitError::from);
        }
        self.ns.deliver_to_socket(self.id, frames, |frames| {
            self.session.send_all(frames).map_err(EmitError::from)
        })
    }

    /// Sends an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack<T, R>(
        self: &Arc<Self>,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<R, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        check_event_name(event)?;
        let packet = binary::event_packet(self.ns.name(), event, args).map_err(EmitError::from)?;
        let response = self.send_with_ack(packet, timeout)?.await?;
        response.args().map_err(AckError::Decode)
    }

    /// Sends an event with raw arguments and waits for the raw acknowledgement.
    pub async fn emit_raw_with_ack(
        self: &Arc<Self>,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<AckResponse, AckError> {
        check_event_name(event)?;
        let packet = Packet::event(self.ns.name(), event, args).with_attachments(attachments);
        self.send_with_ack(packet, timeout)?.await
    }

    /// Sends a packet that asks for an acknowledgement; the returned future resolves with it.
    pub(crate) fn send_with_ack(
        self: &Arc<Self>,
        packet: Packet,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<AckResponse, AckError>> + Send + 'static, EmitError>
    {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut acks = lock(&self.acks);
            if acks.len() >= self.ns.max_pending_acks {
                tracing::debug!(socket = %self.id, "too many acknowledgements pending");
                return Err(EmitError::TooManyPendingAcks);
            }
            acks.insert(id, tx);
        }
        // Forgets the id however this ends (the send failed, the answer came, the wait timed
        // out or its future was dropped), or unanswered acks would pile up for the socket's
        // lifetime.
        let forget = ForgetAck {
            socket: Arc::downgrade(self),
            id,
        };
        self.send_packet(&packet.with_id(id))?;
        Ok(async move {
            let _forget = forget;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => Err(AckError::Disconnected),
                Err(_) => Err(AckError::Timeout),
            }
        })
    }

    /// Joins a room of this namespace (while the socket is connected or connecting: a handler
    /// that joins after its socket left adds nothing that would outlive it).
    pub fn join(&self, room: &str) {
        self.ns.adapter().join(self.id, room);
        // Checked after the join: a socket that leaves meanwhile either left this room with
        // the rest, or is seen gone here.
        if self.state.load(Ordering::Acquire) == GONE {
            self.ns.adapter().leave(self.id, room);
        }
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        self.ns.adapter().leave(self.id, room);
    }

    /// The rooms this socket is in, its own-id room first; none once it has left (its
    /// disconnecting handlers still see them all), as Node's `socket.rooms`.
    pub fn rooms(&self) -> Vec<String> {
        if self.state.load(Ordering::Acquire) == GONE && self.ns.socket(self.id).is_none() {
            return Vec::new();
        }
        let mut rooms = vec![self.id.to_string()];
        rooms.extend(self.ns.adapter().rooms_of(self.id));
        rooms
    }

    /// A broadcast to a room, this socket left out.
    pub fn to(&self, room: &str) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to the namespace, this socket left out.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).except(self.id.as_str())
    }

    /// Disconnects the socket from its namespace; the connection stays for other namespaces.
    /// From another thread while its connection handler runs, the socket leaves once that
    /// handler has registered the disconnect handlers.
    pub fn disconnect(self: &Arc<Self>) {
        if self.connected() {
            let _ = self.send_packet(&Packet::disconnect(self.ns.name()));
        }
        let reason = DisconnectReason::ServerNamespaceDisconnect;
        if self.state.load(Ordering::Acquire) == SETTING_UP && !SettingUpHere::is(self) {
            self.close_when_set_up(reason);
        } else {
            self.close(reason);
        }
    }

    /// Closes the client's whole connection under it, every namespace included (Node's
    /// `socket.conn.close()`): the client sees its transport close and reconnects by itself;
    /// with connection state recovery it gets its sockets back.
    pub fn close_connection(&self) {
        self.session.close(CloseReason::ForcedClose);
    }

    /// Disconnects every namespace of the client's connection, each with a DISCONNECT packet,
    /// then closes the connection (Node's `socket.disconnect(true)`): the client is told it was
    /// disconnected and does not reconnect by itself, nor recover these sockets. On a socket
    /// that has left, this does nothing (as in Node).
    pub fn disconnect_and_close(&self) {
        if !self.connected() {
            // Node's `disconnect(true)` on a socket that left: the client's other namespaces
            // are not this socket's to end.
            return;
        }
        for socket in self.session.data().sockets() {
            socket.disconnect();
        }
        self.session.close(CloseReason::ForcedClose);
    }

    /// Encodes a packet and queues it with its attachments.
    pub(crate) fn send_packet(&self, packet: &Packet) -> Result<(), EmitError> {
        self.send_frames(encode_frames(packet))
    }

    /// Sends an encoded event or acknowledgement.
    fn send_frames(&self, frames: Vec<Frame>) -> Result<(), EmitError> {
        if self.left() {
            return Err(EmitError::Disconnected);
        }
        self.session.send_all(frames).map_err(EmitError::from)
    }

    /// Whether the socket has left its namespace, or is to leave once set up: nothing more is
    /// sent to it.
    fn left(&self) -> bool {
        self.state.load(Ordering::Acquire) == GONE || self.leave_pending.load(Ordering::Acquire)
    }

    pub(crate) fn session(&self) -> &Arc<Session<SessionState>> {
        &self.session
    }

    /// Runs the handler for an event from the client, or keeps the event for
    /// [`set_up`](Self::set_up) while it runs.
    pub(crate) fn dispatch_event(
        self: &Arc<Self>,
        name: String,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        id: Option<u64>,
    ) {
        if self.state.load(Ordering::Acquire) < CONNECTED {
            let mut handlers = self.handlers_mut();
            // Checked again under the lock, which `set_up` holds when it ends the wait.
            if self.state.load(Ordering::Acquire) < CONNECTED {
                let early = &mut handlers.rare().early;
                if early.len() >= MAX_EARLY_EVENTS {
                    drop(handlers);
                    tracing::debug!(socket = %self.id, "too many events before the socket was set up");
                    self.session.close(CloseReason::ParseError);
                    return;
                }
                early.push(EarlyEvent {
                    name,
                    args,
                    attachments,
                    id,
                });
                return;
            }
        }
        self.dispatch_now(name, args, attachments, id);
    }

    fn dispatch_now(
        self: &Arc<Self>,
        name: String,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        id: Option<u64>,
    ) {
        let (any, middleware) = {
            let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
            (handlers.any(), handlers.middleware())
        };
        for listener in any.iter().flatten() {
            let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                listener(self, &name, &args)
            }));
            if seen.is_err() {
                tracing::error!(socket = %self.id, event = %name, "an on_any listener panicked");
            }
        }
        let event = Event {
            name,
            args,
            attachments,
            ack: Ack {
                socket: id.map(|_| self.clone()),
                id,
            },
        };
        let Some(middleware) = middleware else {
            // The handler's own code runs here, on the connection's task: a panic in it is the
            // program's mistake and must not end the connection (its future is run the same way).
            let started =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(event)));
            match started {
                Ok(Some(handling)) => run_inline(handling),
                Ok(None) => {}
                Err(_) => tracing::error!(socket = %self.id, "an event handler panicked"),
            }
            return;
        };
        let socket = self.clone();
        run_inline(async move {
            let mut event = event;
            for pass in middleware {
                event = match pass(socket.clone(), event).await {
                    Ok(event) => event,
                    Err(refused) => {
                        tracing::debug!(socket = %socket.id, reason = %refused, "event middleware refused an event");
                        return;
                    }
                };
            }
            // The socket may have left while the middleware waited: Node drops the event then.
            if !socket.connected() {
                return;
            }
            if let Some(handling) = socket.handle(event) {
                handling.await;
            }
        });
    }

    /// The handler's future for an event, or `None` when its name has no handler.
    fn handle(self: &Arc<Self>, event: Event) -> Option<BoxFuture> {
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&event.name);
        let Some(handler) = handler else {
            tracing::trace!(socket = %self.id, "no handler for an event");
            return None;
        };
        Some(handler(self.clone(), event))
    }

    /// An acknowledgement from the client arrived.
    pub(crate) fn resolve_ack(&self, id: u64, args: Vec<Value>, attachments: Vec<Bytes>) {
        if let Some(tx) = lock(&self.acks).remove(&id) {
            let _ = tx.send(AckResponse { args, attachments });
        }
    }

    /// Leaves the namespace: disconnecting handlers, rooms, disconnect handlers, once.
    pub(crate) fn close(self: &Arc<Self>, reason: DisconnectReason) {
        let leaving = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                matches!(state, SETTING_UP | CONNECTED).then_some(GONE)
            });
        if leaving.is_err() {
            return;
        }
        // Taken out first: a handler may add another, and must find the list unlocked.
        let disconnecting = std::mem::take(&mut *lock(&self.on_disconnecting));
        for handler in disconnecting {
            self.run_disconnect_handler(handler, reason, "disconnecting");
        }
        let kept = self.ns.keep_for_recovery(self, reason.is_recoverable());
        self.ns.remove(self);
        self.ns.forget_socket(self.id, kept);
        self.session.data().remove_socket(self.ns.name(), self.id);
        lock(&self.acks).clear();
        // The hold its CONNECT passed on, let go last (a handler may still reach the namespace
        // by name), also when a handler panics: a namespace made on demand may go with it.
        let _hold = LetGo(&self.ns);
        let disconnect = std::mem::take(&mut *lock(&self.on_disconnect));
        for handler in disconnect {
            self.run_disconnect_handler(handler, reason, "disconnect");
        }
        *self.handlers_mut() = Handlers::default();
    }

    /// Runs a program's disconnect handler. One that panics must not cut the socket's cleanup
    /// short (the connection's own task runs it): it would stay in its rooms for good.
    fn run_disconnect_handler(
        self: &Arc<Self>,
        handler: DisconnectHandler,
        reason: DisconnectReason,
        which: &str,
    ) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler(self.clone(), reason)
        }));
        if ran.is_err() {
            tracing::error!(socket = %self.id, %reason, "a {which} handler panicked");
        }
    }
}

thread_local! {
    /// The socket whose connection handler this thread is running (its address), or 0.
    static SETTING_UP_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the thread as setting up a socket, for as long as it lives.
struct SettingUpHere(usize);

impl SettingUpHere {
    fn enter(socket: &Arc<Socket>) -> SettingUpHere {
        let previous = SETTING_UP_HERE.replace(Arc::as_ptr(socket) as usize);
        SettingUpHere(previous)
    }

    /// Whether this thread is running `socket`'s connection handler.
    fn is(socket: &Arc<Socket>) -> bool {
        SETTING_UP_HERE.get() == Arc::as_ptr(socket) as usize
    }
}

impl Drop for SettingUpHere {
    fn drop(&mut self) {
        SETTING_UP_HERE.set(self.0);
    }
}

/// A socket's states, in order: its CONNECT in the middleware; connected, its connection
/// handler running; connected; left (or refused).
const CONNECTING: u8 = 0;
const SETTING_UP: u8 = 1;
const CONNECTED: u8 = 2;
const GONE: u8 = 3;

/// The engine frames of a packet: its text, then its attachments.
pub(crate) fn encode_frames(packet: &Packet) -> Vec<Frame> {
    let mut text = Vec::with_capacity(1 + packet.size_hint());
    text.push(b'4');
    packet.encode_into(&mut text);
    frames(text, packet.attachments.iter().cloned())
}

/// The frames of an event (`event` is `Some`) or acknowledgement, encoded straight from typed
/// arguments (see [`binary::encode_text`]).
pub(crate) fn typed_frames<T: Serialize + ?Sized>(
    nsp: &str,
    id: Option<u64>,
    event: Option<&str>,
    args: &T,
) -> Result<Vec<Frame>, EmitError> {
    if let Some(event) = event {
        check_event_name(event)?;
    }
    let mut text = Vec::with_capacity(128);
    text.push(b'4');
    let attachments = binary::encode_text(&mut text, nsp, id, event, args)?;
    Ok(frames(text, attachments.into_iter()))
}

/// Refuses the names that clients keep for their own events, as Node's `emit` does.
pub(crate) fn check_event_name(event: &str) -> Result<(), EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(EmitError::ReservedEventName(event.to_owned()));
    }
    Ok(())
}

/// An Engine.IO message (`text`, its type included) and its attachments as frames.
fn frames(text: Vec<u8>, attachments: impl ExactSizeIterator<Item = Bytes>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    // Everything written is UTF-8: ASCII digits and punctuation, the namespace (a `str`) and
    // serde_json's output.
    match String::from_utf8(text) {
        Ok(text) => frames.push(Frame::Text(text.into())),
        Err(_) => return frames,
    }
    frames.extend(attachments.map(Frame::Binary));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that answers with its tag, so that a test can tell which one it got.
    fn tagged(tag: &'static str) -> EventHandler {
        Arc::new(move |_: Arc<Socket>, event: Event| -> BoxFuture {
            let _ = event.ack.send(&tag);
            Box::pin(async {})
        })
    }

    fn same(a: &Option<EventHandler>, b: &EventHandler) -> bool {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
    }

    #[test]
    fn handlers_are_found_by_their_whole_name_and_a_second_one_replaces_the_first() {
        let long = "a-name-longer-than-twenty-two-bytes";
        let names = [
            "ping",
            "login",
            "",
            "é",
            "roomMessage",
            long,
            "log",
            "loginx",
        ];
        let mut handlers = Handlers::default();
        let made: Vec<EventHandler> = names.iter().map(|_| tagged("first")).collect();
        for (name, handler) in names.iter().zip(&made) {
            handlers.set(name, handler.clone());
        }
        for (name, handler) in names.iter().zip(&made) {
            assert!(same(&handlers.get(name), handler), "{name:?}");
        }
        assert!(handlers.get("lo").is_none());
        assert!(handlers.get(&long[..22]).is_none());
        let again = tagged("second");
        handlers.set("login", again.clone());
        assert!(same(&handlers.get("login"), &again));
        assert_eq!(handlers.by_name.len(), names.len());
        // Names with no handler of their own go to the fallback.
        let fallback = tagged("fallback");
        handlers.rare().fallback = Some(fallback.clone());
        assert!(same(&handlers.get("other"), &fallback));
        assert!(same(&handlers.get("ping"), &made[0]));
    }
}
