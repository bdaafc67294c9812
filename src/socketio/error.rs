//! Errors of the Socket.IO layer.

use std::fmt;

use serde_json::Value;

use super::binary::BinaryError;
use crate::engineio::{CloseReason, SendError};

/// Why a socket left its namespace; handlers get it on disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed the connection.
    TransportClose,
    /// The connection failed, or the client did not read what it was sent.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent something that is not a valid Engine.IO packet.
    ParseError,
    /// The connection was closed under the socket by the server: the program closed it
    /// ([`Socket::close_connection`](super::Socket::close_connection)), or the client broke
    /// the Socket.IO protocol (a packet that does not decode, or one out of place), as Node's
    /// server says for each.
    ForcedClose,
    /// The server disconnected the socket from its namespace.
    ServerNamespaceDisconnect,
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The server closed the whole connection. Node's server gives it when it closes a
    /// polling connection that has no request pending; this one says
    /// [`ForcedClose`](Self::ForcedClose) whatever the transport.
    ForcedServerClose,
    /// The server is shutting down.
    ServerShuttingDown,
}

impl DisconnectReason {
    /// The reason as Socket.IO names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ForcedServerClose => "forced server close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
        }
    }
}

impl DisconnectReason {
    /// Whether the client may come back for its socket (connection state recovery): the
    /// connection was lost or closed under it, rather than the socket being left on purpose
    /// or the client breaking the protocol. Node's list.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::TransportClose
                | DisconnectReason::TransportError
                | DisconnectReason::PingTimeout
                | DisconnectReason::ForcedClose
                | DisconnectReason::ForcedServerClose
                | DisconnectReason::ServerShuttingDown
        )
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::TransportError | CloseReason::SlowConsumer => {
                DisconnectReason::TransportError
            }
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ForcedClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShutdown => DisconnectReason::ServerShuttingDown,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an emit did not reach a client's queue.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The arguments could not be serialised.
    #[error("arguments do not serialise: {0}")]
    Serialize(#[from] BinaryError),
    /// The socket or its connection is gone.
    #[error("the socket is disconnected")]
    Disconnected,
    /// The client is behind: a volatile packet was dropped, or its queue overflowed.
    #[error("the client cannot take the packet: {0}")]
    Send(SendError),
    /// The event's name is one the clients keep for their own events (`connect`,
    /// `disconnect`, ...): a client would take it for one of those.
    #[error("\"{0}\" is a reserved event name")]
    ReservedEventName(String),
    /// The socket already owes as many acknowledgements as it may
    /// ([`SocketIoConfig::max_pending_acks`](super::SocketIoConfig::max_pending_acks)).
    #[error("the socket owes too many acknowledgements")]
    TooManyPendingAcks,
}

impl From<SendError> for EmitError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed => EmitError::Disconnected,
            other => EmitError::Send(other),
        }
    }
}

/// Why an acknowledgement did not come back.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout.
    #[error("no acknowledgement within the timeout")]
    Timeout,
    /// The socket disconnected before answering.
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
    /// The emit itself failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The answer did not deserialise into the expected type.
    #[error("the acknowledgement does not deserialise: {0}")]
    Decode(BinaryError),
}

/// A refusal from event middleware ([`Socket::use_event_middleware`](super::Socket::use_event_middleware)):
/// the event reaches no handler. The client is not told; the reason goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct EventRefused {
    /// Why, for the log.
    pub reason: String,
}

impl EventRefused {
    /// A refusal with its reason.
    pub fn new(reason: impl Into<String>) -> EventRefused {
        EventRefused {
            reason: reason.into(),
        }
    }
}

/// A refusal from connect middleware, sent to the client as CONNECT_ERROR.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// The message the client's `connect_error` carries.
    pub message: String,
    /// Optional data for the client (`err.data`).
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// Adds data the client receives with the refusal.
    pub fn with_data(mut self, data: Value) -> ConnectError {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}
