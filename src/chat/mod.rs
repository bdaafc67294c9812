//! The chat application: a port of a small TypeScript chat server whose web client must keep
//! working against it unchanged. The wire contract is described in `docs/chat-protocol.md`.

pub mod config;
pub mod user_store;
pub mod validation;
pub mod web;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::rate_limit::TokenBucket;
use crate::socketio::{Ack, Event, Socket, SocketIo};
use config::ChatConfig;
use user_store::{User, UserStore};
use validation::{LoginError, validate_login};

/// Counters of what the chat did, for metrics.
#[derive(Debug, Default)]
pub struct ChatStats {
    /// Successful logins.
    pub logins: AtomicU64,
    /// `roomMessage`s relayed.
    pub messages: AtomicU64,
    /// `roomMessage`s dropped: not a string, or over the size cap.
    pub dropped_invalid: AtomicU64,
    /// `roomMessage`s dropped by the rate limit.
    pub dropped_rate: AtomicU64,
}

/// The chat's shared state.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    users: Mutex<UserStore>,
    stats: ChatStats,
}

/// The Socket.IO room of a chat room. Chat rooms live in their own keyspace: a socket id never
/// contains `:`, so no chat room can address a socket's private room.
fn room_key(room: &str) -> String {
    format!("chat:{room}")
}

impl Chat {
    /// Installs the chat on the main namespace of `io`.
    pub fn install(io: &SocketIo, config: ChatConfig) -> Arc<Chat> {
        let chat = Arc::new(Chat {
            config,
            users: Mutex::new(UserStore::default()),
            stats: ChatStats::default(),
        });
        let app = chat.clone();
        io.of("/")
            .on_connect(move |socket| app.clone().on_connect(&socket));
        chat
    }

    /// The counters.
    pub fn stats(&self) -> &ChatStats {
        &self.stats
    }

    /// Logged-in users.
    pub fn user_count(&self) -> usize {
        self.users().len()
    }

    fn users(&self) -> MutexGuard<'_, UserStore> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_connect(self: Arc<Self>, socket: &Arc<Socket>) {
        let chat = self.clone();
        socket.on_raw("login", move |socket: Arc<Socket>, event: Event| {
            chat.login(&socket, event);
            async {}
        });
        let chat = self.clone();
        socket.on_raw("logout", move |socket: Arc<Socket>, event: Event| {
            if require_ack(&socket, &event.ack, "logout") {
                chat.leave(&socket);
                let _ = event.ack.send(&());
            }
            async {}
        });
        socket.on_raw("ping", |socket: Arc<Socket>, event: Event| {
            if require_ack(&socket, &event.ack, "ping") {
                let _ = event.ack.send(socket.id().as_str());
            }
            async {}
        });
        let chat = self.clone();
        let bucket = Mutex::new(TokenBucket::new(
            self.config.rate_burst,
            self.config.rate_per_second,
        ));
        socket.on_raw("roomMessage", move |socket: Arc<Socket>, event: Event| {
            let allowed = bucket.lock().unwrap_or_else(|e| e.into_inner()).try_take();
            chat.room_message(&socket, event, allowed);
            async {}
        });
        let chat = self;
        socket.on_disconnect(move |socket, _reason| chat.leave(&socket));
    }

    fn login(&self, socket: &Arc<Socket>, event: Event) {
        if !require_ack(socket, &event.ack, "login") {
            return;
        }
        let payload = event.args.into_iter().next().unwrap_or(Value::Null);
        let result = validate_login(&payload).and_then(|(name, room)| {
            let mut users = self.users();
            if users.find(socket.id()).is_some() {
                return Err(LoginError::AlreadyLoggedIn);
            }
            if users.name_taken(&room, &name) {
                return Err(LoginError::NameTaken);
            }
            let user = User {
                id: socket.id().to_string(),
                name,
                room,
            };
            users.save(socket.id(), user.clone());
            Ok(user)
        });
        let user = match result {
            Ok(user) => user,
            Err(e) => {
                let _ = event.ack.send(&json!({ "error": e.to_string() }));
                return;
            }
        };
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        let key = room_key(&user.room);
        socket.join(&key);
        let _ = socket.to(&key).emit(
            "notification",
            &json!({ "title": "Someone's here", "description": format!("{} just entered the room", user.name) }),
        );
        let members = self.users().in_room(&user.room);
        let _ = socket.namespace().to(&key).emit("users", &members);
        let _ = event.ack.send(&json!({ "user": user }));
    }

    /// Logs a socket's user out (logout or disconnect) and tells the room.
    fn leave(&self, socket: &Arc<Socket>) {
        let Some(user) = self.users().delete(socket.id()) else {
            return;
        };
        let key = room_key(&user.room);
        socket.leave(&key);
        let room = socket.namespace().to(&key);
        let _ = room.emit(
            "notification",
            &json!({ "title": "Someone just left", "description": format!("{} just left the room", user.name) }),
        );
        let members = self.users().in_room(&user.room);
        let _ = room.emit("users", &members);
    }

    fn room_message(&self, socket: &Arc<Socket>, event: Event, allowed: bool) {
        let Some(user) = self.users().find(socket.id()).cloned() else {
            return;
        };
        let refusal = match event.args.first() {
            _ if !allowed => {
                self.stats.dropped_rate.fetch_add(1, Ordering::Relaxed);
                Some("Too many messages, slow down")
            }
            Some(Value::String(text)) if text.len() <= self.config.max_message_bytes => None,
            Some(Value::String(_)) => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                Some("Message is too long")
            }
            _ => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                Some("Message must be a string")
            }
        };
        if let Some(message) = refusal {
            tracing::debug!(socket = %socket.id(), reason = message, "roomMessage dropped");
            let _ = event.ack.send(&json!({ "error": message }));
            return;
        }
        let Some(Value::String(text)) = event.args.into_iter().next() else {
            return;
        };
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let _ = socket.namespace().to(&room_key(&user.room)).emit(
            "roomMessage",
            &json!({ "message": text, "from": user.name }),
        );
    }
}

/// `login`, `logout` and `ping` must ask for an acknowledgement; a client that does not is
/// broken, and is disconnected.
fn require_ack(socket: &Arc<Socket>, ack: &Ack, event: &str) -> bool {
    if !ack.requested() {
        tracing::debug!(socket = %socket.id(), event, "event without an ack id, disconnecting");
        socket.disconnect();
        return false;
    }
    true
}
