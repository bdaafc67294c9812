//! Room membership, the choice of a broadcast's recipients, and the hooks a multi-node adapter
//! fills in.
//!
//! The [`Adapter`] trait has two halves. Room bookkeeping (join, leave, members) is always
//! local: every node knows only its own sockets. The cluster half (publish a broadcast, ask the
//! other nodes for their sockets, make them join or leave rooms, server-side events) has
//! defaults that do nothing, which is exactly right for one process: [`LocalAdapter`] keeps
//! rooms in memory and needs no more. A multi-node adapter such as the Redis one overrides the
//! cluster half and delivers what other nodes send through the namespace's local operations
//! (see [`Namespace::to`](super::Namespace::to) with [`local`](super::BroadcastOperator::local)).
//!
//! Every socket is also in a room named after its own id; that room is implicit (never stored),
//! which keeps a socket that joins nothing free of room bookkeeping.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::namespace::Namespace;
use super::packet::Packet;
use super::socket::AckResponse;
use crate::id::{Id, IdMap, IdSet};

/// Which sockets of a namespace a broadcast reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastTarget {
    /// Rooms to reach; empty means every socket of the namespace.
    pub rooms: Vec<String>,
    /// Rooms whose members are left out.
    pub except: Vec<String>,
}

/// How a broadcast is delivered, as other nodes need to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastFlags {
    /// Dropped for clients that cannot take it now.
    pub volatile: bool,
    /// This node's clients only.
    pub local: bool,
    /// How long a broadcast with acknowledgements waits.
    pub timeout: Option<Duration>,
}

/// A broadcast's recipients and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastOptions {
    /// Rooms and exceptions.
    pub target: BroadcastTarget,
    /// Delivery flags.
    pub flags: BroadcastFlags,
}

/// A socket as the cluster sees it: what `fetchSockets` gives in Node's socket.io.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The socket id.
    pub id: String,
    /// Its rooms, its own-id room included.
    pub rooms: Vec<String>,
    /// What the application stored on it ([`Socket::set_data`](super::Socket::set_data)).
    #[serde(default)]
    pub data: Value,
    /// Its handshake: headers, query, auth, address, time.
    #[serde(default)]
    pub handshake: Value,
}

/// The other nodes' answers to a fetch: what came in time, and how many nodes did not answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchedSockets {
    /// The sockets of the nodes that answered.
    pub sockets: Vec<SocketInfo>,
    /// Nodes asked.
    pub nodes_asked: usize,
    /// Nodes that did not answer in time.
    pub nodes_missing: usize,
}

/// What other nodes answer to a broadcast with acknowledgements.
#[derive(Debug, Clone)]
pub enum RemoteAck {
    /// A node sent the packet to this many clients.
    ClientCount(usize),
    /// One client answered (Node's adapter relays the first argument only).
    Ack(AckResponse),
}

/// Why an operation across nodes failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The broker cannot be reached.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Not every node answered in time.
    #[error("timed out waiting for {missing} of {expected} node(s)")]
    Timeout {
        /// Answers expected.
        expected: usize,
        /// Answers that did not come.
        missing: usize,
    },
}

/// A change in a namespace's rooms on this node (Node's adapter events `create-room`,
/// `join-room`, `leave-room` and `delete-room`), for presence features and metrics. A socket's
/// own-id room is implicit and never reported (Node reports it like any other room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// The room got its first member (reported before that member's `Joined`).
    Created(String),
    /// A socket joined the room (not reported when it was a member already).
    Joined {
        /// The room.
        room: String,
        /// The socket that joined it.
        socket: Id,
    },
    /// A socket left the room, by leaving it or by disconnecting.
    Left {
        /// The room.
        room: String,
        /// The socket that left it.
        socket: Id,
    },
    /// The room lost its last member (reported after that member's `Left`).
    Deleted(String),
}

/// Told about every [`RoomEvent`], right after the change and outside the adapter's locks, so
/// that it may look at rooms or broadcast; it should not block. One that panics is logged and
/// the change goes on.
pub type RoomListener = Arc<dyn Fn(&RoomEvent) + Send + Sync>;

/// A future an adapter hands back; `'static` so that it never borrows the adapter.
pub type AdapterFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Room bookkeeping for one namespace, and its link to other nodes.
pub trait Adapter: Send + Sync + 'static {
    /// Adds a socket to a room.
    fn join(&self, socket: Id, room: &str);
    /// Removes a socket from a room.
    fn leave(&self, socket: Id, room: &str);
    /// Removes a socket from every room.
    fn leave_all(&self, socket: Id);
    /// The rooms a socket joined (its own-id room not included).
    fn rooms_of(&self, socket: Id) -> Vec<String>;
    /// Members of a room (an explicit room; own-id rooms are resolved by the namespace).
    fn members(&self, room: &str) -> Vec<Id>;
    /// Rooms that have at least one member.
    fn room_count(&self) -> usize;
    /// The names of the rooms that have a member on this node (an adapter that cannot list
    /// them gives none).
    fn room_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Adds a listener to the room events; returns whether this adapter reports them (the
    /// default does not; [`LocalAdapter`] and the Redis adapter do).
    fn on_room_event(&self, _listener: RoomListener) -> bool {
        false
    }

    /// Called once the namespace exists, so that the adapter can deliver what other nodes send.
    fn bind(&self, _namespace: Weak<Namespace>) {}

    /// Called when the namespace leaves the server (a dynamic one whose last socket left), so
    /// that the adapter stops listening for it. A namespace of the same name made later gets
    /// an adapter of its own.
    fn close(&self) {}

    /// Sends a broadcast to the other nodes; this node's recipients are served by the caller.
    fn publish(&self, _packet: &Packet, _opts: &BroadcastOptions) {}

    /// Whether [`publish`](Self::publish) sends broadcasts anywhere. A typed emit encodes its
    /// arguments straight into the frames of this node's recipients, and builds the [`Packet`]
    /// that `publish` takes only when this says it is needed.
    fn publishes(&self) -> bool {
        true
    }

    /// Sends a broadcast that asks for acknowledgements to the other nodes. Their client counts
    /// and acknowledgements arrive on the receiver until it closes; `None` when there are no
    /// other nodes.
    fn publish_with_ack(
        &self,
        _packet: &Packet,
        _opts: &BroadcastOptions,
    ) -> Option<mpsc::Receiver<RemoteAck>> {
        None
    }

    /// Nodes serving this namespace, this one included.
    fn server_count(&self) -> AdapterFuture<Result<usize, ClusterError>> {
        Box::pin(async { Ok(1) })
    }

    /// The other nodes' sockets that a broadcast with these options would reach, as many as
    /// answered within the adapter's request timeout.
    fn fetch_remote_sockets(
        &self,
        _opts: &BroadcastOptions,
    ) -> AdapterFuture<Result<FetchedSockets, ClusterError>> {
        Box::pin(async { Ok(FetchedSockets::default()) })
    }

    /// This node's id among [`node_ids`](Self::node_ids) (`None` on one node).
    fn node_id(&self) -> Option<String> {
        None
    }

    /// Times this node's link to the other nodes was made again after a loss: what they sent
    /// in between may have been missed (always 0 on one node).
    fn reconnections(&self) -> u64 {
        0
    }

    /// Ids of the nodes serving this namespace, this one included (empty when the adapter
    /// cannot tell them apart). A node that left is missing from it even when another took
    /// its place, which a count cannot show.
    fn node_ids(&self) -> AdapterFuture<Result<Vec<String>, ClusterError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Makes the other nodes' matching sockets join rooms.
    fn remote_join(&self, _opts: &BroadcastOptions, _rooms: &[String]) {}

    /// Makes the other nodes' matching sockets leave rooms.
    fn remote_leave(&self, _opts: &BroadcastOptions, _rooms: &[String]) {}

    /// Disconnects the other nodes' matching sockets (`close`: their whole connection).
    fn remote_disconnect(&self, _opts: &BroadcastOptions, _close: bool) {}

    /// Sends a server-side event (`[name, args...]`) to the other nodes. With `want_acks`,
    /// resolves with one answer per node (the first argument each gave its acknowledgement).
    fn server_side_emit(
        &self,
        _data: Vec<Value>,
        _want_acks: bool,
    ) -> AdapterFuture<Result<Vec<Value>, ClusterError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Makes the adapter of each namespace, by the namespace's name.
pub type AdapterFactory = std::sync::Arc<dyn Fn(&str) -> Box<dyn Adapter> + Send + Sync>;

/// In-memory rooms of one process.
#[derive(Default)]
pub struct LocalAdapter {
    inner: Mutex<Rooms>,
    /// Whether `listeners` holds any: without, a join or leave records no events.
    listened: AtomicBool,
    listeners: RwLock<Vec<RoomListener>>,
}

impl std::fmt::Debug for LocalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAdapter")
            .field("rooms", &self.lock().members.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Rooms {
    members: HashMap<String, IdSet>,
    /// Each socket's rooms in the order it joined them (as Node lists `socket.rooms`); whether
    /// it is in one already is asked of `members`.
    joined: IdMap<Vec<String>>,
}

impl LocalAdapter {
    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a change records its events: nowhere while nobody listens.
    fn recorder(&self) -> Option<Vec<RoomEvent>> {
        self.listened.load(Ordering::Acquire).then(Vec::new)
    }

    /// Tells the listeners, once the rooms' lock is released (or later: see
    /// [`hold_room_events`]).
    fn tell(&self, events: Option<Vec<RoomEvent>>) {
        let Some(events) = events.filter(|e| !e.is_empty()) else {
            return;
        };
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let told = (listeners, events);
        let untold = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some(held) => {
                held.push(told);
                None
            }
            None => Some(told),
        });
        if let Some((listeners, events)) = untold {
            notify(&listeners, &events);
        }
    }
}

fn notify(listeners: &[RoomListener], events: &[RoomEvent]) {
    for event in events {
        for listener in listeners {
            // A listener runs inside joins and leaves, a socket's cleanup among them: its
            // panic must not cut that short.
            let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(event)));
            if told.is_err() {
                tracing::error!(?event, "a room event listener panicked");
            }
        }
    }
}

/// Room events not told yet, with the listeners to tell.
type Untold = Vec<(Vec<RoomListener>, Vec<RoomEvent>)>;

thread_local! {
    /// Room events held back on this thread by [`hold_room_events`].
    static HELD: RefCell<Option<Untold>> = const { RefCell::new(None) };
}

/// Runs `f`, and tells room listeners of the joins and leaves it made only once it has
/// returned. For changes made under a lock that a listener's broadcast takes as well: a
/// recovered socket rejoins its rooms under the recovery store's lock, and a listener that
/// broadcasts there would wait for that lock for ever.
pub(crate) fn hold_room_events<R>(f: impl FnOnce() -> R) -> R {
    /// Tells what was held, also when `f` panics, so that nothing stays held.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let held = HELD.with(|held| held.borrow_mut().take());
            for (listeners, events) in held.into_iter().flatten() {
                notify(&listeners, &events);
            }
        }
    }
    let holding = HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_some() {
            // Held further out already: that hold tells them.
            return false;
        }
        *held = Some(Vec::new());
        true
    });
    let _release = holding.then_some(Release);
    f()
}

impl Rooms {
    /// Takes `socket` out of `room`; records `Left` (and `Deleted` for an emptied room).
    fn remove(&mut self, socket: Id, room: &str, events: &mut Option<Vec<RoomEvent>>) {
        let Some(set) = self.members.get_mut(room) else {
            return;
        };
        if !set.remove(&socket) {
            return;
        }
        let emptied = set.is_empty();
        if emptied {
            self.members.remove(room);
        }
        if let Some(events) = events {
            events.push(RoomEvent::Left {
                room: room.to_owned(),
                socket,
            });
            if emptied {
                events.push(RoomEvent::Deleted(room.to_owned()));
            }
        }
    }
}

impl Adapter for LocalAdapter {
    fn join(&self, socket: Id, room: &str) {
        let mut events = self.recorder();
        {
            let mut r = self.lock();
            let set = match r.members.get_mut(room) {
                Some(set) => set,
                None => {
                    if let Some(events) = &mut events {
                        events.push(RoomEvent::Created(room.to_owned()));
                    }
                    r.members.entry(room.to_owned()).or_default()
                }
            };
            if !set.insert(socket) {
                return;
            }
            if let Some(events) = &mut events {
                events.push(RoomEvent::Joined {
                    room: room.to_owned(),
                    socket,
                });
            }
            let rooms = r.joined.entry(socket).or_default();
            if rooms.capacity() == 0 {
                // Most sockets join one room or two.
                rooms.reserve_exact(1);
            }
            rooms.push(room.to_owned());
        }
        self.tell(events);
    }

    fn leave(&self, socket: Id, room: &str) {
        let mut events = self.recorder();
        {
            let mut r = self.lock();
            r.remove(socket, room, &mut events);
            if let Some(rooms) = r.joined.get_mut(&socket) {
                rooms.retain(|r| r != room);
                if rooms.is_empty() {
                    r.joined.remove(&socket);
                }
            }
        }
        self.tell(events);
    }

    fn leave_all(&self, socket: Id) {
        let mut events = self.recorder();
        {
            let mut r = self.lock();
            let Some(rooms) = r.joined.remove(&socket) else {
                return;
            };
            for room in rooms {
                r.remove(socket, &room, &mut events);
            }
        }
        self.tell(events);
    }

    fn on_room_event(&self, listener: RoomListener) -> bool {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
        self.listened.store(true, Ordering::Release);
        true
    }

    fn rooms_of(&self, socket: Id) -> Vec<String> {
        self.lock().joined.get(&socket).cloned().unwrap_or_default()
    }

    fn members(&self, room: &str) -> Vec<Id> {
        self.lock()
            .members
            .get(room)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    fn room_count(&self) -> usize {
        self.lock().members.len()
    }

    fn room_names(&self) -> Vec<String> {
        self.lock().members.keys().cloned().collect()
    }

    fn publishes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_and_cleanup() {
        let a = LocalAdapter::default();
        let (x, y) = (Id::random(), Id::random());
        a.join(x, "r1");
        a.join(y, "r1");
        a.join(x, "r2");
        assert_eq!(a.members("r1").len(), 2);
        assert_eq!(a.room_count(), 2);
        a.leave(x, "r1");
        assert_eq!(a.members("r1"), vec![y]);
        a.leave_all(x);
        assert_eq!(a.room_count(), 1);
        assert!(a.rooms_of(x).is_empty());
        a.leave_all(y);
        assert_eq!(a.room_count(), 0);
    }

    #[test]
    fn room_events_follow_membership() {
        let a = Arc::new(LocalAdapter::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (x, y) = (Id::random(), Id::random());
        // A listener may look at the rooms: it runs outside the adapter's lock.
        let (log, rooms) = (seen.clone(), a.clone());
        assert!(a.on_room_event(Arc::new(move |e: &RoomEvent| {
            let members = match e {
                RoomEvent::Joined { room, .. } | RoomEvent::Left { room, .. } => {
                    rooms.members(room).len()
                }
                _ => 0,
            };
            log.lock().unwrap().push((e.clone(), members));
        })));
        let joined = |room: &str, socket| RoomEvent::Joined {
            room: room.to_owned(),
            socket,
        };
        let left = |room: &str, socket| RoomEvent::Left {
            room: room.to_owned(),
            socket,
        };
        a.join(x, "r");
        a.join(x, "r"); // already a member: nothing
        a.join(y, "r");
        a.join(x, "s");
        a.leave(y, "nowhere"); // not a member: nothing
        a.leave(x, "r");
        a.leave_all(y);
        let mut rest = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(
            rest.drain(..6).collect::<Vec<_>>(),
            [
                (RoomEvent::Created("r".into()), 0),
                (joined("r", x), 1),
                (joined("r", y), 2),
                (RoomEvent::Created("s".into()), 0),
                (joined("s", x), 1),
                (left("r", x), 1),
            ]
        );
        assert_eq!(
            rest,
            [(left("r", y), 0), (RoomEvent::Deleted("r".into()), 0)]
        );
        a.leave_all(x);
        assert_eq!(
            *seen.lock().unwrap(),
            [(left("s", x), 0), (RoomEvent::Deleted("s".into()), 0)]
        );

        // A listener that panics stops neither the change nor the other listeners.
        a.on_room_event(Arc::new(|_: &RoomEvent| panic!("a listener's mistake")));
        seen.lock().unwrap().clear();
        a.join(y, "t");
        a.leave_all(y);
        assert_eq!(a.room_count(), 0);
        assert_eq!(seen.lock().unwrap().len(), 4);
    }
}
