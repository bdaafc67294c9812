//! Connection state recovery, as Node's `connectionStateRecovery` does it: a client whose
//! connection dropped for a short while gets its socket back (id, rooms, data) and the events
//! it missed meanwhile.
//!
//! When recovery is on, CONNECT answers carry a private session id (`pid`) beside the socket
//! id, and every event that can be replayed carries an offset as its last argument: a string
//! the stock client remembers (and hands to its listener as one more argument). On reconnecting
//! the client puts both in its CONNECT auth; the namespace then finds the socket it had and the
//! events after that offset that reached its rooms.
//!
//! Replayable are the events sent without an acknowledgement and not volatile, to a room, the
//! namespace or one socket, as in Node. They are kept for as long as a disconnected socket may
//! come back, within a count and a byte budget: a client whose offset has been dropped is not
//! recovered, so that it never believes it missed nothing when it did. It all lives in this
//! node's memory: a client that comes back to another node of a cluster connects afresh.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::adapter::BroadcastTarget;
use crate::engineio::Frame;
use crate::id::{Id, IdMap};

/// How long and how much is kept for clients that may come back. A recovered socket does not
/// go through the namespace's middleware again (Node's default, `skipMiddlewares`).
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a disconnected socket can be recovered, and so how long events are kept.
    pub max_disconnection: Duration,
    /// Events kept at most per namespace; the oldest go first.
    pub max_events: usize,
    /// Bytes of events (text and attachments) kept at most per namespace.
    pub max_event_bytes: usize,
    /// Disconnected sockets kept at most per namespace.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection: Duration::from_secs(120),
            max_events: 100_000,
            max_event_bytes: 64 * 1024 * 1024,
            max_sessions: 100_000,
        }
    }
}

/// A socket found again: what it had, and the frames of the events it missed, in order.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) sid: Id,
    pub(crate) pid: Id,
    since: u64,
    pub(crate) kept: Kept,
    pub(crate) missed: Vec<Frame>,
    /// Their size, as a session's outbound queue counts it.
    pub(crate) missed_bytes: usize,
}

/// Random characters an offset starts with (about 48 bits).
const OFFSET_PREFIX_LEN: usize = 8;

/// One namespace's store. Callers hold its lock across stamping and delivering an event, and
/// across restoring a socket and queueing what it missed: an event is then either among the
/// missed ones or delivered live to the restored socket, never both and never neither.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) config: RecoveryConfig,
    state: std::sync::Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The pid of every connected socket, by socket id, and the first offset it could get.
    live: IdMap<(Id, u64)>,
    /// Disconnected sockets by pid, and the order they expire in.
    sessions: HashMap<Id, Persisted>,
    expiry: VecDeque<(Instant, Id)>,
    events: VecDeque<Stored>,
    event_bytes: usize,
    next_offset: u64,
    /// What every offset of this store starts with: the client takes the last argument of any
    /// event for its offset when it is a string, so an application's `"3"`, or another
    /// node's offset, must not name one of this store's events.
    offset_prefix: String,
}

/// What a socket that left had, for its return: its rooms (read before it left them), its
/// data and the program's typed values (a recovered socket does not pass the middleware that
/// set them again).
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) rooms: Vec<String>,
    pub(crate) data: Value,
    pub(crate) extensions: hyper::http::Extensions,
}

#[derive(Debug)]
struct Persisted {
    sid: Id,
    /// The first offset the socket could get: the client cannot ask for what came before.
    since: u64,
    kept: Kept,
    at: Instant,
}

#[derive(Debug)]
struct Stored {
    offset: u64,
    at: Instant,
    target: BroadcastTarget,
    frames: Vec<Frame>,
}

impl Recovery {
    pub(crate) fn new(config: RecoveryConfig) -> Recovery {
        Recovery {
            config,
            state: std::sync::Mutex::new(State {
                offset_prefix: Id::random().as_str()[..OFFSET_PREFIX_LEN].to_owned(),
                ..State::default()
            }),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Restored {
    /// Registers the recovered socket again under its pid.
    pub(crate) fn register(&self, state: &mut State) {
        state.register_since(self.sid, self.pid, self.since);
    }
}

impl State {
    /// A new socket's pid: from now on its events are counted as the socket's. (A socket must
    /// be registered before it is reachable, so that every offset it gets is at least this.)
    pub(crate) fn register(&mut self, sid: Id, pid: Id) {
        self.register_since(sid, pid, self.next_offset);
    }

    /// A socket's pid, and the first offset it could get (for a recovered socket, the first
    /// time it connected).
    fn register_since(&mut self, sid: Id, pid: Id, since: u64) {
        self.live.insert(sid, (pid, since));
    }

    /// A socket left; when it may come back, what it had is kept.
    pub(crate) fn leave(&mut self, config: &RecoveryConfig, sid: Id, keep: Option<Kept>) {
        let Some((pid, since)) = self.live.remove(&sid) else {
            return;
        };
        // What expired goes on every departure too, not only when events are sent: a
        // namespace that has gone quiet does not hold its last events for long.
        let now = Instant::now();
        self.expire_events(config, now);
        self.expire_sessions(config, now);
        let Some(kept) = keep else {
            return;
        };
        while self.sessions.len() >= config.max_sessions.max(1) {
            let Some((at, oldest)) = self.expiry.pop_front() else {
                break;
            };
            // An entry for a pid recovered and lost again since is stale: only its own time
            // removes the session.
            if self.sessions.get(&oldest).is_some_and(|s| s.at == at) {
                self.sessions.remove(&oldest);
            }
        }
        let at = now;
        self.sessions.insert(
            pid,
            Persisted {
                sid,
                since,
                kept,
                at,
            },
        );
        self.expiry.push_back((at, pid));
    }

    /// Appends the next offset to an event's frames and keeps them for `target`'s sockets.
    /// Returns the frames to deliver.
    pub(crate) fn stamp(
        &mut self,
        config: &RecoveryConfig,
        frames: Vec<Frame>,
        target: &BroadcastTarget,
    ) -> Vec<Frame> {
        let now = Instant::now();
        self.expire_events(config, now);
        let offset = self.next_offset;
        let frames = match with_offset(frames, &format!("{}{offset}", self.offset_prefix)) {
            Ok(frames) => frames,
            // Not an event's argument array: it goes out as it is, and cannot be replayed.
            Err(frames) => return frames,
        };
        self.next_offset += 1;
        let bytes = frames_len(&frames);
        if bytes > config.max_event_bytes || config.max_events == 0 {
            // Too large to keep at all: whoever misses it cannot be recovered.
            self.drop_all_events();
            return frames;
        }
        while self.events.len() >= config.max_events
            || self.event_bytes + bytes > config.max_event_bytes
        {
            self.pop_event();
        }
        self.event_bytes += bytes;
        self.events.push_back(Stored {
            offset,
            at: now,
            target: target.clone(),
            frames: frames.clone(),
        });
        frames
    }

    /// The socket that had `pid`, with the events after `offset` that reached its rooms; `None`
    /// when it is unknown, expired, or when events after its offset are no longer all kept.
    /// Either way the pid is used up: the caller registers it again for the recovered socket.
    pub(crate) fn restore(
        &mut self,
        config: &RecoveryConfig,
        pid: &str,
        offset: &str,
    ) -> Option<Restored> {
        let now = Instant::now();
        self.expire_sessions(config, now);
        self.expire_events(config, now);
        let pid = Id::parse(pid)?;
        let session = self.sessions.remove(&pid)?;
        let offset: u64 = offset
            .strip_prefix(self.offset_prefix.as_str())?
            .parse()
            .ok()?;
        // Where the events the socket may have missed start.
        let first = if offset < session.since {
            // A client keeps its last offset through a connection on which no event reached
            // it: an offset from before this socket says that none of the socket's own did.
            // They must all still be kept.
            let oldest = self.events.front().map_or(self.next_offset, |e| e.offset);
            if oldest > session.since {
                return None;
            }
            self.events.partition_point(|e| e.offset < session.since)
        } else {
            // The offset must still be kept: the events after it are then all here.
            self.events
                .binary_search_by_key(&offset, |e| e.offset)
                .ok()?
                + 1
        };
        let sid_room = session.sid.as_str();
        let reaches = |target: &BroadcastTarget| {
            let mut rooms = session
                .kept
                .rooms
                .iter()
                .map(String::as_str)
                .chain([sid_room]);
            let included = target.rooms.is_empty()
                || rooms
                    .clone()
                    .any(|room| target.rooms.iter().any(|r| r == room));
            included && !rooms.any(|room| target.except.iter().any(|r| r == room))
        };
        let missed = self
            .events
            .iter()
            .skip(first)
            .filter(|e| reaches(&e.target))
            .flat_map(|e| e.frames.iter().cloned())
            .collect::<Vec<_>>();
        let missed_bytes = frames_len(&missed);
        Some(Restored {
            sid: session.sid,
            pid,
            since: session.since,
            kept: session.kept,
            missed,
            missed_bytes,
        })
    }

    /// How long until the last disconnected socket kept expires; `None` when none is kept.
    pub(crate) fn kept_until(&mut self, config: &RecoveryConfig, now: Instant) -> Option<Duration> {
        self.expire_sessions(config, now);
        if self.sessions.is_empty() {
            return None;
        }
        let (newest, _) = self.expiry.back()?;
        Some(
            config
                .max_disconnection
                .saturating_sub(now.saturating_duration_since(*newest)),
        )
    }

    fn expire_sessions(&mut self, config: &RecoveryConfig, now: Instant) {
        while let Some(&(at, pid)) = self.expiry.front() {
            if now.saturating_duration_since(at) <= config.max_disconnection {
                break;
            }
            self.expiry.pop_front();
            // A pid restored and lost again has a newer entry: only its own time removes it.
            if self.sessions.get(&pid).is_some_and(|s| s.at == at) {
                self.sessions.remove(&pid);
            }
        }
    }

    fn expire_events(&mut self, config: &RecoveryConfig, now: Instant) {
        while self
            .events
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > config.max_disconnection)
        {
            self.pop_event();
        }
    }

    fn pop_event(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.event_bytes -= frames_len(&e.frames);
        }
    }

    fn drop_all_events(&mut self) {
        self.events.clear();
        self.event_bytes = 0;
    }
}

fn frames_len(frames: &[Frame]) -> usize {
    frames.iter().map(Frame::len).sum()
}

/// The frames of an event with `offset` appended to its arguments: `42["a",1]` becomes
/// `42["a",1,"7"]`. The frames come back as they were when the text does not end an array.
fn with_offset(mut frames: Vec<Frame>, offset: &str) -> Result<Vec<Frame>, Vec<Frame>> {
    let Some(Frame::Text(text)) = frames.first() else {
        return Err(frames);
    };
    let Some(body) = text.as_str().strip_suffix(']') else {
        return Err(frames);
    };
    let mut stamped = String::with_capacity(text.len() + offset.len() + 3);
    stamped.push_str(body);
    if !body.ends_with('[') {
        stamped.push(',');
    }
    stamped.push('"');
    stamped.push_str(offset);
    stamped.push_str("\"]");
    frames[0] = Frame::Text(stamped.into());
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(frames: &[Frame]) -> &str {
        match &frames[0] {
            Frame::Text(t) => t.as_str(),
            Frame::Binary(_) => panic!("binary first"),
        }
    }

    fn event(s: &'static str) -> Vec<Frame> {
        vec![Frame::Text(s.into())]
    }

    fn to(rooms: &[&str], except: &[&str]) -> BroadcastTarget {
        BroadcastTarget {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            except: except.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn the_offset_is_the_last_argument() {
        let stamped = with_offset(event(r#"42["a",1]"#), "7").unwrap();
        assert_eq!(text(&stamped), r#"42["a",1,"7"]"#);
        let stamped = with_offset(event(r#"42/chat,["a"]"#), "0").unwrap();
        assert_eq!(text(&stamped), r#"42/chat,["a","0"]"#);
        let binary = vec![
            Frame::Text(r#"451-["a",{"_placeholder":true,"num":0}]"#.into()),
            Frame::Binary(Bytes::from_static(b"\x01")),
        ];
        let stamped = with_offset(binary, "12").unwrap();
        assert_eq!(
            text(&stamped),
            r#"451-["a",{"_placeholder":true,"num":0},"12"]"#
        );
        assert_eq!(stamped.len(), 2);
        assert!(with_offset(event("40"), "1").is_err());
        let empty = with_offset(event("42[]"), "3").unwrap();
        assert_eq!(text(&empty), r#"42["3"]"#);
    }

    fn kept(rooms: Vec<String>, data: impl Into<Value>) -> Kept {
        Kept {
            rooms,
            data: data.into(),
            extensions: Default::default(),
        }
    }

    fn persisted(state: &mut State, config: &RecoveryConfig, rooms: &[&str]) -> (Id, Id) {
        let (sid, pid) = (Id::random(), Id::random());
        state.register(sid, pid);
        let rooms = rooms.iter().map(|r| r.to_string()).collect();
        state.leave(config, sid, Some(kept(rooms, "data")));
        (sid, pid)
    }

    #[test]
    fn a_socket_gets_what_reached_its_rooms_after_its_offset() {
        let config = RecoveryConfig::default();
        let mut state = State::default();
        let (sid, pid) = (Id::random(), Id::random());
        state.register(sid, pid);
        let first = state.stamp(&config, event(r#"42["before"]"#), &to(&[], &[]));
        assert_eq!(text(&first), r#"42["before","0"]"#);
        state.leave(&config, sid, Some(kept(vec!["r1".into()], "data")));
        state.stamp(&config, event(r#"42["all"]"#), &to(&[], &[]));
        state.stamp(&config, event(r#"42["r1"]"#), &to(&["r1"], &[]));
        state.stamp(&config, event(r#"42["r2"]"#), &to(&["r2"], &[]));
        state.stamp(&config, event(r#"42["not-r1"]"#), &to(&[], &["r1"]));
        state.stamp(&config, event(r#"42["mine"]"#), &to(&[sid.as_str()], &[]));
        let restored = state.restore(&config, pid.as_str(), "0").unwrap();
        assert_eq!(restored.sid, sid);
        assert_eq!(restored.kept.rooms, ["r1"]);
        assert_eq!(restored.kept.data, "data");
        let missed: Vec<&str> = restored
            .missed
            .iter()
            .map(|f| text(std::slice::from_ref(f)))
            .collect();
        assert_eq!(
            missed,
            [r#"42["all","1"]"#, r#"42["r1","2"]"#, r#"42["mine","5"]"#]
        );
        // Once only: the socket is connected again.
        assert!(state.restore(&config, pid.as_str(), "0").is_none());
        restored.register(&mut state);
        assert_eq!(state.live.get(&sid), Some(&(pid, 0)));
    }

    #[test]
    fn an_offset_from_before_the_socket_gets_all_of_the_sockets_own_events() {
        // As a client sends after a connection on which no event reached it.
        let config = RecoveryConfig {
            max_events: 3,
            ..RecoveryConfig::default()
        };
        let mut state = State::default();
        for _ in 0..2 {
            state.stamp(&config, event(r#"42["before it"]"#), &to(&[], &[]));
        }
        let (_, pid) = persisted(&mut state, &config, &[]);
        state.stamp(&config, event(r#"42["its own"]"#), &to(&[], &[]));
        let restored = state.restore(&config, pid.as_str(), "0").unwrap();
        assert_eq!(text(&restored.missed), r#"42["its own","2"]"#);
        assert_eq!(restored.missed.len(), 1);
        // Nothing of its own yet: nothing missed.
        let (_, pid) = persisted(&mut state, &config, &[]);
        let restored = state.restore(&config, pid.as_str(), "1").unwrap();
        assert!(restored.missed.is_empty());
        // One of its own events is gone: it connects afresh.
        let (_, pid) = persisted(&mut state, &config, &[]);
        for _ in 0..4 {
            state.stamp(&config, event(r#"42["its own"]"#), &to(&[], &[]));
        }
        assert!(state.restore(&config, pid.as_str(), "1").is_none());
    }

    #[test]
    fn an_offset_without_the_stores_prefix_names_no_event() {
        let recovery = Recovery::new(RecoveryConfig::default());
        let config = &recovery.config;
        let mut state = recovery.lock();
        let (_, pid) = persisted(&mut state, config, &[]);
        let stamped = state.stamp(config, event(r#"42["e"]"#), &to(&[], &[]));
        let stamped: Value = serde_json::from_str(&text(&stamped)[2..]).unwrap();
        let offset = stamped[1].as_str().unwrap().to_owned();
        assert_eq!(offset.len(), OFFSET_PREFIX_LEN + 1, "{offset}");
        // An application's string that looks like a count, or another node's offset.
        assert!(state.restore(config, pid.as_str(), "0").is_none());
        let (_, pid) = persisted(&mut state, config, &[]);
        let other = format!("{}0", &Id::random().as_str()[..OFFSET_PREFIX_LEN]);
        assert!(state.restore(config, pid.as_str(), &other).is_none());
        let (_, pid) = persisted(&mut state, config, &[]);
        assert!(state.restore(config, pid.as_str(), &offset).is_some());
    }

    #[test]
    fn unknown_pids_and_offsets_that_are_gone_restore_nothing() {
        let config = RecoveryConfig {
            max_events: 2,
            ..RecoveryConfig::default()
        };
        let mut state = State::default();
        let (_, pid) = persisted(&mut state, &config, &[]);
        for _ in 0..3 {
            state.stamp(&config, event(r#"42["e"]"#), &to(&[], &[]));
        }
        assert!(state.restore(&config, Id::random().as_str(), "2").is_none());
        assert!(state.restore(&config, "not an id", "2").is_none());
        // Offset 0 was dropped for the count: what followed it may be incomplete.
        assert!(state.restore(&config, pid.as_str(), "0").is_none());
        let (_, pid) = persisted(&mut state, &config, &[]);
        assert!(state.restore(&config, pid.as_str(), "x").is_none());
        let (sid, pid) = (Id::random(), Id::random());
        state.register(sid, pid);
        state.stamp(&config, event(r#"42["e"]"#), &to(&[], &[]));
        state.leave(&config, sid, Some(kept(Vec::new(), Value::Null)));
        let restored = state.restore(&config, pid.as_str(), "3").unwrap();
        assert!(restored.missed.is_empty());
    }

    #[test]
    fn sessions_and_events_expire_and_stay_within_their_caps() {
        let config = RecoveryConfig {
            max_disconnection: Duration::ZERO,
            max_sessions: 2,
            max_event_bytes: 45,
            ..RecoveryConfig::default()
        };
        let mut state = State::default();
        let (_, pid) = persisted(&mut state, &config, &[]);
        std::thread::sleep(Duration::from_millis(2));
        state.stamp(&config, event(r#"42["e"]"#), &to(&[], &[]));
        assert!(state.restore(&config, pid.as_str(), "0").is_none());
        assert!(state.sessions.is_empty());

        let config = RecoveryConfig {
            max_sessions: 2,
            max_event_bytes: 45,
            ..RecoveryConfig::default()
        };
        for _ in 0..5 {
            persisted(&mut state, &config, &[]);
        }
        assert_eq!(state.sessions.len(), 2);
        for _ in 0..10 {
            state.stamp(&config, event(r#"42["0123456789"]"#), &to(&[], &[]));
        }
        assert!(state.event_bytes <= 45);
        assert_eq!(state.events.len(), 2);
        // One event over the whole budget is not kept, and nothing before it stays either.
        let big: &'static str = Box::leak(format!(r#"42["{}"]"#, "x".repeat(64)).into_boxed_str());
        state.stamp(&config, event(big), &to(&[], &[]));
        assert!(state.events.is_empty());
        assert_eq!(state.event_bytes, 0);
    }
}
