//! The chat across nodes (`redis_url` set, on the Redis adapter).
//!
//! The nodes share no store. Room lists and the duplicate-name rule are answered by fetching
//! a room's sockets from every node (each logged-in socket carries its user in its data); a
//! name is claimed before it is taken, so that two nodes never grant it at once; and every
//! node keeps a roster of the other nodes' users, so that when a node dies the others can tell
//! their rooms who left.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use super::user_store::User;
use super::{Chat, Notice, entered_notice, left_notice, pending_key, room_key};
use crate::socketio::{Namespace, Socket, SocketInfo};

/// A user of another node.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(super) struct RemoteUser {
    name: String,
    room: String,
    node: String,
    /// When this node heard of the login, to tell the goodbyes in login order.
    #[serde(skip)]
    heard: u64,
}

/// The other nodes' users, by socket id.
#[derive(Debug, Default)]
pub(super) struct Roster {
    users: HashMap<String, RemoteUser>,
    /// While the roster is being learned: the ids that left since the question went out, which
    /// the answers (taken before) may still list.
    left_while_learning: Option<HashSet<String>>,
}

impl Roster {
    fn insert(&mut self, id: String, user: RemoteUser) {
        if self.users.len() < ROSTER_MAX {
            self.users.insert(id, user);
        }
    }

    fn remove(&mut self, id: &str) {
        self.users.remove(id);
        if let Some(left) = &mut self.left_while_learning {
            if left.len() < ROSTER_MAX {
                left.insert(id.to_owned());
            }
        }
    }
}

/// What the cluster answered to a name claim.
pub(super) enum Claim {
    /// The name is someone else's in the room, or an earlier claim's.
    Refused,
    /// The name is free; with the room's list before the new user, when the answers gave a
    /// complete one.
    Granted(Option<Vec<User>>),
}

/// Server-side events between chat nodes: a user logged in (`{id, name, room, node}`), a user
/// left (its id), and a node asking for everyone's users (each node answers `{node, users}`
/// with the list of its own), when it joins the cluster and after it may have missed news.
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

/// Marks a socket's login complete and tells the other nodes' rosters.
pub(super) fn joined(socket: &Socket, user: &User, seq: u64) {
    // The join order across nodes: when (to the microsecond: logins a round trip apart must
    // not tie), then this node's count.
    socket.set_data(json!({ "user": user, "joined": [now_us(), seq] }));
    let ns = socket.namespace();
    if let Some(node) = ns.node_id() {
        ns.server_side_emit(ROSTER_IN, vec![announcement(user, &node)]);
    }
}

/// Tells the other nodes' rosters that a user of this node left.
pub(super) fn logged_out(ns: &Namespace, user: &User) {
    ns.server_side_emit(ROSTER_OUT, vec![Value::String(user.id.clone())]);
}

impl Chat {
    /// Subscribes to the other nodes' roster news and starts watching for nodes that die.
    pub(super) fn join_cluster(self: &Arc<Self>, ns: &Arc<Namespace>) {
        let app = Arc::downgrade(self);
        ns.on_server_event(ROSTER_IN, move |args, _| {
            if let (Some(chat), Some(announced)) = (app.upgrade(), args.into_iter().next()) {
                chat.remember(announced);
            }
        });
        let (app, here) = (Arc::downgrade(self), Arc::downgrade(ns));
        ns.on_server_event(ROSTER_ASK, move |_, ack| {
            if let (Some(chat), Some(ns)) = (app.upgrade(), here.upgrade()) {
                if let Some(node) = ns.node_id() {
                    let users = chat.announced_here(&ns, &node);
                    ack.send(json!({ "node": node, "users": users }));
                }
            }
        });
        let app = Arc::downgrade(self);
        ns.on_server_event(ROSTER_OUT, move |args, _| {
            if let (Some(chat), Some(Value::String(id))) = (app.upgrade(), args.first()) {
                chat.roster().remove(id);
            }
        });
        tokio::spawn(watch_nodes(Arc::downgrade(self), Arc::downgrade(ns)));
    }

    fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds another node's user, as announced, to the roster.
    fn remember(&self, announced: Value) {
        if let Some((id, user)) = self.heard_of(announced) {
            self.roster().insert(id, user);
        }
    }

    fn heard_of(&self, announced: Value) -> Option<(String, RemoteUser)> {
        let id = announced["id"].as_str()?.to_owned();
        let mut user = serde_json::from_value::<RemoteUser>(announced).ok()?;
        user.heard = self.logins.fetch_add(1, Ordering::Relaxed);
        Some((id, user))
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
    /// A node that does not answer in time is not waited for (it may never answer), but the
    /// users it announced are: a name that the roster has in the room is refused then.
    ///
    /// The last answers give the room's list (without the new user, who joins after its last
    /// member): a login asks the cluster once, unless a claim in the room was pending, whose
    /// user the list could not place yet.
    pub(super) async fn claim_name(&self, socket: &Arc<Socket>, user: &User, n: u64) -> Claim {
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
                Ok(fetched) if fetched.nodes_missing > 0 && self.roster_has(user) => {
                    return Claim::Refused;
                }
                Ok(fetched) => fetched.sockets,
                Err(_) if self.roster_has(user) => return Claim::Refused,
                Err(e) => {
                    tracing::warn!(error = %e, "name checked on this node and the roster only");
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

    /// Whether another node announced a user of `user`'s name in its room.
    fn roster_has(&self, user: &User) -> bool {
        self.roster()
            .users
            .values()
            .any(|other| other.room == user.room && other.name.eq_ignore_ascii_case(&user.name))
    }

    /// This node's logged-in users, as it announces them to the others.
    fn announced_here(&self, ns: &Arc<Namespace>, node: &str) -> Vec<Value> {
        ns.sockets()
            .iter()
            .filter_map(|socket| {
                let data = socket.data();
                data.get("joined")?;
                let user: User = serde_json::from_value(data["user"].clone()).ok()?;
                Some(announcement(&user, node))
            })
            .collect()
    }

    /// Sets the roster to the users the other nodes have now: a node that joins the cluster
    /// late would otherwise know only of the logins after it, and one that lost Redis for a
    /// while would keep users whose logout it missed (and say goodbye for them when their node
    /// dies) and lack those whose login it missed. What a node that does not answer had in the
    /// roster stays.
    /// Says whether every node answered.
    async fn learn_roster(&self, ns: &Arc<Namespace>) -> bool {
        // News heard from here on is newer than the answers.
        let asked = self.logins.load(Ordering::Relaxed);
        self.roster().left_while_learning = Some(HashSet::new());
        let answers = ns.server_side_emit_with_ack(ROSTER_ASK, Vec::new()).await;
        let left = self.roster().left_while_learning.take().unwrap_or_default();
        let answers = match answers {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, "the other nodes' users are not known");
                return false;
            }
        };
        for answer in answers {
            let (Some(node), Some(Value::Array(users))) = (
                answer["node"].as_str().map(str::to_owned),
                answer.get("users").cloned(),
            ) else {
                continue;
            };
            let users: Vec<_> = users
                .into_iter()
                .filter_map(|user| self.heard_of(user))
                .filter(|(id, user)| user.node == node && !left.contains(id))
                .collect();
            let mut roster = self.roster();
            roster
                .users
                .retain(|_, user| user.node != node || user.heard >= asked);
            for (id, user) in users {
                if !roster.users.contains_key(&id) {
                    roster.insert(id, user);
                }
            }
        }
        true
    }

    /// After nodes died: tells this node's members of each room which users of those nodes
    /// left it, then sends them the room's list, which the dead nodes' users are no longer in.
    async fn nodes_gone(&self, ns: &Arc<Namespace>, gone: &[String]) {
        let mut left: Vec<(String, RemoteUser)> = Vec::new();
        self.roster().users.retain(|id, user| {
            let dead = gone.contains(&user.node);
            if dead {
                left.push((id.clone(), user.clone()));
            }
            !dead
        });
        self.tell_rooms(ns, left, left_notice).await;
    }

    /// After nodes found gone came back (they had lost Redis for a while, and their users
    /// were said to have left): learns their users again, tells this node's members of each
    /// room which of them are back, and sends them the room's list. Says whether it could
    /// (every node answered).
    async fn nodes_back(&self, ns: &Arc<Namespace>, back: &[String]) -> bool {
        if !self.learn_roster(ns).await {
            return false;
        }
        let users: Vec<(String, RemoteUser)> = self
            .roster()
            .users
            .iter()
            .filter(|(_, user)| back.contains(&user.node))
            .map(|(id, user)| (id.clone(), user.clone()))
            .collect();
        self.tell_rooms(ns, users, entered_notice).await;
        true
    }

    /// Tells this node's members of each room which of `users` (by socket id) left it or came
    /// back (`notice`), in login order, then sends the room its list. A user whose name someone
    /// else holds in the room now is not told of: the clients of a node that died log in again
    /// on another, often before that node counts as gone, and the room would hear that a user
    /// who is there has just left.
    async fn tell_rooms(
        &self,
        ns: &Arc<Namespace>,
        mut users: Vec<(String, RemoteUser)>,
        notice: fn(&str) -> Notice,
    ) {
        users.sort_by_key(|(_, user)| user.heard);
        let rooms = self.users().rooms();
        for room in rooms {
            let members = self.members(ns, &room).await;
            let to = ns.to(&room_key(&room)).local();
            for (id, user) in users.iter().filter(|(_, user)| user.room == room) {
                let taken = members
                    .iter()
                    .any(|m| m.id != *id && m.name.eq_ignore_ascii_case(&user.name));
                if !taken {
                    let _ = to.emit("notification", &notice(&user.name));
                }
            }
            let _ = to.emit("users", &members);
        }
    }

    /// Sends this node's members of every room the current list.
    async fn refresh_lists(&self, ns: &Arc<Namespace>) {
        self.tell_rooms(ns, Vec::new(), left_notice).await;
    }
}

/// The logged-in users of `room` among fetched sockets (sockets still claiming a name have
/// no `joined` yet), in join order.
pub(super) fn room_list(sockets: &[SocketInfo], room: &str) -> Vec<User> {
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

/// After Redis was away, how long after sending its rooms their lists again a node sends them
/// once more: lists made during the outage (without the users of the nodes that could not be
/// asked) may still arrive from other nodes, which hold their broadcasts until Redis and the
/// cluster's subscribers are back.
const RELIST_AGAIN: Duration = Duration::from_secs(5);

/// Checks in a row a node must be missing from to count as gone. When Redis comes back, live
/// nodes are missing until they have subscribed again, which takes each one up to its
/// reconnection backoff (2 s at most); only checks made while this node is subscribed
/// count.
const GONE_AFTER: u32 = 4;

/// Nodes found gone that a node remembers, in case they come back.
const GONE_REMEMBERED: usize = 1024;

/// Watches which nodes are in the cluster; when one is gone, its users are gone from every
/// fetched list, and this node's rooms are told who left and sent their lists again (and who
/// is back, when such a node was only cut off from Redis for a while). Learns
/// the roster when the node starts and again after each time it lost Redis. Ends with the
/// chat.
async fn watch_nodes(chat: Weak<Chat>, ns: Weak<Namespace>) {
    // Every node seen, with how many checks in a row it has been missing from.
    let mut known: HashMap<String, u32> = HashMap::new();
    // Nodes found gone, which may come back, oldest first.
    let mut gone_before: VecDeque<String> = VecDeque::new();
    // Whether the roster is up to date but for the news since; not after Redis was away.
    let mut learned = false;
    // Whether the roster was learned once, and whether Redis was away since (this node's
    // rooms' lists may be wrong then).
    let mut learned_once = false;
    let mut lost_redis = false;
    let mut relist_at: Option<tokio::time::Instant> = None;
    let mut reconnections = 0;
    loop {
        tokio::time::sleep(NODE_CHECK).await;
        let (Some(chat), Some(ns)) = (chat.upgrade(), ns.upgrade()) else {
            return;
        };
        if ns.reconnections() != reconnections {
            reconnections = ns.reconnections();
            learned = false;
            lost_redis |= learned_once;
        }
        let Ok(now) = ns.node_ids().await else {
            learned = false;
            lost_redis |= learned_once;
            continue;
        };
        if ns.node_id().is_some_and(|me| !now.contains(&me)) {
            // This node is not subscribed (yet): neither may the others be, and news may have
            // been lost.
            learned = false;
            lost_redis |= learned_once;
            continue;
        }
        // Once every node known before is back (or has been found gone), so that each can
        // answer for its own users.
        if !learned && known.keys().all(|node| now.contains(node)) {
            // Asked again at the next check until every node answers: a node whose question
            // waited behind what the others held through an outage may time out.
            learned = now.len() < 2 || chat.learn_roster(&ns).await;
            learned_once = true;
            // The lists sent while Redis was away lacked the users of the nodes that could not
            // be asked, and nothing else would put that right until the room's next login or
            // logout.
            if std::mem::take(&mut lost_redis) {
                chat.refresh_lists(&ns).await;
                relist_at = Some(tokio::time::Instant::now() + RELIST_AGAIN);
            }
        }
        if relist_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
            relist_at = None;
            chat.refresh_lists(&ns).await;
        }
        let back: Vec<String> = now
            .iter()
            .filter(|node| gone_before.contains(node))
            .cloned()
            .collect();
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
            for node in gone {
                if gone_before.len() == GONE_REMEMBERED {
                    gone_before.pop_front();
                }
                gone_before.push_back(node);
            }
        }
        if !back.is_empty() {
            tracing::info!(
                back = back.len(),
                "nodes found gone came back; telling the rooms"
            );
            // Again at the next check until every node answers: the users of the nodes back
            // must be known again, or no goodbye is said for them when their node dies.
            if chat.nodes_back(&ns, &back).await {
                gone_before.retain(|node| !back.contains(node));
            }
        }
    }
}
