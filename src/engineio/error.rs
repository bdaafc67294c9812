//! Errors of the Engine.IO layer and their wire answers.

use std::fmt;

/// Why a single packet could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Nothing at all.
    #[error("empty packet")]
    Empty,
    /// A type character outside `0`-`6`.
    #[error("unknown packet type")]
    UnknownType,
    /// An open packet, which only servers send.
    #[error("open packet from a client")]
    UnexpectedOpen,
    /// Data after a type that carries none.
    #[error("data on a packet type that carries none")]
    UnexpectedData,
    /// Text that is not UTF-8.
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    /// A `b` record that is not base64.
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
    /// More packets in one payload than allowed.
    #[error("too many packets in one payload")]
    TooManyPackets,
}

/// An HTTP request the Engine.IO layer refuses. Each maps to a status and, for the protocol's own
/// errors, to the `{"code":N,"message":"..."}` body the reference server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Code 0: the `transport` parameter is missing or unknown.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: no open session has this id.
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a handshake that is not a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: a request that breaks the protocol.
    #[error("Bad request")]
    BadRequest,
    /// Code 4: the origin is not allowed.
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: `EIO` is not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// A polling body larger than maxPayload.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The client's address holds too many sessions, or opens them too fast.
    #[error("Too many requests")]
    TooManyRequests,
    /// The server holds as many sessions as it is configured for.
    #[error("Server full")]
    ServerFull,
}

impl RequestError {
    /// The protocol's error code, when the error has one.
    pub fn code(self) -> Option<u8> {
        match self {
            RequestError::UnknownTransport => Some(0),
            RequestError::UnknownSid => Some(1),
            RequestError::BadHandshakeMethod => Some(2),
            RequestError::BadRequest => Some(3),
            RequestError::Forbidden => Some(4),
            RequestError::UnsupportedProtocolVersion => Some(5),
            RequestError::PayloadTooLarge
            | RequestError::TooManyRequests
            | RequestError::ServerFull => None,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> hyper::StatusCode {
        match self {
            RequestError::Forbidden => hyper::StatusCode::FORBIDDEN,
            RequestError::PayloadTooLarge => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::TooManyRequests => hyper::StatusCode::TOO_MANY_REQUESTS,
            RequestError::ServerFull => hyper::StatusCode::SERVICE_UNAVAILABLE,
            _ => hyper::StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body of the answer.
    pub fn body(self) -> String {
        match self.code() {
            Some(code) => format!(r#"{{"code":{code},"message":"{self}"}}"#),
            None => format!(r#"{{"message":"{self}"}}"#),
        }
    }
}

/// Why a session ended; the layer above is told exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet or closed the WebSocket.
    TransportClose,
    /// The connection failed, or the client broke the transport's rules.
    TransportError,
    /// No pong within pingTimeout.
    PingTimeout,
    /// The client sent something that is not a packet.
    ParseError,
    /// The client's outbound queue overflowed: it does not read what it is sent.
    SlowConsumer,
    /// The layer above closed the session.
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// The reason as the reference implementation names it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }

    /// Whether the server ended the session (the layer above chose to, it shuts down, or a
    /// packet could not be read), rather than the client leaving, going silent or breaking the
    /// transport: the client is still owed the close packet, and is waited for to fetch it.
    pub(crate) fn owes_the_client_a_close(self) -> bool {
        matches!(
            self,
            CloseReason::ForcedClose | CloseReason::ServerShutdown | CloseReason::ParseError
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a packet could not be queued for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session has ended.
    #[error("the session is closed")]
    Closed,
    /// The queue overflowed; the session is being closed.
    #[error("the client's queue is full")]
    QueueFull,
    /// A volatile packet was dropped because the client is behind.
    #[error("a volatile packet was dropped")]
    Dropped,
}
