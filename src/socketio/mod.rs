//! Socket.IO v5 on top of the Engine.IO layer.
//!
//! [`packet`] is the pure codec and [`binary`] the serde bridge for binary arguments;
//! [`client`] runs one connection, [`namespace`] and [`socket`] are what handlers work with,
//! [`adapter`] keeps rooms, and [`server`] is the handle users build and serve. Connection
//! state recovery ([`RecoveryConfig`]) keeps what a briefly disconnected client gets back.

pub mod adapter;
pub mod binary;
pub mod client;
pub mod error;
pub mod metrics;
pub mod namespace;
pub mod packet;
mod recovery;
pub mod server;
pub mod socket;

pub use adapter::{
    Adapter, BroadcastFlags, BroadcastOptions, BroadcastTarget, ClusterError, FetchedSockets,
    LocalAdapter, RemoteAck, RoomEvent, RoomListener, SocketInfo,
};
pub use error::{AckError, ConnectError, DisconnectReason, EmitError, EventRefused};
pub use namespace::{BroadcastOperator, Namespace, ServerAck};
pub use recovery::RecoveryConfig;
pub use server::{SocketIo, SocketIoBuilder, SocketIoConfig};
pub use socket::{Ack, AckResponse, Event, Socket};
