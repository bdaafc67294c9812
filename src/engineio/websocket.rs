//! The WebSocket transport: the HTTP handshake, the upgrade of a polling session (`2probe`,
//! `3probe`, `5`), and the I/O loop that owns the socket for the rest of the session.
//!
//! One task per WebSocket reads frames and, when woken, writes what is queued (up to 64 KiB per
//! system call); for a session opened over WebSocket it also runs the heartbeat. Reading pauses while a write
//! is pending: a client that does not read is not read from either, its queue fills up and it is
//! disconnected, while the heartbeat ends one that vanished.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use super::config::EngineConfig;
use super::error::{CloseReason, RequestError};
use super::packet::{self, Frame, Message, Packet};
use super::query;
use super::server::{Body, EngineIo, Handler, request_info};
use super::session::{PongWait, RequestInfo, Session, Transport};
use super::ws_frames::FrameError;
use super::ws_io::{BATCH_LIMIT, WsIo};
use crate::rate_limit::TokenBucket;
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// How long frames queued behind a batch that [`Session::end_batch`] marked wait for it. Node's
/// server leaves a turn of its event loop between the two writes; this is long enough for a
/// client to read the first on its own even on a busy machine (1 ms was not, with two cores
/// under load), and short enough to go unnoticed once per namespace joined.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

type Ws = WebSocketStream<WsIo>;

/// tungstenite's read buffer, and the most one read takes. It lives as long as the connection,
/// and client messages are mostly small: a larger one takes a few more reads (per message, not
/// per recipient of what it causes) and grows the buffer while it arrives.
const READ_BUFFER_SIZE: usize = 512;

/// Time allowed for the last frames and the close handshake once a session ends.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn header_has_token(req: &Request<()>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The WebSocket versions spoken: 13, and 8 (the last draft, whose frames are the same and
/// which the reference server takes too).
pub(crate) const KNOWN_VERSIONS: &str = "13, 8";

pub(crate) fn is_known_version(v: &HeaderValue) -> bool {
    matches!(v.as_bytes(), b"13" | b"8")
}

/// Whether the request is a well-formed WebSocket handshake (RFC 6455 §4.2.1: HTTP/1.1 or
/// later, GET, the upgrade headers, a known version, one key: 16 bytes in base64) without a
/// body. A body would come between the handshake and the first frame, where bytes that come
/// in separate segments were read as frames and bytes that come with the head were dropped:
/// what a proxy and this server take for frames could differ.
pub(crate) fn is_upgrade_request(req: &Request<()>) -> bool {
    req.version() >= Version::HTTP_11
        && req.method() == Method::GET
        && header_has_token(req, header::UPGRADE, "websocket")
        && header_has_token(req, header::CONNECTION, "upgrade")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(is_known_version)
        && is_key(req.headers().get_all(header::SEC_WEBSOCKET_KEY))
        && !has_body(req)
}

fn has_body(req: &Request<()>) -> bool {
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
}

/// One `Sec-WebSocket-Key` that is 16 bytes in base64: 22 characters of its alphabet, then `==`.
fn is_key(keys: header::GetAll<'_, HeaderValue>) -> bool {
    let mut keys = keys.iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return false;
    };
    let key = key.as_bytes();
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(is_base64) && &key[22..] == b"=="
}

fn switching_protocols(req: &Request<()>) -> Response<Body> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = first_subprotocol(req) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    resp
}

/// The first subprotocol the client offers, which the answer must name: a browser that offered
/// some (engine.io-client's `protocols` option) fails a handshake whose answer names none. The
/// protocol means nothing to Engine.IO; the reference server's WebSocket library picks the first
/// too. An offer that is not a list of tokens (RFC 6455 §4.1) gets no answer.
fn first_subprotocol(req: &Request<()>) -> Option<HeaderValue> {
    let offer = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL)?;
    let first = offer.to_str().ok()?.split(',').next()?.trim();
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if first.is_empty() || !first.bytes().all(is_tchar) {
        return None;
    }
    HeaderValue::from_str(first).ok()
}

fn ws_config(config: &EngineConfig) -> WebSocketConfig {
    // Small buffers keep idle connections cheap: the read buffer lives as long as the
    // connection. tungstenite writes only control frames (the session's frames are encoded and
    // batched by `WsIo`), and with no write buffer of its own they go out at once.
    // Messages and frames are capped at maxPayload.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_queued_bytes + config.max_payload)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload))
        .accept_unmasked_frames(false)
}

async fn accept(config: &EngineConfig, req: Request<()>) -> Option<Ws> {
    // Any value asks, as for the reference server (a JavaScript string is true unless empty).
    let binary_as_text =
        query::get(req.uri().query().unwrap_or(""), "b64").is_some_and(|v| !v.is_empty());
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => Some(
            WebSocketStream::from_raw_socket(
                WsIo::new(
                    upgraded,
                    TokenBucket::new(config.ws_message_burst, config.ws_messages_per_second),
                    binary_as_text,
                ),
                Role::Server,
                Some(ws_config(config)),
            )
            .await,
        ),
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            None
        }
    }
}

/// A handshake straight over WebSocket: a new session is created once the socket is up.
pub(crate) fn open_new<H: Handler>(
    engine: &Arc<EngineIo<H>>,
    req: Request<()>,
) -> Result<Response<Body>, RequestError> {
    let resp = switching_protocols(&req);
    let info = request_info(&req);
    let engine = engine.clone();
    // The opening lives in a box of its own, dropped once the WebSocket is up: kept inline, the
    // request it starts from would stay in the task's state for as long as the session lasts.
    let opening = Box::pin({
        let engine = engine.clone();
        async move {
            let Some(mut ws) = accept(engine.config(), req).await else {
                engine.release(&info.remote_addr);
                return None;
            };
            let session = engine.open_session_over_websocket(info);
            let open = Frame::open(&engine.config().handshake_json(session.id().as_str(), true));
            let opened = send(&mut ws, open).await.is_ok();
            if !opened {
                // The client is gone already.
                session.fail(CloseReason::TransportClose);
            }
            Some((ws, session, opened))
        }
    });
    let live = engine.live_websocket();
    let fut = async move {
        let _live = live;
        let Some((mut ws, session, opened)) = opening.await else {
            return;
        };
        if opened {
            in_span(
                session.span(),
                run(&engine, &session, &mut ws, Heartbeat::Here),
            )
            .await;
        } else {
            in_span(session.span(), engine.end_session(&session)).await;
        }
    };
    tokio::spawn(fut);
    Ok(resp)
}

/// A WebSocket joining an existing polling session, which it takes over with `5`.
pub(crate) fn upgrade_existing<H: Handler>(
    engine: &Arc<EngineIo<H>>,
    session: Arc<Session<H::Data>>,
    req: Request<()>,
) -> Result<Response<Body>, RequestError> {
    if !is_upgrade_request(&req) {
        return Err(RequestError::BadRequest);
    }
    if !session.begin_upgrade() {
        // Another WebSocket has this session already. As with the reference server, the
        // handshake succeeds and the socket is closed at once, before any packet.
        return Ok(accept_and_close(engine, req));
    }
    let resp = switching_protocols(&req);
    let engine = engine.clone();
    let span = session.span();
    // As in `open_new`, the request is let go once the WebSocket is up.
    let opening = Box::pin({
        let engine = engine.clone();
        let session = session.clone();
        async move {
            let Some(mut ws) = accept(engine.config(), req).await else {
                session.abort_upgrade();
                return None;
            };
            let mut upgraded = tokio::select! {
                r = tokio::time::timeout(engine.config().upgrade_timeout, probe(&mut ws, &session)) => r.unwrap_or(Err(None)),
                _ = session.closed() => Err(None),
            };
            let server_closed = session
                .close_reason()
                .is_some_and(CloseReason::owes_the_client_a_close);
            if upgraded.is_err() && server_closed && session.is_probed() {
                // The server ended the session after `3probe` (the layer above, or the client's
                // own bad packet sent by polling before it paused): the client has paused
                // polling, which would never fetch the close packet, and is about to move to
                // this socket.
                // Closing the socket now would fail its probe and leave it waiting for a ping
                // timeout; once it has moved, the farewell tells it the transport closed. (A
                // client that went silent is not waited for: its socket closes with the session.)
                upgraded = tokio::time::timeout(CLOSE_GRACE, upgrade_packet(&mut ws))
                    .await
                    .unwrap_or(Err(None));
                if upgraded.is_ok() {
                    session.complete_upgrade();
                }
            }
            if let Err(code) = upgraded {
                tracing::debug!(session = %session.log_id(), ?code, "upgrade abandoned, staying on polling");
                session.abort_upgrade();
                let _ = tokio::time::timeout(CLOSE_GRACE, hang_up(&mut ws, code)).await;
                return None;
            }
            Some(ws)
        }
    });
    let live = engine.live_websocket();
    let task = async move {
        let _live = live;
        let Some(mut ws) = opening.await else {
            return;
        };
        tracing::debug!(session = %session.log_id(), "upgraded to WebSocket");
        run(&engine, &session, &mut ws, Heartbeat::Elsewhere).await;
    };
    tokio::spawn(in_span(span, task));
    Ok(resp)
}

/// `fut` in `span` when the span is enabled (a session's is a debug span), and boxed then; as it
/// is otherwise: even a disabled span takes 40 bytes, and a connection's task keeps its state
/// for as long as the connection lasts.
fn in_span<F: Future>(span: tracing::Span, fut: F) -> Either<F, Instrumented<Pin<Box<F>>>> {
    if span.is_disabled() {
        Either::Left(fut)
    } else {
        Either::Right(Box::pin(fut).instrument(span))
    }
}

/// Answers a WebSocket handshake and closes the socket as soon as it is up.
fn accept_and_close<H: Handler>(engine: &Arc<EngineIo<H>>, req: Request<()>) -> Response<Body> {
    let resp = switching_protocols(&req);
    let engine = engine.clone();
    let live = engine.live_websocket();
    tokio::spawn(async move {
        let _live = live;
        if let Some(mut ws) = accept(engine.config(), req).await {
            let _ = tokio::time::timeout(CLOSE_GRACE, hang_up(&mut ws, None)).await;
        }
    });
    resp
}

/// Why an upgrade did not complete, as the code of the close frame that ends its socket: a
/// frame the WebSocket protocol forbids gets its code (1002, 1007, 1009), anything else
/// (another packet, a timeout) an empty close frame, as the reference server sends.
type Abandoned = Option<CloseCode>;

/// Probes one upgrading WebSocket may send (each answered with a frame) before it is let go.
const MAX_PROBES: u32 = 16;

/// Answers every `2probe` with `3probe` until the client sends `5`, as the reference server
/// does (a client may probe again, or move without probing); anything else ends the attempt.
async fn probe<D>(ws: &mut Ws, session: &Session<D>) -> Result<(), Abandoned> {
    let mut answered = 0;
    loop {
        // A client that sent `5` right behind its probe, without waiting for `3probe`, has moved
        // already: its upgrade completes before a poll of its can be answered as if it had not.
        let text = match next_text(ws).now_or_never() {
            Some(text) => text?,
            None => {
                if answered > 0 && !session.is_probed() {
                    session.upgrade_probed();
                }
                next_text(ws).await?
            }
        };
        match packet::decode_text(text) {
            // A stock client probes once; a socket that only ever probes is not moving.
            Ok(Packet::Ping { probe: true }) if answered < MAX_PROBES => {
                let pong = Frame::Text(Utf8Bytes::from_static("3probe"));
                if send(ws, pong).await.is_err() {
                    return Err(None);
                }
                answered += 1;
            }
            Ok(Packet::Upgrade) => {
                session.complete_upgrade();
                return Ok(());
            }
            _ => return Err(None),
        }
    }
}

/// Whether the next packet is the client's `5`, by which it moves to this socket.
async fn upgrade_packet(ws: &mut Ws) -> Result<(), Abandoned> {
    match packet::decode_text(next_text(ws).await?) {
        Ok(Packet::Upgrade) => Ok(()),
        _ => Err(None),
    }
}

/// The next text message, skipping WebSocket pings and pongs. Every message costs a token, as
/// in the I/O loop: a socket that floods pings while it probes (each answered with a pong) is
/// held to the same rate as one that carries the session.
async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, Abandoned> {
    loop {
        let message = ws.next().await;
        if matches!(message, Some(Ok(_))) && !ws.get_mut().take_token() {
            return Err(Some(CloseCode::Policy));
        }
        match message {
            Some(Ok(WsMessage::Text(text))) => return Ok(text),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Err(e)) => return Err(Some(close_code_for(&e))),
            _ => return Err(None),
        }
    }
}

/// Closes a socket that never carried the session: first what tungstenite owes the peer (its
/// reply to a close frame, which it will not send once asked to close), then our close frame.
async fn hang_up(ws: &mut Ws, code: Abandoned) -> Result<(), WsError> {
    ws.flush().await?;
    let frame = code.map(|code| CloseFrame {
        code,
        reason: Utf8Bytes::default(),
    });
    if ws.close(frame).await.is_ok() {
        while let Some(Ok(_)) = ws.next().await {}
    }
    // Refused for what it sent, a client may still be sending.
    ws.get_mut().finish(code.is_some()).await;
    Ok(())
}

/// The close code that answers a read error.
fn close_code_for(e: &WsError) -> CloseCode {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::Size,
        WsError::Io(e) => e
            .get_ref()
            .and_then(|e| e.downcast_ref::<FrameError>())
            .map_or(CloseCode::Error, |e| e.close_code()),
        WsError::Protocol(_) => CloseCode::Protocol,
        WsError::Utf8(_) => CloseCode::Invalid,
        _ => CloseCode::Error,
    }
}

impl<H: Handler> EngineIo<H> {
    /// A session whose heartbeat runs in its WebSocket's task: one task per connection rather
    /// than two.
    fn open_session_over_websocket(self: &Arc<Self>, info: RequestInfo) -> Arc<Session<H::Data>> {
        self.open_session_without_heartbeat(Transport::WebSocket, info)
    }
}

/// Writes what is queued with as few system calls as the socket allows: frames are encoded
/// straight from the session's queue into one buffer (up to [`BATCH_LIMIT`] bytes) and written at
/// once, rather than a `sendto` per frame, which is what a broadcast to many recipients would
/// otherwise cost. What is beyond the limit waits for the next turn of the I/O loop (the
/// session wakes the writer again for it), so that a busy connection is still read from.
///
/// `batch_ended` is set when the write ends a batch that [`Session::end_batch`] marked, with
/// frames waiting behind it. It is set as soon as the frames are gathered, so it holds even if
/// the write itself has to wait and its future is dropped.
async fn write_queued<D>(
    ws: &mut Ws,
    session: &Session<D>,
    batch_ended: &mut bool,
) -> Result<(), WsError> {
    write_out(ws, |io| {
        *batch_ended = session.drain_frames(|frame, queued| {
            if io.gathered() == 0 {
                io.reserve(queued.min(BATCH_LIMIT));
            }
            io.gather(frame);
            io.gathered() < BATCH_LIMIT
        });
    })
    .await
}

async fn send(ws: &mut Ws, frame: Frame) -> Result<(), WsError> {
    write_out(ws, |io| io.gather(&frame)).await
}

/// Writes the frames `gather` adds to the batch. The batch goes straight to the socket, not
/// through tungstenite's flush, which costs a good part of a small write; but what tungstenite
/// could not finish writing (a pong, say, that met a full socket) goes first, whole, so that
/// no frame of ours lands inside one of its frames.
async fn write_out(ws: &mut Ws, gather: impl FnOnce(&mut WsIo)) -> Result<(), WsError> {
    if ws.get_ref().control_pending() {
        ws.flush().await?;
    }
    let io = ws.get_mut();
    gather(io);
    std::future::poll_fn(|cx| io.poll_write_out(cx))
        .await
        .map_err(WsError::Io)
}

/// Where a session's heartbeat runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heartbeat {
    /// In the WebSocket's task, which then also cleans up after the session: a session opened
    /// over WebSocket never has another transport.
    Here,
    /// In a task of its own (a session that began with long-polling).
    Elsewhere,
}

/// The heartbeat's timer, as [`EngineIo::heartbeat`] keeps it for other sessions: a ping every
/// `ping_interval` after the previous pong, and the session ends when a pong is more than
/// `ping_timeout` late.
struct Beat<'a, D> {
    session: &'a Session<D>,
    config: &'a EngineConfig,
    awaiting_pong: bool,
}

impl<D> Beat<'_, D> {
    /// The timer went off.
    fn on_timer(&mut self, timer: Pin<&mut Sleep>) {
        let now = Instant::now();
        if self.awaiting_pong {
            if let PongWait::Until(later) = self.session.pong_deadline_reached(now) {
                timer.reset(later);
                return;
            }
            self.awaiting_pong = false;
            timer.reset(now + self.config.ping_interval);
            return;
        }
        self.session.ping_sent(now + self.config.ping_timeout);
        // A session whose queue is full is closed by the send itself.
        if self.session.send(Frame::PING).is_ok() {
            self.awaiting_pong = true;
            timer.reset(now + self.config.ping_timeout);
        } else {
            timer.reset(now + self.config.ping_interval);
        }
    }

    /// After packets were read: the next ping is due an interval after the pong.
    fn after_read(&mut self, timer: Pin<&mut Sleep>) {
        if self.awaiting_pong && !self.session.awaiting_pong() {
            self.awaiting_pong = false;
            timer.reset(Instant::now() + self.config.ping_interval);
        }
    }
}

/// A session's WebSocket for as long as the session lasts, its heartbeat too if it is `Here`.
async fn run<H: Handler>(
    engine: &Arc<EngineIo<H>>,
    session: &Arc<Session<H::Data>>,
    ws: &mut Ws,
    heartbeat: Heartbeat,
) {
    let ending = io_loop(engine, session, ws, heartbeat).await;
    // What comes after the loop is boxed, by functions that are not `async`: it is needed once,
    // at the end, and would otherwise add to the state kept for the whole session.
    if heartbeat == Heartbeat::Here {
        boxed(engine.end_session(session)).await;
    }
    if let Some((close_code, peer_closed)) = ending {
        let _ = farewell(session, ws, close_code, peer_closed).await;
    }
}

fn boxed<'a, T>(
    fut: impl Future<Output = T> + Send + 'a,
) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(fut)
}

/// The I/O loop of a session that owns a WebSocket; it returns once the session is closed, with
/// what the farewell needs if the socket can still be written to: the close code, and whether
/// the client closed first.
///
/// The WebSocket is borrowed rather than moved in: an `async fn` keeps its arguments in its
/// state next to the locals they are moved to, and this one lives as long as the session.
async fn io_loop<H: Handler>(
    engine: &Arc<EngineIo<H>>,
    session: &Arc<Session<H::Data>>,
    ws: &mut Ws,
    heartbeat: Heartbeat,
) -> Option<(CloseCode, bool)> {
    let mut close_code = CloseCode::Normal;
    // The client ended the WebSocket (a close frame, or the end of the stream): no data frame
    // may follow.
    let mut peer_closed = false;
    let config = engine.config();
    let beating = heartbeat == Heartbeat::Here;
    let mut beat = Beat {
        session,
        config,
        awaiting_pong: false,
    };
    let timer = tokio::time::sleep(config.ping_interval);
    tokio::pin!(timer);
    let mut read_parked = false;
    loop {
        // Checked first: a session can be closed already when its socket takes over.
        if session.is_closed() {
            return Some((close_code, peer_closed));
        }
        tokio::select! {
            msg = next_message(ws, &mut read_parked) => {
                match msg {
                    // Every message costs a token, control frames included: a flood of tiny frames
                    // costs CPU even when each is harmless. (Fragments pay as they are read.)
                    Some(Ok(_)) if !ws.get_mut().take_token() => {
                        tracing::debug!(session = %session.log_id(), "WebSocket message rate exceeded");
                        close_code = CloseCode::Policy;
                        session.fail(CloseReason::TransportError);
                    }
                    Some(Ok(WsMessage::Text(text))) => match packet::decode_text(text) {
                        Ok(packet) => {
                            engine.on_packet(session, packet);
                            beat.after_read(timer.as_mut());
                        }
                        Err(e) => {
                            tracing::debug!(session = %session.log_id(), error = %e, "bad packet");
                            session.fail(CloseReason::ParseError);
                        }
                    },
                    Some(Ok(WsMessage::Binary(data))) => engine.on_packet(session, Packet::Message(Message::Binary(data))),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                    Some(Ok(WsMessage::Close(_))) | None => {
                        peer_closed = true;
                        session.close(CloseReason::TransportClose);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(session = %session.log_id(), error = %e, "WebSocket read failed");
                        close_code = close_code_for(&e);
                        if matches!(e, WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) {
                            peer_closed = true;
                        }
                        // A client that went away without a close frame (a closed tab, a lost
                        // network) closed its transport, as Node's server reports it; one that
                        // broke the protocol is a transport error.
                        let lost = peer_closed || matches!(close_code, CloseCode::Error);
                        session.fail(if lost { CloseReason::TransportClose } else { CloseReason::TransportError });
                        if matches!(close_code, CloseCode::Error) {
                            // The socket itself failed: nothing more can be written.
                            return None;
                        }
                    }
                }
                // Here, straight after a message was handed over, and nowhere else: once
                // tungstenite reads on, it may hold the first bytes of the next one.
                if ws.get_ref().fresh_codec_due() && !session.is_closed() {
                    // Boxed: the future lives in this loop's state only while it runs.
                    boxed(renew(ws, config)).await;
                    read_parked = false;
                }
            },
            _ = session.writer_notified() => {
                // Most writes complete at once; only one that has to wait for the client needs
                // to watch the session and the heartbeat meanwhile, and is polled again at once
                // with this task's waker. (What a write gathered stays in the connection's
                // buffer when its future is dropped.)
                let mut batch_ended = false;
                let written = match write_queued(ws, session, &mut batch_ended).now_or_never() {
                    Some(written) => written.is_ok(),
                    // Boxed: only a connection that is writing needs this state.
                    None => boxed(write_until_closed(session, ws, timer.as_mut(), &mut beat, beating)).await,
                };
                if !written && !session.is_closed() {
                    // A write fails when the connection is lost: the client is gone.
                    session.fail(CloseReason::TransportClose);
                }
                if !written {
                    // A session the server ended while a write waited for the client still says
                    // its last words (the rest of what is queued, then a close frame) within the
                    // farewell's grace, as Node's server lets its socket drain before it
                    // closes it. One that failed or fell behind does not.
                    let last_words = matches!(
                        session.close_reason(),
                        Some(CloseReason::ForcedClose | CloseReason::ServerShutdown)
                    );
                    return last_words.then_some((close_code, peer_closed));
                }
                if batch_ended {
                    // What follows a batch that had to go alone waits a moment, so that the
                    // client reads the two apart, as it would from Node's server.
                    tokio::time::sleep(BATCH_PAUSE).await;
                }
            }
            () = timer.as_mut(), if beating => beat.on_timer(timer.as_mut()),
        }
    }
}

/// Gives the socket a fresh WebSocket context once a message with an oversized frame has been
/// handed over: tungstenite keeps the capacity its read buffer grew to for that frame (up to
/// maxPayload) for as long as the context lives. Nothing is lost: the reader stopped at the end
/// of that message, and what tungstenite owes the client (a pong) goes out first; when it cannot
/// go at once, the old context stays.
async fn renew(ws: &mut Ws, config: &EngineConfig) {
    if !matches!(ws.flush().now_or_never(), Some(Ok(()))) {
        return;
    }
    let io = ws.get_mut().take();
    *ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(config))).await;
    tracing::trace!("a fresh WebSocket context after an oversized frame");
}

/// The client's next message. Once the stream had none, it is polled again only when the
/// socket is readable: the task also wakes for every write, and asking tungstenite for a message
/// costs far more than asking the socket. A Pending stream has no complete frame buffered (it
/// read until the socket had nothing more), so nothing waits unseen.
fn next_message<'a>(
    ws: &'a mut Ws,
    parked: &'a mut bool,
) -> impl Future<Output = Option<Result<WsMessage, WsError>>> + 'a {
    std::future::poll_fn(move |cx| {
        if *parked && ws.get_ref().poll_read_ready(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        let polled = ws.poll_next_unpin(cx);
        *parked = polled.is_pending();
        polled
    })
}

/// Writes frames unless the session closes first; the heartbeat goes on while a slow client
/// holds up the write.
async fn write_until_closed<D>(
    session: &Session<D>,
    ws: &mut Ws,
    mut timer: Pin<&mut Sleep>,
    beat: &mut Beat<'_, D>,
    beating: bool,
) -> bool {
    // A batch this ends was ended by the first try, which the caller has heard of.
    let mut batch_ended = false;
    let write = write_queued(ws, session, &mut batch_ended);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return r.is_ok(),
            _ = session.closed() => return false,
            () = timer.as_mut(), if beating => beat.on_timer(timer.as_mut()),
        }
    }
}

/// Last words, within a grace period: what is still queued (a close packet, when the server
/// ended the session), then the close handshake. A client that closed first reads nothing more:
/// what is queued for it is dropped, and it gets the reply to its close frame (RFC 6455 §5.5.1).
fn farewell<'a, D: Send + Sync>(
    session: &'a Session<D>,
    ws: &'a mut Ws,
    close_code: CloseCode,
    peer_closed: bool,
) -> Pin<Box<dyn Future<Output = Result<(), WsError>> + Send + 'a>> {
    let last_words = async move {
        // The session is closed, nothing more gets queued: this ends.
        while !peer_closed && session.has_queued() {
            write_queued(ws, session, &mut false).await?;
        }
        // Through tungstenite: what it owes goes out too (after a protocol error, its own
        // close frame).
        ws.flush().await?;
        // A normal close carries no status code, as the reference server's (its client sees
        // 1005, "no status received"); a failure names its code.
        let frame = (close_code != CloseCode::Normal).then(|| CloseFrame {
            code: close_code,
            reason: Utf8Bytes::default(),
        });
        // A client that closed first has had tungstenite's reply (flushed above). A failed
        // close (the socket broke, or tungstenite gave up on the stream after a frame it
        // refused) still ends with `finish`.
        if !peer_closed && ws.close(frame).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
        // A client whose message or frame failed may still be sending the rest of it.
        let failed = !peer_closed && close_code != CloseCode::Normal;
        ws.get_mut().finish(failed).await;
        Ok(())
    };
    boxed(async move {
        tokio::time::timeout(CLOSE_GRACE, last_words)
            .await
            .unwrap_or(Ok(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server-side WebSocket over loopback with small socket buffers, and its client's socket.
    async fn small_buffered_pair() -> (Ws, TcpStream) {
        let (io, client) = crate::engineio::ws_io::tests::small_buffered_pair().await;
        let ws = WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(ws_config(&EngineConfig::default())),
        )
        .await;
        (ws, client)
    }

    /// An Engine.IO echo server and a session of it whose heartbeat the test's runs keep.
    fn websocket_session() -> (
        Arc<EngineIo<crate::conformance::Echo>>,
        Arc<Session<<crate::conformance::Echo as Handler>::Data>>,
    ) {
        let engine = EngineIo::new(EngineConfig::default(), crate::conformance::Echo);
        let session = engine.open_session_without_heartbeat(
            Transport::WebSocket,
            RequestInfo {
                headers: hyper::HeaderMap::new(),
                uri: hyper::Uri::from_static("/engine.io/"),
                remote_addr: None,
            },
        );
        (engine, session)
    }

    #[tokio::test]
    async fn the_state_an_idle_connection_keeps_stays_small() {
        // The I/O loop's future is the biggest part of what an idle connection costs: what
        // only runs now and then (a write that waits, a fresh context, the farewell) is boxed
        // while it runs, so that it does not sit in this state for the whole session.
        let (engine, session) = websocket_session();
        let (mut ws, _client) = small_buffered_pair().await;
        let task = run(&engine, &session, &mut ws, Heartbeat::Here);
        // 448 bytes when this was written; the fresh context held in it made 1,320.
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "the connection's task keeps {size} bytes");
        // With the WebSocket itself (which the task owns) and what tokio adds, the task takes
        // whole multiples of 128 bytes: 1,024 when this was written, with the socket at 424
        // bytes (432 in a debug build), the loop at 448, the task's own state about 40 and
        // tokio's about 100; a few bytes more make it 1,152.
        let ws = std::mem::size_of::<Ws>();
        assert!(
            ws + size <= 880,
            "the socket takes {ws} bytes, the loop {size}"
        );
    }

    #[tokio::test]
    async fn a_pong_that_met_a_full_socket_goes_out_whole_before_the_next_batch() {
        let (mut ws, mut client) = small_buffered_pair().await;
        // A ping from the client, read by tungstenite, which writes its pong on its next read.
        let mut ping = vec![0x89, 0x80 | 4, 1, 2, 3, 4];
        ping.extend(
            b"ping"
                .iter()
                .zip([1, 2, 3, 4].iter().cycle())
                .map(|(b, m)| b ^ m),
        );
        client.write_all(&ping).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(WsMessage::Ping(p)))) => assert_eq!(&p[..], b"ping"),
            other => panic!("expected the ping, got {other:?}"),
        }
        // Meanwhile the socket fills: the client reads nothing yet.
        let big = Frame::Binary(Bytes::from(vec![7u8; 64 * 1024]));
        let mut sent = 0;
        loop {
            sent += 1;
            if send(&mut ws, big.clone()).now_or_never().is_none() {
                break;
            }
            assert!(sent < 1000, "the socket never filled");
        }
        // The pong meets the full socket.
        assert!(ws.next().now_or_never().is_none());
        assert!(ws.get_ref().control_pending());
        // The client reads while the server writes its next frame.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client.read(&mut buf).await.unwrap();
                all.extend_from_slice(&buf[..n]);
                let frames = complete_frames(&all);
                if frames
                    .last()
                    .is_some_and(|(op, p)| *op == 0x1 && p == b"after")
                {
                    return frames;
                }
            }
        });
        let after = Frame::Text(Utf8Bytes::from_static("after"));
        tokio::time::timeout(Duration::from_secs(5), send(&mut ws, after))
            .await
            .unwrap()
            .unwrap();
        assert!(!ws.get_ref().control_pending());
        let frames = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        let ops: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
        let mut expected = vec![0x2; sent];
        expected.extend([0xA, 0x1]);
        assert_eq!(ops, expected);
        assert_eq!(frames[sent].1, b"ping");
        assert!(frames[..sent].iter().all(|(_, p)| p.len() == 64 * 1024));
    }

    #[tokio::test]
    async fn a_session_the_server_ends_while_a_write_waits_still_gets_its_last_words() {
        let (engine, session) = websocket_session();
        let (mut ws, mut client) = small_buffered_pair().await;
        // Far more than the sockets' buffers hold, while the client reads nothing.
        let big = Frame::Binary(Bytes::from(vec![7u8; 64 * 1024]));
        session.send_all(std::iter::repeat_n(big, 16)).unwrap();
        let ending = session.clone();
        let task = tokio::spawn(async move {
            run(&engine, &session, &mut ws, Heartbeat::Elsewhere).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "the write waits for the client");
        ending.close(CloseReason::ForcedClose);
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all))
            .await
            .expect("the server ends the connection")
            .unwrap();
        let ops: Vec<u8> = complete_frames(&all).iter().map(|(op, _)| *op).collect();
        let mut expected = vec![0x2; 16];
        expected.push(0x8);
        assert_eq!(ops, expected, "every queued frame, then the close frame");
        task.await.unwrap();
    }

    /// The complete frames at the start of what a client read: (opcode, payload).
    fn complete_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while bytes.len() >= 2 {
            let (len, header) = match bytes[1] & 0x7f {
                126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 if bytes.len() >= 10 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if bytes.len() < header + len {
                break;
            }
            frames.push((bytes[0] & 0x0f, bytes[header..header + len].to_vec()));
            bytes = &bytes[header + len..];
        }
        frames
    }
}
