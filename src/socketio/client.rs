//! The Socket.IO side of one Engine.IO connection: decodes packets, connects namespaces, and
//! routes each packet to its socket.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde_json::Value;

use super::error::DisconnectReason;
use super::namespace::Namespace;
use super::packet::{Decoder, Packet, PacketKind, json_len};
use super::server::{ServerState, SocketIoConfig};
use super::socket::{Socket, encode_frames};
use crate::engineio::{CloseReason, Frame, Handler, Message, Session, source};
use crate::id::Id;

/// Runs a future on the caller's task until it first waits; only then is it moved to a task of
/// its own. Handlers therefore start in arrival order, and the common handler that never waits
/// costs no task at all. Called from a thread without a runtime (a program's own thread), a
/// future that waits has nowhere to go: it is dropped with a warning.
pub(crate) fn run_inline<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => {}
        Ok(Poll::Pending) => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(fut);
            }
            Err(_) => tracing::warn!("work that waits was started outside a runtime; dropped"),
        },
        Err(_) => tracing::error!("a handler panicked; the connection goes on"),
    }
}

/// Per-connection state of the Socket.IO layer.
#[derive(Default)]
pub struct SessionState {
    inbound: Mutex<Inbound>,
    /// One per namespace joined, found by the namespace's name: a connection rarely joins more
    /// than one or two, and a list without keys is the smallest thing every connection keeps.
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// The task that closes the connection if it joins no namespace in time; ended as soon as
    /// one is joined, rather than left waiting out the timeout for every connection.
    connect_deadline: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// CONNECTs whose middleware has not finished.
    connecting: AtomicUsize,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attachments held for incomplete packets, over all connections and per client address.
#[derive(Default)]
pub(crate) struct AttachmentBudget {
    total: AtomicUsize,
    /// Addresses that hold some now; an address's entry goes when it holds nothing.
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

impl AttachmentBudget {
    /// Counts `len` more bytes held for a connection from `addr`; whether they stay within the
    /// server's limit and the address's. They are counted either way: the caller gives them
    /// back with the connection's other bytes.
    fn take(&self, addr: Option<IpAddr>, len: usize, config: &SocketIoConfig) -> bool {
        let total = self.total.fetch_add(len, Ordering::Relaxed) + len;
        let Some(addr) = addr else {
            return total <= config.max_buffered_attachment_bytes;
        };
        let mut by_address = lock(&self.by_address);
        let held = by_address.entry(addr).or_default();
        *held += len;
        total <= config.max_buffered_attachment_bytes
            && *held <= config.max_buffered_attachment_bytes_per_address
    }

    fn give_back(&self, addr: Option<IpAddr>, len: usize) {
        if len == 0 {
            return;
        }
        self.total.fetch_sub(len, Ordering::Relaxed);
        if let Some(addr) = addr {
            let mut by_address = lock(&self.by_address);
            if let Some(held) = by_address.get_mut(&addr) {
                *held = held.saturating_sub(len);
                if *held == 0 {
                    by_address.remove(&addr);
                }
            }
        }
    }
}

/// The decoder of a connection, and the bytes of the attachments it holds for an incomplete
/// packet that are counted against the server's budget.
#[derive(Default)]
struct Inbound {
    decoder: Decoder,
    counted: usize,
    /// The session ended: a message still on its way here is dropped, not counted.
    closed: bool,
}

impl Inbound {
    /// Drops any incomplete packet and gives its bytes back to the budget.
    fn reset(&mut self, budget: &AttachmentBudget, addr: Option<IpAddr>) {
        self.decoder.reset();
        self.uncount(budget, addr);
    }

    fn uncount(&mut self, budget: &AttachmentBudget, addr: Option<IpAddr>) {
        budget.give_back(addr, std::mem::take(&mut self.counted));
    }
}

impl SessionState {
    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        lock(&self.sockets)
            .iter()
            .find(|s| s.namespace().name() == nsp)
            .cloned()
    }

    /// The connection's sockets, one per namespace it joined.
    pub(crate) fn sockets(&self) -> Vec<Arc<Socket>> {
        lock(&self.sockets).clone()
    }

    pub(crate) fn remove_socket(&self, nsp: &str, id: Id) {
        lock(&self.sockets).retain(|s| !(s.id() == id && s.namespace().name() == nsp));
    }

    fn has_sockets(&self) -> bool {
        !lock(&self.sockets).is_empty()
    }

    /// Namespaces joined, and CONNECTs still in their middleware.
    fn namespaces_in_use(&self) -> usize {
        lock(&self.sockets).len() + self.connecting.load(Ordering::Acquire)
    }
}

/// Counts a CONNECT as under way for as long as it lives.
struct Connecting(SioSession);

impl Connecting {
    fn new(session: &SioSession) -> Connecting {
        session.data().connecting.fetch_add(1, Ordering::AcqRel);
        Connecting(session.clone())
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.0.data().connecting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The Engine.IO handler that speaks Socket.IO.
pub struct Client {
    pub(crate) state: Arc<ServerState>,
}

type SioSession = Arc<Session<SessionState>>;

/// The source the connection came from, which the attachment budget shares out by.
fn client_ip(session: &SioSession) -> Option<IpAddr> {
    session.request().remote_addr.map(|a| source(a.ip()))
}

impl Handler for Client {
    type Data = SessionState;

    fn on_open(&self, session: &SioSession) {
        lock(&session.data().inbound).decoder =
            Decoder::with_limits(self.state.config.decoder_limits());
        // A connection that joins no namespace in time is closed.
        let timeout = self.state.config.connect_timeout;
        let deadline = tokio::spawn({
            let session = session.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        if !session.data().has_sockets() {
                            tracing::debug!(session = %session.log_id(), "no namespace joined in time");
                            session.close(CloseReason::ForcedClose);
                        }
                    }
                    _ = session.closed() => {}
                }
            }
        });
        *lock(&session.data().connect_deadline) = Some(deadline);
    }

    fn on_message(&self, session: &SioSession, message: Message) {
        let budget = &self.state.buffered_attachments;
        let addr = client_ip(session);
        let (decoded, pending_nsp) = {
            let mut inbound = lock(&session.data().inbound);
            if inbound.closed {
                return;
            }
            let (decoded, len) = match message {
                Message::Text(text) => (inbound.decoder.decode_text(&text), 0),
                Message::Binary(data) => {
                    let len = data.len();
                    (inbound.decoder.decode_binary(data), len)
                }
            };
            if !inbound.decoder.is_reconstructing() {
                inbound.uncount(budget, addr);
            } else if len > 0 {
                // Held until the packet's last attachment arrives: counted against the budget.
                inbound.counted += len;
                if !budget.take(addr, len, &self.state.config) {
                    inbound.reset(budget, addr);
                    drop(inbound);
                    tracing::warn!(session = %session.log_id(), "binary attachments over the server's budget or this address's share, closing the connection");
                    session.close(CloseReason::ParseError);
                    return;
                }
            }
            (decoded, inbound.decoder.pending_nsp().map(str::to_owned))
        };
        match decoded {
            Ok(Some(packet)) => self.on_packet(session, packet),
            Ok(None) => {
                // Attachments are buffered only for a namespace the client has joined: for any
                // other the packet would be refused once complete, after holding up to
                // max_attachments × maxPayload bytes for nothing. Refuse it at its header.
                if let Some(nsp) = pending_nsp {
                    if session.data().socket(&nsp).is_none() {
                        tracing::debug!(session = %session.log_id(), %nsp, "attachments for a namespace not joined");
                        lock(&session.data().inbound).reset(budget, addr);
                        close_for_protocol_error(session);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(session = %session.log_id(), error = %e, "invalid Socket.IO packet");
                close_for_protocol_error(session);
            }
        }
    }

    fn on_close(&self, session: &SioSession, reason: CloseReason) {
        {
            let mut inbound = lock(&session.data().inbound);
            let addr = client_ip(session);
            inbound.reset(&self.state.buffered_attachments, addr);
            inbound.closed = true;
        }
        close_sockets(session, DisconnectReason::from(reason));
    }
}

impl Client {
    fn on_packet(&self, session: &SioSession, packet: Packet) {
        let existing = session.data().socket(&packet.nsp);
        match (packet.kind, existing) {
            (PacketKind::Connect, None) => self.connect(session, packet),
            (PacketKind::Event | PacketKind::BinaryEvent, Some(socket)) => {
                let id = packet.id;
                if let Some((name, args, attachments)) = packet.into_event() {
                    socket.dispatch_event(name, args, attachments, id);
                }
            }
            (PacketKind::Ack | PacketKind::BinaryAck, Some(socket)) => {
                if let Some((id, args, attachments)) = packet.into_ack() {
                    socket.resolve_ack(id, args, attachments);
                }
            }
            (PacketKind::Disconnect, Some(socket)) => {
                socket.close_when_set_up(DisconnectReason::ClientNamespaceDisconnect)
            }
            (kind, _) => {
                // A second CONNECT, or a packet for a namespace the client has not joined.
                tracing::debug!(session = %session.log_id(), ?kind, nsp = %packet.nsp, "packet out of place");
                close_for_protocol_error(session);
            }
        }
    }

    fn connect(&self, session: &SioSession, packet: Packet) {
        let nsp = packet.nsp;
        if session.data().namespaces_in_use() >= self.state.config.max_namespaces_per_connection {
            tracing::debug!(session = %session.log_id(), %nsp, "too many namespaces on one connection");
            let refusal = Packet::connect_error(&nsp, "Too many namespaces", None);
            let _ = session.send_all(encode_frames(&refusal));
            return;
        }
        let Some(hold) = self.state.namespace(&nsp) else {
            let refusal = Packet::connect_error(&nsp, "Invalid namespace", None);
            let _ = session.send_all(encode_frames(&refusal));
            return;
        };
        let auth = match packet.data {
            Some(Value::Object(map)) => Value::Object(map),
            _ => Value::Object(Default::default()),
        };
        if json_len(&auth) > self.state.config.max_auth_bytes {
            tracing::debug!(session = %session.log_id(), %nsp, "auth payload too large");
            let refusal = Packet::connect_error(&nsp, "Auth payload too large", None);
            let _ = session.send_all(encode_frames(&refusal));
            return;
        }
        let ns = hold.namespace().clone();
        if ns.recovers() && self.connect_recovered(session, &ns, &auth) {
            hold.keep();
            return;
        }
        let socket = Arc::new(Socket::new(
            ns.clone(),
            session.clone(),
            auth,
            Id::random(),
            false,
        ));
        let connecting = Connecting::new(session);
        let session = session.clone();
        run_inline(async move {
            if let Err(refusal) = ns.run_middleware(&socket).await {
                // Rooms a middleware joined go with the socket (Node cleans up the same way).
                socket.abandon();
                let packet = Packet::connect_error(&nsp, &refusal.message, refusal.data);
                let _ = session.send_all(encode_frames(&packet));
                return;
            }
            if session.is_closed() {
                socket.abandon();
                return;
            }
            let taken = take_namespace(&session, &nsp, &socket);
            // Counted among the connection's sockets from here, or not at all.
            drop(connecting);
            if !taken {
                socket.abandon();
                return;
            }
            // Registered before it can be reached: every offset it gets counts as its own.
            let pid = ns.register_pid(socket.id());
            // Queued before it can be reached, so that no broadcast comes ahead of it.
            let _ = session.send_all(encode_frames(&connect_packet(&nsp, socket.id(), pid)));
            session.end_batch();
            ns.add(&socket);
            socket.mark_connected();
            hold.keep();
            if let Some(reason) = session.close_reason() {
                // The connection ended while the middleware ran.
                socket.close(DisconnectReason::from(reason));
                return;
            }
            socket.set_up();
        });
    }

    /// A CONNECT whose auth names a socket the namespace can recover: the socket is back at
    /// once, with its rooms and data, and the events it missed go just ahead of the CONNECT
    /// answer. It does not go through the middleware again (Node's default): it passed them
    /// when it first connected. Missed events that would not fit in the client's outbound queue
    /// make it connect afresh instead, rather than be dropped as a client that does not read.
    fn connect_recovered(&self, session: &SioSession, ns: &Arc<Namespace>, auth: &Value) -> bool {
        if session.is_closed() {
            return false;
        }
        let nsp = ns.name();
        let socket = ns.restore(auth, |restored| {
            let connect = encode_frames(&connect_packet(nsp, restored.sid, Some(restored.pid)));
            let connect_bytes: usize = connect.iter().map(Frame::len).sum();
            if !session.has_room_for(
                connect.len() + restored.missed.len(),
                connect_bytes + restored.missed_bytes,
            ) {
                tracing::debug!(session = %session.log_id(), missed = restored.missed.len(), "too much missed to recover");
                return None;
            }
            let socket = Arc::new(Socket::new(
                ns.clone(),
                session.clone(),
                auth.clone(),
                restored.sid,
                true,
            ));
            socket.set_data(restored.kept.data.clone());
            socket.set_extensions(restored.kept.extensions.clone());
            if !take_namespace(session, nsp, &socket) {
                return None;
            }
            // Queued before the socket can be reached, so that nothing sent to it (volatile or
            // with an ack, which the store does not order) comes ahead of these. The missed
            // events go first, as Node's server sends them: the client holds them until the
            // CONNECT answer and hands them to the program before its `connect` event.
            let _ = session.send_all(restored.missed.iter().cloned());
            let _ = session.send_all(connect);
            session.end_batch();
            ns.add(&socket);
            for room in &restored.kept.rooms {
                socket.join(room);
            }
            socket.mark_connected();
            Some(socket)
        });
        let Some(socket) = socket else {
            return false;
        };
        tracing::debug!(session = %session.log_id(), socket = %socket.id(), "socket recovered");
        if let Some(reason) = session.close_reason() {
            socket.close(DisconnectReason::from(reason));
        } else {
            socket.set_up();
        }
        true
    }
}

/// Closes a connection whose client broke the Socket.IO protocol (a packet that does not
/// decode, or one out of place). Its sockets leave with the reason Node's server gives them,
/// "forced close" (one the client may recover from, as there), and the connection is counted
/// among the protocol errors.
fn close_for_protocol_error(session: &SioSession) {
    close_sockets(session, DisconnectReason::ForcedClose);
    session.close(CloseReason::ParseError);
}

/// Takes every socket of the connection out of it, each leaving for `reason`.
fn close_sockets(session: &SioSession, reason: DisconnectReason) {
    let sockets = std::mem::take(&mut *lock(&session.data().sockets));
    for socket in sockets {
        socket.close_when_set_up(reason);
    }
}

/// Makes `socket` the connection's socket of namespace `nsp`, unless it has one already, and
/// ends the wait for a first CONNECT.
fn take_namespace(session: &SioSession, nsp: &str, socket: &Arc<Socket>) -> bool {
    {
        let mut sockets = lock(&session.data().sockets);
        if sockets.iter().any(|s| s.namespace().name() == nsp) {
            return false;
        }
        // Room for this one only: most connections never join a second namespace.
        sockets.reserve_exact(1);
        sockets.push(socket.clone());
    }
    if let Some(deadline) = lock(&session.data().connect_deadline).take() {
        deadline.abort();
    }
    true
}

/// The answer to a CONNECT: the socket's id, and its private id when connection state
/// recovery is on.
fn connect_packet(nsp: &str, sid: Id, pid: Option<Id>) -> Packet {
    match pid {
        None => Packet::connect(nsp, sid.as_str()),
        Some(pid) => {
            let mut data = serde_json::Map::new();
            data.insert("sid".to_owned(), Value::from(sid.as_str()));
            data.insert("pid".to_owned(), Value::from(pid.as_str()));
            Packet::connect_with_data(nsp, Some(Value::Object(data)))
        }
    }
}
