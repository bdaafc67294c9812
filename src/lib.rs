//! A Socket.IO v5 server on a hand-written Engine.IO v4 layer, on tokio and hyper.
#![deny(missing_docs)]

pub mod chat;
pub mod conformance;
pub mod engineio;
pub mod id;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod server;
pub mod socketio;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
