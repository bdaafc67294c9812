//! One Engine.IO session: its outbound queue, its transport state and its close signal.
//!
//! Both transports drain the same queue. A long-polling GET takes everything queued; after an
//! upgrade the WebSocket task takes over the very same queue, so nothing queued during the upgrade
//! is lost or reordered. Inbound packets never wait in a queue: the transport that read them hands
//! them to the layer above in order, as they arrive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::{HeaderMap, Uri};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::EngineConfig;
use super::error::{CloseReason, SendError};
use super::metrics::EngineMetrics;
use super::packet::Frame;
use crate::id::Id;

/// The transport a session currently uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    /// The transport's name as in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// What the handshake request looked like; the Socket.IO layer hands it to its handshake data.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Headers of the request that opened the session.
    pub headers: HeaderMap,
    /// Its URI (path and query).
    pub uri: Uri,
    /// The peer's address, when the server that accepted the connection knows it.
    pub remote_addr: Option<SocketAddr>,
}

impl RequestInfo {
    /// The query string, without the `?`.
    pub fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }
}

/// Where an upgrade to WebSocket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// No WebSocket is trying to take over.
    None,
    /// A WebSocket connected with this session's id and has not probed yet.
    Connected,
    /// The probe was answered: polling GETs now get a noop until the client sends `5`.
    Probed,
}

/// Frames' room a queue keeps between writes.
const KEPT_QUEUE_CAPACITY: usize = 4;

/// How long a queue may stay over its limits before its client counts as not reading. Over
/// them is not yet behind: a burst (a room of hundreds, each sending at once) can queue more
/// than the limits for a client that reads at full speed, before its writer gets its turn.
const BEHIND_GRACE: Duration = Duration::from_secs(2);

/// A queue this many times over its limits is too much whatever the reason.
const HARD_LIMIT_FACTOR: usize = 8;

/// The packets beyond which a queue is too much whatever the reason: [`HARD_LIMIT_FACTOR`]
/// times its limit, and never fewer than what two polling POSTs may carry. One POST's packets
/// are handled in one go, before any writer or poll can take what they queue: answers to the
/// client's own acks, or a room's broadcasts from a member, are a burst its reader has had no
/// turn to take yet.
fn hard_packet_limit(config: &EngineConfig) -> usize {
    (config.max_queued_packets.saturating_mul(HARD_LIMIT_FACTOR))
        .max(config.max_packets_per_post.saturating_mul(2))
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Frame>,
    queued_bytes: usize,
    transport: Transport,
    upgrade: Upgrade,
    polling_get: bool,
    polling_post: bool,
    /// When the pong to the last ping is due, while it is outstanding.
    pong_due: Option<Instant>,
    close_reason: Option<CloseReason>,
    /// The client closed the session over polling with no GET pending: one GET that crossed
    /// its close packet on the wire may still come, and gets the noop a pending GET would
    /// have had (see [`Session::linger`]).
    crossing_get: bool,
    /// The server closed a polling session: the close packet is owed, in an answer of its own
    /// after whatever was queued before it (see [`Session::poll_ready`]).
    close_owed: bool,
    /// How many frames at the front of the queue the next WebSocket write must end after (0:
    /// none); see [`Session::end_batch`].
    batch_end: usize,
    /// Since when the queue has been over its limits without a drain taking it back under.
    over_since: Option<Instant>,
}

/// Whether a queue of `packets` frames and `bytes` is over its limits.
fn exceeds(config: &EngineConfig, packets: usize, bytes: usize) -> bool {
    packets > config.max_queued_packets || bytes > config.max_queued_bytes
}

impl State {
    /// Puts a frame at the back of the queue, counting its bytes.
    fn enqueue(&mut self, frame: Frame) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn over_limits(&self, config: &EngineConfig) -> bool {
        exceeds(config, self.queue.len(), self.queued_bytes)
    }

    /// Whether the client is behind: its queue has been over the limits for the grace period,
    /// or far over them. Reads the clock only when over the limits.
    fn behind(&mut self, config: &EngineConfig) -> bool {
        if !self.over_limits(config) {
            return false;
        }
        let now = Instant::now();
        let since = *self.over_since.get_or_insert(now);
        now - since >= BEHIND_GRACE
            || self.queue.len() > hard_packet_limit(config)
            || self.queued_bytes > config.max_queued_bytes.saturating_mul(HARD_LIMIT_FACTOR)
    }

    /// After frames left the queue.
    fn drained(&mut self, config: &EngineConfig) {
        if self.over_since.is_some() && !self.over_limits(config) {
            self.over_since = None;
        }
    }
}

/// What a heartbeat finds when the time it gave a pong has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PongWait {
    /// The pong came.
    Answered,
    /// Packets from the client moved the deadline here: the client is alive, and has longer.
    Until(Instant),
    /// It did not come: the session has ended.
    TimedOut,
}

/// An Engine.IO session, carrying the layer above's per-session data `D`.
pub struct Session<D> {
    id: Id,
    config: Arc<EngineConfig>,
    metrics: Arc<EngineMetrics>,
    request: RequestInfo,
    state: Mutex<State>,
    /// Wakes whoever drains the queue: the pending GET, or the WebSocket task.
    writer: Notify,
    pong: Notify,
    /// Tells a closed polling session's cleanup that its last packets were fetched.
    drained: Notify,
    closed: AtomicBool,
    /// Whether a ping awaits its pong (its due time is in `state`) and no other packet came
    /// since: most packets come when none does, and need not look further.
    pinged: AtomicBool,
    /// Wakes those waiting for the session to close, or for an upgrade to settle.
    changed: Notify,
    data: D,
}

/// The tag [`Session::log_id`] shows for a session id, also for ids that name no session.
pub(crate) fn log_tag(sid: &str) -> String {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(sid.as_bytes());
    format!("{:08x}", h.finish() as u32)
}

impl<D> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<D> Session<D> {
    pub(crate) fn new(
        config: Arc<EngineConfig>,
        metrics: Arc<EngineMetrics>,
        transport: Transport,
        request: RequestInfo,
        data: D,
    ) -> Session<D> {
        Session {
            id: Id::random(),
            config,
            metrics,
            request,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                transport,
                upgrade: Upgrade::None,
                polling_get: false,
                polling_post: false,
                pong_due: None,
                close_reason: None,
                crossing_get: false,
                close_owed: false,
                batch_end: 0,
                over_since: None,
            }),
            writer: Notify::new(),
            pong: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            pinged: AtomicBool::new(false),
            changed: Notify::new(),
            data,
        }
    }

    /// The session id: a secret that authorises polling requests. Never show it to other clients.
    pub fn id(&self) -> Id {
        self.id
    }

    /// The layer above's data for this session.
    pub fn data(&self) -> &D {
        &self.data
    }

    /// The request that opened the session.
    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        self.lock().transport
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this module; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `packets` more frames of `bytes` in all would leave the queue within its limits.
    pub(crate) fn has_room_for(&self, packets: usize, bytes: usize) -> bool {
        let st = self.lock();
        !exceeds(
            &self.config,
            st.queue.len().saturating_add(packets),
            st.queued_bytes.saturating_add(bytes),
        )
    }

    /// Queues a packet for the client.
    ///
    /// A client whose queue stays over its limits does not read what it is sent: it is
    /// disconnected, so that it cannot hold memory or slow down anybody else.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all([frame])
    }

    /// Queues several packets back to back, with nothing from other senders in between (a
    /// Socket.IO packet and its binary attachments).
    pub fn send_all<I>(&self, frames: I) -> Result<(), SendError>
    where
        I: IntoIterator<Item = Frame>,
    {
        let overflow = {
            let mut st = self.lock();
            if st.close_reason.is_some() {
                return Err(SendError::Closed);
            }
            for frame in frames {
                st.enqueue(frame);
            }
            st.behind(&self.config)
        };
        if overflow {
            tracing::warn!(session = %self.log_id(), "outbound queue full, disconnecting a client that does not read");
            self.fail(CloseReason::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        self.writer.notify_one();
        Ok(())
    }

    /// Makes what is queued so far go out over WebSocket in a write of its own, ahead of what is
    /// queued next. A Socket.IO `CONNECT` answer ends a write this way (alone, or after the
    /// events a recovered socket missed), as Node's server sends it, because some clients (the
    /// protocol's own test suite among them) miss an event that reaches them in the same read
    /// after the answer, before they listen for events.
    pub(crate) fn end_batch(&self) {
        let mut st = self.lock();
        if st.batch_end == 0 {
            st.batch_end = st.queue.len();
        }
    }

    /// Queues packets unless the client is behind: then they are dropped, not queued.
    pub fn send_volatile<I>(&self, frames: I) -> Result<(), SendError>
    where
        I: IntoIterator<Item = Frame>,
    {
        {
            let st = self.lock();
            if st.close_reason.is_some() {
                return Err(SendError::Closed);
            }
            if st.queue.len() >= self.config.volatile_threshold {
                self.metrics
                    .volatile_drops
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(SendError::Dropped);
            }
        }
        self.send_all(frames)
    }

    /// Ends the session. The first reason wins; the layer above hears of it once.
    ///
    /// A polling client gets what is still queued, then the close packet in an answer of its
    /// own (as the reference server sends it), and so sees a clean close rather than an
    /// unknown session.
    pub fn close(&self, reason: CloseReason) {
        self.end(reason, false);
    }

    /// Ends the session as the reference server does when the client breaks the transport's
    /// rules or goes silent: a poll in flight gets the close packet, and otherwise the session
    /// is gone at once with whatever was queued, so that its next poll finds an unknown sid.
    pub(crate) fn fail(&self, reason: CloseReason) {
        self.end(reason, true);
    }

    fn end(&self, reason: CloseReason, at_once: bool) {
        {
            let mut st = self.lock();
            if st.close_reason.is_some() {
                return;
            }
            st.close_reason = Some(reason);
            // A WebSocket is simply closed, as the reference server does. A client that closed
            // the session itself knows already: its poll gets a noop, and what was queued for
            // it is dropped.
            if st.transport == Transport::Polling {
                let client_closed = reason == CloseReason::TransportClose;
                if client_closed || (at_once && !st.polling_get) {
                    st.queue = VecDeque::new();
                    st.queued_bytes = 0;
                } else if at_once {
                    st.enqueue(Frame::CLOSE);
                } else {
                    st.close_owed = true;
                }
                st.crossing_get = client_closed && !st.polling_get;
            }
        }
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.writer.notify_one();
        self.pong.notify_one();
    }

    /// The reason the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close_reason
    }

    /// Resolves once the session is closed.
    pub async fn closed(&self) {
        self.until(|| self.is_closed()).await;
    }

    /// Resolves once `done` holds; it is checked whenever the session closes or an upgrade
    /// settles.
    async fn until(&self, done: impl Fn() -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    }

    /// A short, non-reversible tag for logs: the session id itself is a secret.
    pub fn log_id(&self) -> String {
        log_tag(self.id.as_str())
    }

    /// A span for everything this session does, named by [`log_id`](Self::log_id).
    ///
    /// A debug span: enabled, it costs each session about 10,000 instructions to create (the
    /// subscriber's registry entry, its fields formatted) and an enter and exit on every
    /// wake-up of the session's tasks. Events that matter at lower levels name the session
    /// themselves.
    pub fn span(&self) -> tracing::Span {
        tracing::debug_span!("session", id = %self.log_id())
    }

    // ---- used by the transports -------------------------------------------------------------

    /// Hands queued frames, oldest first, to `gather` until it returns `false` or none are
    /// left; with each frame it gets the bytes that were queued when the drain began (frame
    /// headers not counted), so that the writer can size its buffer once. Frames left over
    /// wake the writer again, so that it comes back for them after whatever else it has to do.
    ///
    /// The frames are encoded straight from the queue, which keeps a small allocation between
    /// writes (the recipients of a broadcast then allocate nothing); a larger one left by a
    /// burst is let go, and an idle session lets go of the small one too (see
    /// [`pong_received`](Self::pong_received)).
    ///
    /// Returns whether the drain stopped at a batch that [`end_batch`](Self::end_batch) marked,
    /// with frames waiting behind it.
    pub(crate) fn drain_frames(&self, mut gather: impl FnMut(&Frame, usize) -> bool) -> bool {
        let mut st = self.lock();
        let queued = st.queued_bytes;
        let (mut count, mut bytes) = (0, 0);
        let batch_end = std::mem::take(&mut st.batch_end);
        while let Some(frame) = st.queue.pop_front() {
            count += 1;
            bytes += frame.len();
            if !gather(&frame, queued) || count == batch_end {
                break;
            }
        }
        if batch_end > count && !st.queue.is_empty() {
            st.batch_end = batch_end - count;
        }
        let batch_ended = batch_end == count && !st.queue.is_empty();
        st.queued_bytes = st.queued_bytes.saturating_sub(bytes);
        st.drained(&self.config);
        self.metrics.packets_out(count, bytes);
        if !st.queue.is_empty() {
            self.writer.notify_one();
            return batch_ended;
        }
        if st.queue.capacity() > KEPT_QUEUE_CAPACITY {
            st.queue = VecDeque::new();
        }
        if st.close_reason.is_some() {
            // A session closed during its upgrade hands its last packets to the WebSocket.
            self.drained.notify_one();
        }
        false
    }

    /// Whether frames wait to be written.
    pub(crate) fn has_queued(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    pub(crate) fn writer_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.writer.notified()
    }

    /// Starts a polling GET; `Err` if one is in flight already.
    pub(crate) fn begin_get(&self) -> Result<PollGuard<'_, D>, PollConflict> {
        let mut st = self.lock();
        // A closed session still hands out what it queued last and its close packet, or the
        // noop of a GET that crossed the client's close.
        if st.close_reason.is_some() && st.queue.is_empty() && !st.close_owed && !st.crossing_get {
            return Err(PollConflict::Closed);
        }
        st.crossing_get = false;
        if st.transport != Transport::Polling {
            return Err(PollConflict::WrongTransport);
        }
        if st.polling_get {
            return Err(PollConflict::Overlap);
        }
        st.polling_get = true;
        Ok(PollGuard {
            session: self,
            get: true,
            waiting: false,
        })
    }

    /// Starts a polling POST; `Err` if one is in flight already.
    pub(crate) fn begin_post(&self) -> Result<PollGuard<'_, D>, PollConflict> {
        let mut st = self.lock();
        if st.close_reason.is_some() {
            return Err(PollConflict::Closed);
        }
        if st.transport != Transport::Polling {
            return Err(PollConflict::WrongTransport);
        }
        if st.polling_post {
            return Err(PollConflict::Overlap);
        }
        st.polling_post = true;
        Ok(PollGuard {
            session: self,
            get: false,
            waiting: false,
        })
    }

    /// What a pending GET should answer now, if anything: the queued frames (at most
    /// `max_packets` of them), or a noop when the session closed or a WebSocket is taking
    /// over. Once a WebSocket has taken over, the GET is refused and what is queued is left to
    /// the WebSocket.
    ///
    /// The close packet of a session the server closed goes in an answer of its own, as the
    /// reference server sends it: `1` to a GET that was waiting when the session closed, `6␞1`
    /// to one that came after (`arrived`: this is the GET's first look).
    pub(crate) fn poll_ready(
        &self,
        into: &mut Vec<Frame>,
        max_packets: usize,
        arrived: bool,
    ) -> Result<bool, PollConflict> {
        let mut st = self.lock();
        if st.transport != Transport::Polling {
            if !st.queue.is_empty() {
                // The wake-up this GET may have taken was meant for the WebSocket.
                self.writer.notify_one();
            }
            return Err(PollConflict::WrongTransport);
        }
        if st.queue.len() > max_packets {
            // The rest waits for the next GET, which the client sends as soon as this one is
            // answered.
            let bytes = st.queue.iter().take(max_packets).map(Frame::len).sum();
            into.extend(st.queue.drain(..max_packets));
            st.queued_bytes -= bytes;
            st.batch_end = 0;
            st.drained(&self.config);
            self.metrics.packets_out(max_packets, bytes);
            return Ok(true);
        }
        if !st.queue.is_empty() {
            self.metrics.packets_out(st.queue.len(), st.queued_bytes);
            into.extend(std::mem::take(&mut st.queue));
            st.queued_bytes = 0;
            st.batch_end = 0;
            st.over_since = None;
            if st.close_reason.is_some() && !st.close_owed {
                self.drained.notify_one();
            }
            return Ok(true);
        }
        if st.close_owed {
            st.close_owed = false;
            if arrived {
                into.push(Frame::NOOP);
            }
            into.push(Frame::CLOSE);
            self.metrics.packets_out(1, Frame::CLOSE.len());
            self.drained.notify_one();
            return Ok(true);
        }
        if st.close_reason.is_some() || st.upgrade == Upgrade::Probed {
            into.push(Frame::NOOP);
            if st.close_reason.is_some() {
                self.drained.notify_one();
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// A WebSocket with this session's id connected; `false` if the session cannot upgrade.
    pub(crate) fn begin_upgrade(&self) -> bool {
        let mut st = self.lock();
        if st.close_reason.is_some()
            || st.transport != Transport::Polling
            || st.upgrade != Upgrade::None
        {
            return false;
        }
        st.upgrade = Upgrade::Connected;
        true
    }

    /// The probe was answered: pending and future GETs get a noop.
    pub(crate) fn upgrade_probed(&self) {
        self.lock().upgrade = Upgrade::Probed;
        self.writer.notify_one();
    }

    /// Whether `3probe` went out: the client has paused polling and is moving to the WebSocket.
    pub(crate) fn is_probed(&self) -> bool {
        self.lock().upgrade == Upgrade::Probed
    }

    /// Resolves once the session is no longer probed: the upgrade completed or failed, or the
    /// session closed.
    pub(crate) async fn probe_settled(&self) {
        self.until(|| !self.is_probed() || self.is_closed()).await;
    }

    /// The client sent `5`: the WebSocket owns the session from now on.
    pub(crate) fn complete_upgrade(&self) {
        {
            let mut st = self.lock();
            st.upgrade = Upgrade::None;
            st.transport = Transport::WebSocket;
            if std::mem::take(&mut st.close_owed) {
                // The session closed while the client moved: it hears of it on the WebSocket.
                st.enqueue(Frame::CLOSE);
            }
        }
        self.changed.notify_waiters();
        // A GET still pending is let go.
        self.writer.notify_waiters();
    }

    /// The upgrade failed or timed out: the session goes on over polling.
    pub(crate) fn abort_upgrade(&self) {
        {
            let mut st = self.lock();
            if st.transport == Transport::Polling {
                st.upgrade = Upgrade::None;
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until a closed polling session's last packets were fetched (or the GET that
    /// crossed the client's close came), or `timeout` passed.
    pub(crate) async fn linger(&self, timeout: std::time::Duration) {
        let pending = {
            let st = self.lock();
            st.transport == Transport::Polling
                && (!st.queue.is_empty() || st.close_owed || st.crossing_get)
        };
        if pending {
            let _ = tokio::time::timeout(timeout, self.drained.notified()).await;
        }
    }

    /// Marks a ping as sent; the pong is due by `due`.
    pub(crate) fn ping_sent(&self, due: Instant) {
        self.lock().pong_due = Some(due);
        self.pinged.store(true, Ordering::Release);
    }

    /// Whether the last ping is still unanswered.
    pub(crate) fn awaiting_pong(&self) -> bool {
        self.lock().pong_due.is_some()
    }

    /// The heartbeat's time for the pong (`deadline`) has come: it came, or packets from the
    /// client moved its deadline further ([`heard_from`](Self::heard_from)), or the session
    /// ends here with [`CloseReason::PingTimeout`].
    pub(crate) fn pong_deadline_reached(&self, deadline: Instant) -> PongWait {
        let due = self.lock().pong_due;
        match due {
            None => PongWait::Answered,
            Some(later) if later > deadline => PongWait::Until(later),
            Some(_) => {
                self.fail(CloseReason::PingTimeout);
                PongWait::TimedOut
            }
        }
    }

    /// A packet other than a pong arrived: the client is alive, so the pong it owes may come
    /// as late as `until` (a pong may wait behind a client's backlog of messages on a slow
    /// link). Once per ping, as Node's server counts it: a client that keeps sending but never
    /// answers a ping is not kept alive for it.
    pub(crate) fn heard_from(&self, until: impl FnOnce() -> Instant) {
        // A load first: most packets come when no ping is waiting, and need no atomic write.
        if !self.pinged.load(Ordering::Acquire) || !self.pinged.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(due) = &mut self.lock().pong_due {
            *due = (*due).max(until());
        }
    }

    /// Ends the session if its pong is overdue, and says whether it did. The heartbeat's timer
    /// does the same, but a request that comes in at the deadline must not find the session
    /// alive just because the timer's task has not run yet.
    pub(crate) fn expire_if_overdue(&self) -> bool {
        let overdue = self
            .lock()
            .pong_due
            .is_some_and(|due| due <= Instant::now());
        if overdue {
            self.fail(CloseReason::PingTimeout);
        }
        overdue
    }

    /// A pong arrived. The session has been idle or busy for a heartbeat: an empty queue lets
    /// go of its allocation, so that an idle session holds none.
    pub(crate) fn pong_received(&self) {
        let was_waiting = {
            let mut st = self.lock();
            if st.queue.is_empty() {
                st.queue = VecDeque::new();
            }
            self.pinged.store(false, Ordering::Release);
            st.pong_due.take().is_some()
        };
        if was_waiting {
            self.pong.notify_one();
        }
    }

    pub(crate) fn pong_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.pong.notified()
    }
}

/// Why a polling request cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollConflict {
    Closed,
    WrongTransport,
    Overlap,
}

/// Marks a polling request as in flight until dropped, even when hyper drops the request early.
pub(crate) struct PollGuard<'a, D> {
    session: &'a Session<D>,
    get: bool,
    /// The request waits on the session (see [`set_waiting`](Self::set_waiting)).
    waiting: bool,
}

impl<D> PollGuard<'_, D> {
    /// Marks the request as waiting on the session, or not any more. One dropped while it waits
    /// was given up by its client, which closed or reset the connection (hyper then drops the
    /// request): the session ends, as the reference server ends it ("poll connection closed
    /// prematurely"), so that the next request finds an unknown sid rather than a session that
    /// lingers until its heartbeat fails.
    pub(crate) fn set_waiting(&mut self, waiting: bool) {
        self.waiting = waiting;
    }
}

impl<D> Drop for PollGuard<'_, D> {
    fn drop(&mut self) {
        {
            let mut st = self.session.lock();
            if self.get {
                st.polling_get = false;
            } else {
                st.polling_post = false;
            }
        }
        // After the request is over: a session that ends with no GET in flight is gone at
        // once, rather than keep a close packet for a poll that will never come.
        if self.waiting {
            tracing::debug!(session = %self.session.log_id(), "poll connection closed prematurely");
            self.session.fail(CloseReason::TransportError);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session<()> {
        let request = RequestInfo {
            headers: HeaderMap::new(),
            uri: Uri::from_static("/engine.io/"),
            remote_addr: None,
        };
        let config = Arc::new(EngineConfig::default());
        let metrics = Arc::new(EngineMetrics::default());
        Session::new(config, metrics, Transport::WebSocket, request, ())
    }

    fn text(s: &'static str) -> Frame {
        Frame::Text(s.into())
    }

    /// Drains one write's worth of frames, as the WebSocket task does, and whether it ended a
    /// marked batch.
    fn one_write(session: &Session<()>) -> (Vec<Frame>, bool) {
        let mut batch = Vec::new();
        let ended = session.drain_frames(|frame, _| {
            batch.push(frame.clone());
            true
        });
        (batch, ended)
    }

    #[test]
    fn a_marked_batch_is_written_apart_from_what_follows() {
        let session = session();
        session.send_all([text("a"), text("b")]).unwrap();
        session.end_batch();
        session.send(text("c")).unwrap();
        session.end_batch();
        session.send(text("d")).unwrap();

        assert_eq!(one_write(&session), (vec![text("a"), text("b")], true));
        // Only the first mark holds until it is written: the rest goes in one write.
        assert_eq!(one_write(&session), (vec![text("c"), text("d")], false));
        assert!(!session.has_queued());
    }

    #[test]
    fn a_mark_with_nothing_behind_it_ends_no_batch() {
        let session = session();
        session.send(text("a")).unwrap();
        session.end_batch();
        assert_eq!(one_write(&session), (vec![text("a")], false));
        session.send_all([text("b"), text("c")]).unwrap();
        assert_eq!(one_write(&session), (vec![text("b"), text("c")], false));
    }

    /// A session whose queue may hold 4 frames, and whose POSTs may carry as many.
    fn small_queue_session() -> Session<()> {
        let config = EngineConfig {
            max_queued_packets: 4,
            max_packets_per_post: 4,
            ..EngineConfig::default()
        };
        Session {
            config: Arc::new(config),
            ..session()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_over_its_limits_is_behind_only_after_the_grace_period() {
        let session = small_queue_session();
        for _ in 0..5 {
            session.send(text("x")).unwrap();
        }
        tokio::time::advance(BEHIND_GRACE / 2).await;
        session.send(text("x")).unwrap();
        // A drain that takes it back under the limits starts the grace period afresh.
        one_write(&session);
        for _ in 0..5 {
            session.send(text("x")).unwrap();
        }
        tokio::time::advance(BEHIND_GRACE - Duration::from_millis(1)).await;
        session.send(text("x")).unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(session.send(text("x")), Err(SendError::QueueFull));
        assert_eq!(session.close_reason(), Some(CloseReason::SlowConsumer));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_far_over_its_limits_is_behind_at_once() {
        let session = small_queue_session();
        for _ in 0..4 * HARD_LIMIT_FACTOR {
            session.send(text("x")).unwrap();
        }
        assert_eq!(session.send(text("x")), Err(SendError::QueueFull));
    }

    #[tokio::test(start_paused = true)]
    async fn what_two_posts_queue_at_once_is_a_burst() {
        // Queues of 4 frames, POSTs of up to 100 packets: the hard limit is 200, not 32.
        let session = Session {
            config: Arc::new(EngineConfig {
                max_queued_packets: 4,
                max_packets_per_post: 100,
                ..EngineConfig::default()
            }),
            ..session()
        };
        for _ in 0..200 {
            session.send(text("x")).unwrap();
        }
        assert_eq!(session.send(text("x")), Err(SendError::QueueFull));
    }
}
