//! The chat application: a port of a small TypeScript chat server whose web client must keep
//! working against it unchanged. The wire contract is described in `docs/chat-protocol.md`.

pub mod config;
pub mod user_store;
pub mod validation;
pub mod web;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::rate_limit::TokenBucket;
use crate::socketio::{Ack, Event, Namespace, Socket, SocketInfo, SocketIo};
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
///
/// On one node, the user store is the whole truth. In a cluster (`redis_url` set, and the
/// server built on the Redis adapter) it holds this node's users; each logged-in socket also
/// carries its user in its [`data`](Socket::data), so that room lists and the duplicate-name
/// rule are answered cluster-wide by fetching the room's sockets from every node.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    users: Mutex<UserStore>,
    stats: ChatStats,
    clustered: bool,
    logins: AtomicU64,
    /// Users logged in on the other nodes, by socket id, as their nodes announced them: when a
    /// node dies its users cannot say goodbye, and the others tell their rooms who left.
    roster: Mutex<HashMap<String, RemoteUser>>,
}

/// A user of another node.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct RemoteUser {
    name: String,
    room: String,
    node: String,
    /// When this node heard of the login, to tell the goodbyes in login order.
    #[serde(skip)]
    heard: u64,
}

/// What the cluster answered to a name claim.
enum Claim {
    /// The name is someone else's in the room, or an earlier claim's.
    Refused,
    /// The name is free; with the room's list before the new user, when the answers gave a
    /// complete one.
    Granted(Option<Vec<User>>),
}

/// Server-side events between chat nodes: a user logged in (`{id, name, room, node}`), a user
/// left (its id), and a node that joins the cluster asking for everyone's users (each node
/// answers with the list of its own).
const ROSTER_IN: &str = "chat:logged-in";
const ROSTER_OUT: &str = "chat:logged-out";
const ROSTER_ASK: &str = "chat:roster";

/// Entries the roster holds at most (about 64 MiB of them): a bound on what another process
/// can make it hold. Beyond, a login elsewhere goes unrecorded, and its goodbye unsaid if its
/// node dies.
const ROSTER_MAX: usize = 1 << 18;

/// A user of this node as the others' rosters learn of it.
fn announcement(user: &User, node: &str) -> Value {
    json!({ "id": user.id, "name": user.name, "room": user.room, "node": node })
}

fn entered_notice(name: &str) -> Value {
    json!({ "title": "Someone's here", "description": format!("{name} just entered the room") })
}

fn left_notice(name: &str) -> Value {
    json!({ "title": "Someone just left", "description": format!("{name} just left the room") })
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
            roster: Mutex::new(HashMap::new()),
        });
        let app = chat.clone();
        let ns = io.of("/");
        ns.on_connect(move |socket| app.clone().on_connect(&socket));
        if clustered {
            let app = Arc::downgrade(&chat);
            ns.on_server_event(ROSTER_IN, move |args, _| {
                if let (Some(chat), Some(announced)) = (app.upgrade(), args.into_iter().next()) {
                    chat.remember(announced);
                }
            });
            let (app, here) = (Arc::downgrade(&chat), Arc::downgrade(&ns));
            ns.on_server_event(ROSTER_ASK, move |_, ack| {
                if let (Some(chat), Some(ns)) = (app.upgrade(), here.upgrade()) {
                    ack.send(Value::Array(chat.announced_here(&ns)));
                }
            });
            let app = Arc::downgrade(&chat);
            ns.on_server_event(ROSTER_OUT, move |args, _| {
                if let (Some(chat), Some(Value::String(id))) = (app.upgrade(), args.first()) {
                    chat.roster().remove(id);
                }
            });
            tokio::spawn(watch_nodes(Arc::downgrade(&chat), Arc::downgrade(&ns)));
        }
        chat
    }

    fn roster(&self) -> MutexGuard<'_, HashMap<String, RemoteUser>> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds another node's user, as announced, to the roster.
    fn remember(&self, announced: Value) {
        let Some(id) = announced["id"].as_str().map(str::to_owned) else {
            return;
        };
        let Ok(mut user) = serde_json::from_value::<RemoteUser>(announced) else {
            return;
        };
        user.heard = self.logins.fetch_add(1, Ordering::Relaxed);
        let mut roster = self.roster();
        if roster.len() < ROSTER_MAX {
            roster.insert(id, user);
        }
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
            let chat = chat.clone();
            async move { chat.login(&socket, event).await }
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

    async fn login(&self, socket: &Arc<Socket>, event: Event) {
        if !require_ack(socket, &event.ack, "login") {
            return;
        }
        let payload = event.args.into_iter().next().unwrap_or(Value::Null);
        // The store is checked and written at once, so two logins on this node cannot both
        // take a name; the other nodes are asked after.
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
            Err(e) => return refuse(event.ack, e),
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
                return refuse(event.ack, LoginError::NameTaken);
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
                return refuse(event.ack, LoginError::NameTaken);
            }
            if let Some(seq) = claim {
                // The join order across nodes: when (to the microsecond: logins a round trip
                // apart must not tie), then this node's count.
                socket.set_data(json!({ "user": user, "joined": [now_us(), seq] }));
                if let Some(list) = &mut members {
                    list.push(user.clone());
                }
                if let Some(node) = ns.node_id() {
                    ns.server_side_emit(ROSTER_IN, vec![announcement(&user, &node)]);
                }
            }
            // In the room before out of the claims: another node's question always finds it
            // in one of them.
            socket.join(&key);
            socket.leave(&pending);
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
        let _ = event.ack.send(&json!({ "user": user }));
    }

    /// Claims a name in a room across the cluster. The claim is made visible first (the
    /// socket carries the user, marked pending with the claim's number and time, in a room of
    /// its own kind, until the login completes or gives up), then every node is asked for that
    /// name among the room's users and the pending claims:
    /// - a user has it, or an earlier claim (by time, then socket id) is pending: refused;
    /// - only later claims are pending: asked again (a few times, briefly) until they have
    ///   given way, which they do on seeing this one; if one has won instead, refused.
    ///
    /// Two claims racing on two nodes: the later one sees the earlier (it was visible before
    /// the later one asked) unless it asked before the earlier existed, and then the earlier
    /// one finds it, still pending or already in the room, in every round. So one of them
    /// wins, or (a node too slow to answer) neither, never both.
    ///
    /// The last answers give the room's list (without the new user, who joins after its last
    /// member): a login asks the cluster once, unless a claim in the room was pending, whose
    /// user the list could not place yet.
    async fn claim_name(&self, socket: &Arc<Socket>, user: &User, n: u64) -> Claim {
        let ns = socket.namespace();
        let pending = pending_key(&user.room);
        let since = now_us();
        socket.set_data(json!({ "user": user, "pending": true, "claim": n, "since": since }));
        socket.join(&pending);
        let mine = (since, user.id.as_str());
        let mut first_answers = None;
        for round in 0..CLAIM_ROUNDS {
            if round > 0 {
                // A node slow to answer makes every round as slow: the waiting is bounded in
                // time as well as in rounds.
                if first_answers
                    .is_some_and(|at: tokio::time::Instant| at.elapsed() > CLAIM_PATIENCE)
                {
                    break;
                }
                tokio::time::sleep(CLAIM_PAUSE).await;
            }
            let answers = ns
                .to(&room_key(&user.room))
                .to(&pending)
                .fetch_available_sockets()
                .await;
            let sockets = match answers {
                Ok(fetched) => fetched.sockets,
                Err(e) => {
                    tracing::warn!(error = %e, "name checked on this node only");
                    return Claim::Granted(None);
                }
            };
            first_answers.get_or_insert_with(tokio::time::Instant::now);
            let others_in_room = || {
                sockets.iter().filter(|s| {
                    s.id != user.id && s.data["user"]["room"].as_str() == Some(user.room.as_str())
                })
            };
            let mut later_rival = false;
            for rival in others_in_room().filter(|s| {
                s.data["user"]["name"]
                    .as_str()
                    .is_some_and(|name| name.eq_ignore_ascii_case(&user.name))
            }) {
                if rival.data.get("joined").is_some() {
                    return Claim::Refused;
                }
                let theirs = (rival.data["since"].as_u64().unwrap_or(0), rival.id.as_str());
                if theirs < mine {
                    return Claim::Refused;
                }
                later_rival = true;
            }
            if later_rival {
                continue;
            }
            if others_in_room().any(|s| s.data.get("joined").is_none()) {
                return Claim::Granted(None);
            }
            return Claim::Granted(Some(room_list(&sockets, &user.room)));
        }
        Claim::Refused
    }

    /// Whether the socket's login is complete: at once on one node; in a cluster only once the
    /// other nodes have answered that the name is free.
    fn announced(&self, socket: &Socket) -> bool {
        !self.clustered || socket.data().get("joined").is_some()
    }

    /// Logs a socket's user out (logout or disconnect) and tells the room.
    fn leave(self: &Arc<Self>, socket: &Arc<Socket>) {
        let Some(user) = self.users().delete(socket.id()) else {
            return;
        };
        // A socket that leaves before its login was announced was never in the room for anyone.
        let announced = self.announced(socket);
        socket.set_data(Value::Null);
        if !announced {
            return;
        }
        let key = room_key(&user.room);
        socket.leave(&key);
        let ns = socket.namespace().clone();
        if self.clustered {
            // First, so that a node dying between the two cannot have its user said goodbye
            // to twice.
            ns.server_side_emit(ROSTER_OUT, vec![Value::String(user.id.clone())]);
        }
        let _ = ns.to(&key).emit("notification", &left_notice(&user.name));
        if !self.clustered {
            let members = self.users().in_room(&user.room);
            let _ = ns.to(&key).emit("users", &members);
            return;
        }
        let chat = self.clone();
        tokio::spawn(async move {
            let members = chat.members(&ns, &user.room).await;
            let _ = ns.to(&key).emit("users", &members);
        });
    }

    /// This node's logged-in users, as it announces them to the others.
    fn announced_here(&self, ns: &Arc<Namespace>) -> Vec<Value> {
        let Some(node) = ns.node_id() else {
            return Vec::new();
        };
        ns.sockets()
            .iter()
            .filter_map(|socket| {
                let data = socket.data();
                data.get("joined")?;
                let user: User = serde_json::from_value(data["user"].clone()).ok()?;
                Some(announcement(&user, &node))
            })
            .collect()
    }

    /// Fills the roster with the users the other nodes have now: a node that joins the cluster
    /// late would otherwise know only of the logins after it.
    async fn learn_roster(&self, ns: &Arc<Namespace>) {
        match ns.server_side_emit_with_ack(ROSTER_ASK, Vec::new()).await {
            Ok(answers) => {
                for answer in answers {
                    if let Value::Array(users) = answer {
                        users.into_iter().for_each(|user| self.remember(user));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the other nodes' users are not known"),
        }
    }

    /// After nodes died: tells this node's members of each room which users of those nodes
    /// left it, then sends them the room's list, which the dead nodes' users are no longer in.
    async fn nodes_gone(&self, ns: &Arc<Namespace>, gone: &[String]) {
        let mut left: Vec<RemoteUser> = Vec::new();
        self.roster().retain(|_, user| {
            let dead = gone.contains(&user.node);
            if dead {
                left.push(user.clone());
            }
            !dead
        });
        left.sort_by_key(|user| user.heard);
        let here: HashSet<String> = self.users().rooms().into_iter().collect();
        for user in left.iter().filter(|user| here.contains(&user.room)) {
            let _ = ns
                .to(&room_key(&user.room))
                .local()
                .emit("notification", &left_notice(&user.name));
        }
        self.refresh_lists(ns).await;
    }

    /// Sends this node's members of every room the current list.
    async fn refresh_lists(&self, ns: &Arc<Namespace>) {
        let rooms = self.users().rooms();
        for room in rooms {
            let members = self.members(ns, &room).await;
            let _ = ns.to(&room_key(&room)).local().emit("users", &members);
        }
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
        let _ = socket.namespace().to(&room_key(&user.room)).emit(
            "roomMessage",
            &json!({ "message": text, "from": user.name }),
        );
    }
}

/// The logged-in users of `room` among fetched sockets (sockets still claiming a name have
/// no `joined` yet), in join order.
fn room_list(sockets: &[SocketInfo], room: &str) -> Vec<User> {
    let mut found: Vec<((u64, u64), User)> = sockets
        .iter()
        .filter_map(|s| {
            let user: User = serde_json::from_value(s.data["user"].clone()).ok()?;
            let joined = &s.data["joined"];
            let order = (joined[0].as_u64()?, joined[1].as_u64()?);
            (user.room == room).then_some((order, user))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    found.into_iter().map(|(_, user)| user).collect()
}

/// Rounds of questions a name claim asks at most while a later claim for the name is pending,
/// and the pause between two.
const CLAIM_ROUNDS: u32 = 10;
const CLAIM_PAUSE: Duration = Duration::from_millis(10);
/// How long after its first answers a claim goes on asking, at most.
const CLAIM_PATIENCE: Duration = Duration::from_millis(500);

/// Microseconds since the epoch: when a claim was made, or a user joined.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// How often a clustered node checks whether a node left.
const NODE_CHECK: Duration = Duration::from_secs(1);

/// Checks in a row a node must be missing from to count as gone. When Redis comes back, live
/// nodes are missing until they have subscribed again, which takes each one up to its
/// reconnection backoff (2 s at most); only checks made while this node is subscribed
/// count.
const GONE_AFTER: u32 = 4;

/// Watches which nodes are in the cluster; when one is gone, its users are gone from every
/// fetched list, and this node's rooms are told who left and sent their lists again. Ends
/// with the chat.
async fn watch_nodes(chat: Weak<Chat>, ns: Weak<Namespace>) {
    // Every node seen, with how many checks in a row it has been missing from.
    let mut known: HashMap<String, u32> = HashMap::new();
    let mut learned = false;
    loop {
        tokio::time::sleep(NODE_CHECK).await;
        let (Some(chat), Some(ns)) = (chat.upgrade(), ns.upgrade()) else {
            return;
        };
        let Ok(now) = ns.node_ids().await else {
            continue;
        };
        if ns.node_id().is_some_and(|me| !now.contains(&me)) {
            // This node is not subscribed (yet): neither may the others be.
            continue;
        }
        if !learned {
            learned = true;
            if now.len() > 1 {
                chat.learn_roster(&ns).await;
            }
        }
        for node in &now {
            known.insert(node.clone(), 0);
        }
        let mut gone = Vec::new();
        known.retain(|node, missing| {
            if now.contains(node) {
                return true;
            }
            *missing += 1;
            if *missing < GONE_AFTER {
                return true;
            }
            gone.push(node.clone());
            false
        });
        if !gone.is_empty() {
            tracing::info!(
                nodes = now.len(),
                gone = gone.len(),
                "nodes left the cluster; telling the rooms"
            );
            chat.nodes_gone(&ns, &gone).await;
        }
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
