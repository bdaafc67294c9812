//! Helpers shared by the protocol test targets: the real server, started in-process on an
//! ephemeral port.

#![allow(dead_code)]

pub mod client;

use std::net::SocketAddr;

use socketio_server::conformance;
use socketio_server::engineio::AllowedOrigins;

async fn spawn(origins: AllowedOrigins) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(conformance::serve(
        listener,
        origins,
        std::future::pending(),
    ));
    addr
}

/// Starts the conformance server (any Origin allowed, with credentials) and returns its address.
pub async fn spawn_conformance_server() -> SocketAddr {
    spawn(AllowedOrigins::AnyWithCredentials).await
}

/// Starts the conformance server allowing only the Origin `allowed` and returns its address.
pub async fn spawn_restricted_origin_server(allowed: &str) -> SocketAddr {
    spawn(AllowedOrigins::List(vec![allowed.to_owned()])).await
}
