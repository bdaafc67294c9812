//! Engine.IO v4: the transport layer under Socket.IO.
//!
//! [`packet`] is the pure codec, [`session`] one client's state and queue, [`polling`] and
//! [`websocket`] the two transports, and [`server`] the routing of requests to sessions.

mod base64;
pub mod config;
pub mod error;
mod limits;
pub mod metrics;
pub mod packet;
pub mod polling;
pub mod query;
pub mod server;
pub mod session;
pub mod websocket;
mod ws_frames;
mod ws_io;

pub use config::{AllowRequest, AllowedOrigins, EngineConfig, ResponseHeaders};
pub use error::{CloseReason, PacketError, RequestError, SendError};
pub(crate) use limits::source;
pub use metrics::EngineMetrics;
pub use packet::{Frame, Message};
pub use server::{Body, EngineIo, Handler, RemoteAddr};
pub use session::{RequestInfo, Session, Transport};
