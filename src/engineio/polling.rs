//! HTTP long-polling: a GET takes what is queued (waiting until something is), a POST delivers
//! a payload of packets.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};

use super::error::{CloseReason, RequestError};
use super::packet;
use super::server::{Body, BoxError, EngineIo, Handler};
use super::session::{PollConflict, RequestInfo, Session};

/// A `200` with a text payload.
pub(crate) fn text_response(body: Bytes) -> Response<Body> {
    polling_response(body, "text/plain; charset=UTF-8")
}

/// A `200` of the polling transport. Every answer is for one request only: a cache (a proxy,
/// or a client without the JavaScript client's cache-busting `t=` parameter) must neither keep
/// nor replay it, as the reference server tells it too.
fn polling_response(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn conflict<D>(session: &Session<D>, conflict: PollConflict) -> RequestError {
    match conflict {
        PollConflict::Closed => RequestError::UnknownSid,
        PollConflict::WrongTransport => RequestError::BadRequest,
        PollConflict::Overlap => {
            tracing::debug!(session = %session.log_id(), "overlapping polling requests");
            session.fail(CloseReason::TransportError);
            RequestError::BadRequest
        }
    }
}

/// How long a GET that comes after `3probe` waits for the upgrade to settle before it gets its
/// noop; the reference server answers such a GET on a 100 ms tick too.
const PROBED_GET_WAIT: Duration = Duration::from_millis(100);

/// The most packets python-engineio's client takes in one polling answer
/// (`Payload.max_decode_packets`).
const PYTHON_CLIENT_MAX_PACKETS: usize = 16;

/// How many packets one GET answer carries for the client that opened the session.
///
/// python-engineio's client (under python-socketio's `Client` and `AsyncClient`) drops the
/// connection when an answer has more than 16 packets, which a burst of events, or a few
/// binary ones, easily queues; its sessions get their packets 16 at a time, each GET taking
/// the next ones. It is told by the user agent of the HTTP library it polls with (`requests`,
/// or `aiohttp` for the asyncio client). Every other client takes an answer of any length, as
/// the reference server sends it: splitting theirs would cost a round trip per 16 packets.
fn packets_per_poll(request: &RequestInfo) -> usize {
    let agent = request
        .headers
        .get(header::USER_AGENT)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let python = agent.starts_with(b"python-requests/")
        || memchr::memmem::find(agent, b"aiohttp/").is_some();
    if python {
        PYTHON_CLIENT_MAX_PACKETS
    } else {
        usize::MAX
    }
}

/// A GET: answers with the queued packets, waiting until there is one.
pub(crate) async fn get<D>(session: &Arc<Session<D>>) -> Result<Response<Body>, RequestError> {
    if session.is_probed() {
        // A client moving to WebSocket sends no new GET once probed, but a GET sent right after
        // `5` can overtake it on its way here: it waits for the `5`, to be refused as a GET of
        // an upgraded session should be, rather than get the noop of an upgrade underway.
        let _ = tokio::time::timeout(PROBED_GET_WAIT, session.probe_settled()).await;
    }
    let mut guard = session.begin_get().map_err(|c| conflict(session, c))?;
    let max_packets = packets_per_poll(session.request());
    let mut frames = Vec::new();
    let mut arrived = true;
    loop {
        let notified = session.writer_notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if session
            .poll_ready(&mut frames, max_packets, arrived)
            .map_err(|c| conflict(session, c))?
        {
            return Ok(text_response(packet::encode_payload(&frames)));
        }
        arrived = false;
        guard.set_waiting(true);
        notified.await;
        guard.set_waiting(false);
    }
}

/// A POST: reads the payload (at most maxPayload bytes) and hands its packets over in order.
pub(crate) async fn post<H: Handler, B>(
    engine: &Arc<EngineIo<H>>,
    session: &Arc<Session<H::Data>>,
    req: Request<()>,
    body: B,
) -> Result<Response<Body>, RequestError>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let _guard = session.begin_post().map_err(|c| conflict(session, c))?;
    let config = engine.config();
    let fail = |reason: CloseReason, err: RequestError| {
        session.fail(reason);
        Err(err)
    };

    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    if binary_body {
        // v4 clients send binary as base64 text; a raw binary body is not a payload.
        return fail(CloseReason::ParseError, RequestError::BadRequest);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_payload as u64) {
        return fail(CloseReason::TransportError, RequestError::PayloadTooLarge);
    }

    let read = read_body(body, config.max_payload);
    let body = match tokio::time::timeout(config.body_read_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            return fail(CloseReason::TransportError, RequestError::PayloadTooLarge);
        }
        Ok(Err(BodyError::Failed)) | Err(_) => {
            return fail(CloseReason::TransportError, RequestError::BadRequest);
        }
    };

    let packets = match packet::decode_payload(body, config.max_packets_per_post) {
        Ok(packets) => packets,
        Err(e) => {
            tracing::debug!(session = %session.log_id(), error = %e, "bad polling payload");
            return fail(CloseReason::ParseError, RequestError::BadRequest);
        }
    };
    for packet in packets {
        if session.is_closed() {
            break;
        }
        engine.on_packet(session, packet);
    }

    Ok(polling_response(Bytes::from_static(b"ok"), "text/html"))
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    /// More than the limit.
    TooLarge,
    /// The connection failed, or the body was malformed.
    Failed,
}

/// Reads a body whole, within `limit` bytes. One that comes in one piece (a body that fits in
/// a segment, as clients' posts mostly do) is kept as it came; one in several is copied into
/// one buffer as it comes. Each piece hyper hands over keeps alive the whole read buffer it
/// was cut from: kept as pieces, a body trickled in a byte per segment held kilobytes of
/// memory per byte, for as long as the client took.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
{
    let mut body = std::pin::pin!(body);
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(|_| BodyError::Failed)?.into_data() else {
            // Trailers.
            continue;
        };
        let n = data.remaining();
        if n == 0 {
            continue;
        }
        len = len.saturating_add(n);
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        match &mut joined {
            Some(buf) => buf.put(data),
            // No copy: a `Bytes` piece is handed over as it is.
            None if first.is_empty() => first = data.copy_to_bytes(n),
            None => {
                let mut buf = BytesMut::with_capacity(2 * len);
                buf.extend_from_slice(&first);
                buf.put(data);
                first = Bytes::new();
                joined = Some(buf);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    /// A body that comes in `pieces`.
    fn in_pieces(pieces: Vec<Bytes>) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> {
        let frames = pieces.into_iter().map(|b| Ok(Frame::data(b)));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_kept_as_it_came() {
        let body = Bytes::from_static(b"4hello");
        let read = read_body(Full::new(body.clone()), 100).await.expect("read");
        assert_eq!(read.as_ptr(), body.as_ptr());
    }

    #[tokio::test]
    async fn a_body_in_pieces_keeps_none_of_their_buffers() {
        // As hyper hands them over: each piece cut from a larger read buffer.
        let buffer = Bytes::from(vec![b'x'; 4096]);
        let pieces: Vec<Bytes> = (0..100).map(|i| buffer.slice(i..=i)).collect();
        let read = read_body(in_pieces(pieces), 1000).await.expect("read");
        assert_eq!(read, vec![b'x'; 100]);
        assert!(
            buffer.is_unique(),
            "a piece's read buffer outlived the read"
        );
        // Empty pieces and a first piece followed by others.
        let pieces = ["", "4a", "", "\u{1e}4b", "c"]
            .map(|p| Bytes::from_static(p.as_bytes()))
            .to_vec();
        let read = read_body(in_pieces(pieces), 1000).await.expect("read");
        assert_eq!(read, "4a\u{1e}4bc");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let pieces = vec![Bytes::from_static(b"4abc"); 3];
        assert_eq!(
            read_body(in_pieces(pieces.clone()), 12)
                .await
                .map(|b| b.len()),
            Ok(12)
        );
        assert_eq!(
            read_body(in_pieces(pieces), 11).await,
            Err(BodyError::TooLarge)
        );
        let one = Full::new(Bytes::from_static(b"4abcdef"));
        assert_eq!(read_body(one, 6).await, Err(BodyError::TooLarge));
    }
}
