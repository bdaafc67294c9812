//! The chat application: a port of a small TypeScript chat server whose web client must keep
//! working against it unchanged. The wire contract is described in `docs/chat-protocol.md`.

mod cluster;
pub mod config;
pub mod user_store;
pub mod validation;
pub mod web;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Value, json};

use crate::id::{Id, IdMap};
use crate::rate_limit::{TokenBucket, sweep_when_grown};
use crate::socketio::{Ack, DisconnectReason, Event, Namespace, Socket, SocketIo};
use cluster::{Claim, Roster, joined, logged_out, room_list};
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
    /// Sockets disconnected for going on sending far beyond the rate limit.
    pub disconnected_rate: AtomicU64,
}

/// A socket's `roomMessage` rate: the bucket its messages take from, and the one its dropped
/// messages take from. The second holds five bursts and refills at the same rate, so a client
/// sending at up to twice the rate never empties it (it loses every other message), while one
/// sending at several times the rate empties it within seconds: it is flooding, and is
/// disconnected.
struct MessageRate {
    messages: TokenBucket,
    drops: TokenBucket,
}

/// The drops a socket's second bucket holds, in bursts.
const RATE_BURSTS_BEFORE_DISCONNECT: u32 = 5;

/// A `roomMessage` takes a token from its socket's bucket for every KiB it has begun: the
/// rate bounds the bytes a socket makes every member of its room receive, not only the
/// messages (a burst of the largest messages would otherwise fill members' queues).
const RATE_TOKEN_BYTES: usize = 1024;

/// The chat's shared state.
///
/// On one node, the user store is the whole truth. In a cluster (`redis_url` set, and the
/// server built on the Redis adapter) it holds this node's users; each logged-in socket also
/// carries its user in its [`data`](Socket::data), so that room lists and the duplicate-name
/// rule are answered cluster-wide by fetching the room's sockets from every node (see
/// `cluster`).
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    users: Mutex<UserStore>,
    stats: ChatStats,
    clustered: bool,
    logins: AtomicU64,
    /// Users logged in on the other nodes, by socket id, as their nodes announced them: when a
    /// node dies its users cannot say goodbye, and the others tell their rooms who left.
    roster: Mutex<Roster>,
    login_rates: Mutex<LoginRates>,
}

/// Each connection's login rate.
///
/// Each login sends the room's member list to every member, and so does the logout it makes
/// possible: without a limit, a client logging in and out in a loop would have a room of a
/// few hundred members sent megabytes a second each, until the server disconnected them as
/// clients that cannot keep up. The rate is the connection's (the Engine.IO session's), not
/// the socket's: a client that leaves the namespace and joins it again on the same connection
/// has a new socket, and would otherwise get a fresh allowance each time.
#[derive(Debug, Default)]
struct LoginRates {
    buckets: IdMap<TokenBucket>,
    /// The size at which full buckets are swept out.
    sweep_at: usize,
}

impl LoginRates {
    fn try_take(&mut self, connection: Id, burst: u32, per_second: f64) -> bool {
        // A full bucket is a fresh one: forgetting it loosens nothing. What a connection that
        // closed left behind goes here, once it has refilled.
        sweep_when_grown(&mut self.buckets, &mut self.sweep_at, |_, bucket| {
            !bucket.is_full()
        });
        self.buckets
            .entry(connection)
            .or_insert_with(|| TokenBucket::new(burst, per_second))
            .try_take()
    }

    /// The connection closed.
    fn forget(&mut self, connection: Id) {
        self.buckets.remove(&connection);
    }

    /// A socket of the connection left: its bucket goes, unless it still holds back logins.
    fn forget_if_full(&mut self, connection: Id) {
        if self
            .buckets
            .get(&connection)
            .is_some_and(TokenBucket::is_full)
        {
            self.buckets.remove(&connection);
        }
    }
}

/// The connection a socket is on: its Engine.IO session.
fn connection(socket: &Socket) -> Id {
    socket.session().id()
}

/// A `notification`; typed, so that it is written straight to the wire with its fields in the
/// order the web client's server wrote them.
#[derive(Serialize)]
pub(crate) struct Notice {
    title: &'static str,
    description: String,
}

fn entered_notice(name: &str) -> Notice {
    Notice {
        title: "Someone's here",
        description: format!("{name} just entered the room"),
    }
}

fn left_notice(name: &str) -> Notice {
    Notice {
        title: "Someone just left",
        description: format!("{name} just left the room"),
    }
}

/// A `roomMessage` as the room receives it.
#[derive(Serialize)]
struct Said<'a> {
    message: &'a str,
    from: &'a str,
}

/// The answer to a successful `login`.
#[derive(Serialize)]
struct LoggedIn<'a> {
    user: &'a User,
}

/// The Socket.IO room of a chat room. Chat rooms live in their own keyspace: a socket id never
/// contains `:`, so no chat room can address a socket's private room.
fn room_key(room: &str) -> String {
    format!("chat:{room}")
}

/// Where a login waits while the cluster checks its name; nothing is ever sent to it.
fn pending_key(room: &str) -> String {
    format!("chat-login:{room}")
}

impl Chat {
    /// Installs the chat on the main namespace of `io`.
    pub fn install(io: &SocketIo, config: ChatConfig) -> Arc<Chat> {
        let clustered = config.redis_url.is_some();
        let chat = Arc::new(Chat {
            config,
            users: Mutex::new(UserStore::default()),
            stats: ChatStats::default(),
            clustered,
            logins: AtomicU64::new(0),
            roster: Mutex::new(Roster::default()),
            login_rates: Mutex::new(LoginRates::default()),
        });
        let app = chat.clone();
        let ns = io.of("/");
        ns.on_connect(move |socket| app.clone().on_connect(&socket));
        if clustered {
            chat.join_cluster(&ns);
        }
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

    fn login_rates(&self) -> MutexGuard<'_, LoginRates> {
        self.login_rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_connect(self: Arc<Self>, socket: &Arc<Socket>) {
        let chat = self.clone();
        socket.on_raw("login", move |socket: Arc<Socket>, event: Event| {
            let chat = chat.clone();
            let started = chat.start_login(&socket, &event);
            async move {
                if let Some(started) = started {
                    chat.login(&socket, event.ack, started).await;
                }
            }
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
        let (burst, per_second) = (self.config.rate_burst, self.config.rate_per_second);
        let rate = Mutex::new(MessageRate {
            messages: TokenBucket::new(burst, per_second),
            drops: TokenBucket::new(
                burst.saturating_mul(RATE_BURSTS_BEFORE_DISCONNECT),
                per_second,
            ),
        });
        socket.on_raw("roomMessage", move |socket: Arc<Socket>, event: Event| {
            let tokens = match event.args.first() {
                Some(Value::String(message)) => message.len().div_ceil(RATE_TOKEN_BYTES),
                _ => 1,
            };
            // Never more than a burst: a message the cap allows is never refused for good.
            let tokens = u32::try_from(tokens)
                .unwrap_or(u32::MAX)
                .clamp(1, burst.max(1));
            let (allowed, flooding) = {
                let mut rate = rate.lock().unwrap_or_else(|e| e.into_inner());
                let allowed = rate.messages.try_take_n(tokens);
                (allowed, !allowed && !rate.drops.try_take())
            };
            if flooding {
                tracing::debug!(socket = %socket.id(), "roomMessage flood, disconnecting");
                chat.stats.disconnected_rate.fetch_add(1, Ordering::Relaxed);
                socket.disconnect();
            } else {
                chat.room_message(&socket, event, allowed);
            }
            async {}
        });
        let chat = self;
        socket.on_disconnect(move |socket, reason| {
            chat.leave(&socket);
            let mut rates = chat.login_rates();
            match reason {
                // The connection may stay, and log in again on a new socket.
                DisconnectReason::ClientNamespaceDisconnect
                | DisconnectReason::ServerNamespaceDisconnect => {
                    rates.forget_if_full(connection(&socket))
                }
                // The connection is gone: its id never comes back.
                _ => rates.forget(connection(&socket)),
            }
        });
    }

    /// The users of a room in join order: this node's store, or in a cluster every node's
    /// sockets in the room (this node's store if the other nodes cannot be asked).
    async fn members(&self, ns: &Arc<Namespace>, room: &str) -> Vec<User> {
        if !self.clustered {
            return self.users().in_room(room);
        }
        match ns.to(&room_key(room)).fetch_available_sockets().await {
            Ok(fetched) => {
                if fetched.nodes_missing > 0 {
                    tracing::warn!(
                        missing = fetched.nodes_missing,
                        "room list without the nodes that did not answer"
                    );
                }
                room_list(&fetched.sockets, room)
            }
            Err(e) => {
                tracing::warn!(error = %e, "room list from this node only");
                self.users().in_room(room)
            }
        }
    }

    /// A login's checks, and the user stored if they pass; `None` for a login without an ack
    /// id (the socket is disconnected). Only a login that would succeed takes from the
    /// connection's login rate: a refused one tells the room nothing.
    fn start_login(&self, socket: &Arc<Socket>, event: &Event) -> Option<Result<User, LoginError>> {
        if !require_ack(socket, &event.ack, "login") {
            return None;
        }
        let payload = event.args.first().unwrap_or(&Value::Null);
        // The store is checked and written at once, so two logins on this node cannot both
        // take a name; the other nodes are asked after.
        Some(validate_login(payload).and_then(|(name, room)| {
            let mut users = self.users();
            // A socket that left on another thread before this lock was taken has had its
            // `leave` already: a user stored now would stay in the room for good.
            if !socket.connected() {
                return Err(LoginError::NameTaken);
            }
            if users.find(socket.id()).is_some() {
                return Err(LoginError::AlreadyLoggedIn);
            }
            if users.name_taken(&room, &name) {
                return Err(LoginError::NameTaken);
            }
            let (burst, per_second) = (self.config.login_burst, self.config.logins_per_second);
            if !self
                .login_rates()
                .try_take(connection(socket), burst, per_second)
            {
                return Err(LoginError::TooManyLogins);
            }
            let user = User {
                id: socket.id().to_string(),
                name,
                room,
            };
            users.save(socket.id(), user.clone());
            Ok(user)
        }))
    }

    /// The rest of a login [`start_login`](Self::start_login) began: in a cluster, the other
    /// nodes' word on the name; then the room is told and the ack sent.
    async fn login(&self, socket: &Arc<Socket>, ack: Ack, started: Result<User, LoginError>) {
        let user = match started {
            Ok(user) => user,
            Err(e) => return refuse(ack, e),
        };
        let ns = socket.namespace();
        let key = room_key(&user.room);
        let pending = pending_key(&user.room);
        let mut members = None;
        let mut claim = None;
        if self.clustered {
            let n = self.logins.fetch_add(1, Ordering::Relaxed);
            claim = Some(n);
            let answer = self.claim_name(socket, &user, n).await;
            if let Claim::Granted(list) = answer {
                members = list;
            } else {
                // Undone only if this claim is still the socket's: a logout or another login
                // since then owns the store entry (and maybe the claim's room) now.
                let mut users = self.users();
                if socket.data()["claim"].as_u64() == Some(n) {
                    users.delete(socket.id());
                    socket.set_data(Value::Null);
                    socket.leave(&pending);
                }
                drop(users);
                return refuse(ack, LoginError::NameTaken);
            }
        }
        // Completed under the store's lock: a logout or disconnect (which deletes under it)
        // comes either before, and the login is given up, or after, and finds it complete.
        {
            let users = self.users();
            let own_claim = claim.is_none_or(|n| socket.data()["claim"].as_u64() == Some(n));
            let current = own_claim && users.find(socket.id()) == Some(&user);
            if !socket.connected() || !current {
                if own_claim {
                    socket.leave(&pending);
                }
                drop(users);
                return refuse(ack, LoginError::NameTaken);
            }
            if let Some(seq) = claim {
                joined(socket, &user, seq);
                if let Some(list) = &mut members {
                    list.push(user.clone());
                }
            }
            // In the room before out of the claims: another node's question always finds it
            // in one of them.
            socket.join(&key);
            socket.leave(&pending);
            if !self.clustered {
                // Told under the store's lock, as `leave` tells of a user gone: the room's
                // member lists go out in the order the store changed.
                self.stats.logins.fetch_add(1, Ordering::Relaxed);
                let _ = socket
                    .to(&key)
                    .emit("notification", &entered_notice(&user.name));
                let _ = ns.to(&key).emit("users", &users.in_room(&user.room));
                drop(users);
                let _ = ack.send(&LoggedIn { user: &user });
                return;
            }
        }
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        let _ = socket
            .to(&key)
            .emit("notification", &entered_notice(&user.name));
        let members = match members {
            Some(list) => list,
            None => self.members(ns, &user.room).await,
        };
        let _ = ns.to(&key).emit("users", &members);
        let _ = ack.send(&LoggedIn { user: &user });
    }

    /// Whether the socket's login is complete: at once on one node; in a cluster only once the
    /// other nodes have answered that the name is free.
    fn announced(&self, socket: &Socket) -> bool {
        !self.clustered || socket.data().get("joined").is_some()
    }

    /// Logs a socket's user out (logout or disconnect) and tells the room.
    fn leave(self: &Arc<Self>, socket: &Arc<Socket>) {
        let mut users = self.users();
        let Some(user) = users.delete(socket.id()) else {
            return;
        };
        // A socket that leaves before its login was announced was never in the room for anyone.
        let announced = self.announced(socket);
        socket.set_data(Value::Null);
        if !announced {
            // Nor will it be: out of the claim its login still waits on, if any.
            socket.leave(&pending_key(&user.room));
            return;
        }
        let key = room_key(&user.room);
        socket.leave(&key);
        let ns = socket.namespace().clone();
        if !self.clustered {
            // Under the store's lock: two members leaving at once send their lists in the
            // order they left, the last one the room's.
            let _ = ns.to(&key).emit("notification", &left_notice(&user.name));
            let _ = ns.to(&key).emit("users", &users.in_room(&user.room));
            return;
        }
        drop(users);
        // First, so that a node dying between the two cannot have its user said goodbye to
        // twice.
        logged_out(&ns, &user);
        let _ = ns.to(&key).emit("notification", &left_notice(&user.name));
        let chat = self.clone();
        tokio::spawn(async move {
            let members = chat.members(&ns, &user.room).await;
            let _ = ns.to(&key).emit("users", &members);
        });
    }

    fn room_message(&self, socket: &Arc<Socket>, event: Event, allowed: bool) {
        let Some(user) = self.users().find(socket.id()).cloned() else {
            return;
        };
        // A login the cluster is still checking is not a login yet: its name may be someone
        // else's.
        if !self.announced(socket) {
            return;
        }
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
        let said = Said {
            message: &text,
            from: &user.name,
        };
        let _ = socket
            .namespace()
            .to(&room_key(&user.room))
            .emit("roomMessage", &said);
    }
}

/// Answers a login that did not succeed.
fn refuse(ack: Ack, error: LoginError) {
    let _ = ack.send(&json!({ "error": error.to_string() }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::SWEEP_MIN;

    #[test]
    fn login_rates_forget_only_buckets_that_hold_nothing_back() {
        let mut rates = LoginRates::default();
        let held = Id::random();
        // Never refilled: one login, then none.
        assert!(rates.try_take(held, 1, 0.0));
        assert!(!rates.try_take(held, 1, 0.0));
        rates.forget_if_full(held);
        assert!(
            !rates.try_take(held, 1, 0.0),
            "a socket leaving does not reset it"
        );
        // Without a limit (one token of four billion), a bucket is always full.
        let (unlimited, rate) = (u32::MAX, f64::MAX);
        let free = Id::random();
        assert!(rates.try_take(free, unlimited, rate));
        rates.forget_if_full(free);
        assert!(!rates.buckets.contains_key(&free));
        // Filled up to the sweep: the next login sweeps the full buckets out, not the held one.
        while rates.buckets.len() < SWEEP_MIN {
            assert!(rates.try_take(Id::random(), unlimited, rate));
        }
        assert!(rates.try_take(Id::random(), unlimited, rate));
        assert_eq!(rates.buckets.len(), 2);
        assert!(!rates.try_take(held, 1, 0.0));
    }
}
