//! The chat contract (login, logout, roomMessage, ping; notification and users to the room)
//! on socketioxide, as close to the npm program's behaviour as the library allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

#[derive(Clone, Serialize)]
struct User {
    id: String,
    name: String,
    room: String,
}

/// Users by socket id, and each room's members in join order.
#[derive(Default)]
struct Store {
    users: HashMap<String, User>,
    rooms: HashMap<String, Vec<String>>,
}

impl Store {
    fn members(&self, room: &str) -> Vec<User> {
        self.rooms
            .get(room)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.users.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn remove(&mut self, id: &str) -> Option<(User, Vec<User>)> {
        let user = self.users.remove(id)?;
        if let Some(ids) = self.rooms.get_mut(&user.room) {
            ids.retain(|m| m != id);
            if ids.is_empty() {
                self.rooms.remove(&user.room);
            }
        }
        let rest = self.members(&user.room);
        Some((user, rest))
    }
}

type Shared = Arc<Mutex<Store>>;

fn field(payload: &Value, key: &str) -> Option<String> {
    payload.get(key)?.as_str().map(|s| s.trim().to_owned())
}

fn validate(payload: &Value) -> Result<(String, String), &'static str> {
    let (Some(name), Some(room)) = (field(payload, "name"), field(payload, "room")) else {
        return Err("No room or name provided");
    };
    if name.is_empty() || room.is_empty() {
        return Err("No room or name provided");
    }
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !alnum(&name) || !alnum(&room) {
        return Err("Name and room may only contain letters and digits");
    }
    if name.len() > 20 || room.len() > 20 {
        return Err("Name and room must be at most 20 characters");
    }
    Ok((name, room))
}

async fn leave(io: &SocketIo, socket: &SocketRef, store: &Shared) {
    let id = socket.id.to_string();
    let removed = store.lock().unwrap().remove(&id);
    if let Some((user, rest)) = removed {
        socket.leave(user.room.clone());
        let note = json!({ "title": "Someone just left", "description": format!("{} just left the room", user.name) });
        let _ = io.to(user.room.clone()).emit("notification", &note).await;
        let _ = io.to(user.room).emit("users", &rest).await;
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (layer, io) = SocketIo::new_layer();
    let store: Shared = Arc::default();
    io.ns("/", move |socket: SocketRef| {
        let store = store.clone();
        async move {
            let s = store.clone();
            socket.on(
                "login",
                async move |socket: SocketRef, io: SocketIo, Data(payload): Data<Value>, ack: AckSender| {
                    let (name, room) = match validate(&payload) {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = ack.send(&json!({ "error": e }));
                            return;
                        }
                    };
                    let id = socket.id.to_string();
                    let user = User { id: id.clone(), name: name.clone(), room: room.clone() };
                    let members = {
                        let mut st = s.lock().unwrap();
                        if st.users.contains_key(&id) {
                            drop(st);
                            let _ = ack.send(&json!({ "error": "user already exists" }));
                            return;
                        }
                        if st.members(&room).iter().any(|u| u.name.eq_ignore_ascii_case(&name)) {
                            drop(st);
                            let _ = ack.send(&json!({ "error": "Name is already taken in this room" }));
                            return;
                        }
                        st.users.insert(id.clone(), user.clone());
                        st.rooms.entry(room.clone()).or_default().push(id);
                        st.members(&room)
                    };
                    socket.join(room.clone());
                    let note = json!({ "title": "Someone's here", "description": format!("{name} just entered the room") });
                    let _ = socket.to(room.clone()).emit("notification", &note).await;
                    let _ = io.to(room).emit("users", &members).await;
                    let _ = ack.send(&json!({ "user": user }));
                },
            );
            let s = store.clone();
            socket.on("logout", async move |socket: SocketRef, io: SocketIo, ack: AckSender| {
                leave(&io, &socket, &s).await;
                let _ = ack.send(&());
            });
            let s = store.clone();
            socket.on(
                "roomMessage",
                async move |socket: SocketRef, io: SocketIo, Data(message): Data<Value>| {
                    let Some(message) = message.as_str() else { return };
                    if message.len() > 16 * 1024 {
                        return;
                    }
                    let sender = s.lock().unwrap().users.get(socket.id.as_str()).cloned();
                    if let Some(user) = sender {
                        let body = json!({ "message": message, "from": user.name });
                        let _ = io.to(user.room).emit("roomMessage", &body).await;
                    }
                },
            );
            socket.on("ping", async |socket: SocketRef, ack: AckSender| {
                let _ = ack.send(&socket.id.to_string());
            });
            let s = store.clone();
            socket.on_disconnect(async move |socket: SocketRef, io: SocketIo| {
                leave(&io, &socket, &s).await;
            });
        }
    });
    socketioxide_peer::serve(layer).await
}
