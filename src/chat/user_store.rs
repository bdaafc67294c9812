//! The chat's users: who is logged in, in which room, in join order.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::{Id, IdMap};

/// A logged-in user, exactly as the wire shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The socket id.
    pub id: String,
    /// The trimmed name.
    pub name: String,
    /// The trimmed room.
    pub room: String,
}

/// Users keyed by socket id, with each room's members in join order.
#[derive(Debug, Default)]
pub struct UserStore {
    users: IdMap<User>,
    rooms: HashMap<String, Vec<Id>>,
}

impl UserStore {
    /// The user of a socket.
    pub fn find(&self, id: Id) -> Option<&User> {
        self.users.get(&id)
    }

    /// Whether someone in `room` has `name`, ignoring ASCII case.
    pub fn name_taken(&self, room: &str, name: &str) -> bool {
        self.rooms.get(room).is_some_and(|members| {
            members
                .iter()
                .filter_map(|id| self.users.get(id))
                .any(|u| u.name.eq_ignore_ascii_case(name))
        })
    }

    /// Stores a user; it goes last in its room's order.
    pub fn save(&mut self, id: Id, user: User) {
        self.rooms.entry(user.room.clone()).or_default().push(id);
        self.users.insert(id, user);
    }

    /// Removes a socket's user, if it had one.
    pub fn delete(&mut self, id: Id) -> Option<User> {
        let user = self.users.remove(&id)?;
        if let Some(members) = self.rooms.get_mut(&user.room) {
            members.retain(|m| *m != id);
            if members.is_empty() {
                self.rooms.remove(&user.room);
            }
        }
        Some(user)
    }

    /// The users of a room, in join order.
    pub fn in_room(&self, room: &str) -> Vec<User> {
        self.rooms
            .get(room)
            .map(|members| {
                members
                    .iter()
                    .filter_map(|id| self.users.get(id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rooms with at least one user.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// Logged-in users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is logged in.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, room: &str) -> User {
        User {
            id: String::new(),
            name: name.into(),
            room: room.into(),
        }
    }

    #[test]
    fn keeps_join_order_and_cleans_up() {
        let mut store = UserStore::default();
        let (a, b, c) = (Id::random(), Id::random(), Id::random());
        store.save(a, user("ann", "r1"));
        store.save(b, user("bob", "r1"));
        store.save(c, user("cy", "r2"));
        let names: Vec<_> = store.in_room("r1").into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["ann", "bob"]);
        assert!(store.name_taken("r1", "BOB"));
        assert!(!store.name_taken("R1", "bob"), "rooms are case-sensitive");
        assert_eq!(store.delete(a).map(|u| u.name), Some("ann".into()));
        assert_eq!(store.delete(a), None);
        store.delete(b);
        store.delete(c);
        assert!(store.is_empty());
        assert!(store.in_room("r1").is_empty());
    }
}
