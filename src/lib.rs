//! A Socket.IO v5 server on a hand-written Engine.IO v4 layer, on tokio and hyper: every stock
//! Socket.IO client (v3 and v4 of the JavaScript one, and those of other languages speaking the
//! same protocol) connects over long-polling, WebSocket, or polling upgraded to WebSocket.
//!
//! ```no_run
//! use socketio_server::socketio::SocketIo;
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = SocketIo::builder().build();
//! io.of("/").on_connect(|socket| {
//!     socket.join("lobby");
//!     // Typed arguments through serde; `ack` answers the client's callback, if it gave one.
//!     socket.on("chat", |socket, text: String, ack| async move {
//!         let _ = socket.to("lobby").emit("chat", &text);
//!         let _ = ack.send(&"sent");
//!     });
//! });
//! let listener = socketio_server::server::bind("127.0.0.1:3000", 1024).await?;
//! io.serve(listener, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
//!
//! A program with a hyper server of its own hands Socket.IO's requests to
//! [`SocketIo::handle`](socketio::SocketIo::handle) (see `examples/hyper_app.rs`). The layers,
//! each usable alone: [`engineio`] (sessions and transports), [`socketio`] (packets,
//! namespaces, rooms, acknowledgements, middleware, connection state recovery), [`server`] (the
//! HTTP/1.1 accept loop with its limits), `redis` (several nodes on one Redis, behind the
//! `redis` feature) and [`chat`] (the chat application of the `chat-server` binary).
#![deny(missing_docs)]

pub mod chat;
pub mod conformance;
pub mod engineio;
pub mod id;
mod js_date;
mod js_number;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod server;
pub mod socketio;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
