//! HTTP long-polling: a GET takes what is queued (waiting until something is), a POST delivers
//! a payload of packets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
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

    let read = Limited::new(body, config.max_payload).collect();
    let body = match tokio::time::timeout(config.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return fail(CloseReason::TransportError, RequestError::PayloadTooLarge);
        }
        Ok(Err(_)) | Err(_) => return fail(CloseReason::TransportError, RequestError::BadRequest),
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
