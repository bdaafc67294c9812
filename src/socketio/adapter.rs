//! Room membership and the choice of a broadcast's recipients.
//!
//! The [`Adapter`] trait is where a multi-node adapter plugs in; [`LocalAdapter`] keeps rooms in
//! memory for one process. Every socket is also in a room named after its own id; that room is
//! implicit (never stored), which keeps a socket that joins nothing free of room bookkeeping.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::id::Id;

/// Which sockets of a namespace a broadcast reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastTarget {
    /// Rooms to reach; empty means every socket of the namespace.
    pub rooms: Vec<String>,
    /// Rooms whose members are left out.
    pub except: Vec<String>,
}

/// Room bookkeeping for one namespace.
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
}

/// In-memory rooms of one process.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    inner: Mutex<Rooms>,
}

#[derive(Debug, Default)]
struct Rooms {
    members: HashMap<String, HashSet<Id>>,
    joined: HashMap<Id, HashSet<String>>,
}

impl LocalAdapter {
    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Adapter for LocalAdapter {
    fn join(&self, socket: Id, room: &str) {
        let mut r = self.lock();
        r.members.entry(room.to_owned()).or_default().insert(socket);
        r.joined.entry(socket).or_default().insert(room.to_owned());
    }

    fn leave(&self, socket: Id, room: &str) {
        let mut r = self.lock();
        if let Some(set) = r.members.get_mut(room) {
            set.remove(&socket);
            if set.is_empty() {
                r.members.remove(room);
            }
        }
        if let Some(set) = r.joined.get_mut(&socket) {
            set.remove(room);
            if set.is_empty() {
                r.joined.remove(&socket);
            }
        }
    }

    fn leave_all(&self, socket: Id) {
        let mut r = self.lock();
        let Some(rooms) = r.joined.remove(&socket) else {
            return;
        };
        for room in rooms {
            if let Some(set) = r.members.get_mut(&room) {
                set.remove(&socket);
                if set.is_empty() {
                    r.members.remove(&room);
                }
            }
        }
    }

    fn rooms_of(&self, socket: Id) -> Vec<String> {
        self.lock()
            .joined
            .get(&socket)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
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
}
