//! The payload echo program on socketioxide: the event `echo` is acknowledged with its argument,
//! binary included (`rmpv::Value` keeps byte buffers as binary; the payload benchmark sends one
//! argument per event). Limits are raised as in the other peers' echo programs: messages and
//! polling bodies up to 32 MiB, large outbound queues.

use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (layer, io) = SocketIo::builder()
        .max_payload(32 * 1024 * 1024)
        .max_buffer_size(100_000)
        .build_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "echo",
            async |Data(data): Data<rmpv::Value>, ack: AckSender| {
                let _ = ack.send(&data);
            },
        );
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "up and running" }))
        .layer(layer);
    let listener = socketioxide_peer::listen().await?.tap_io(|tcp| {
        // As the npm server and ours do: small frames go out at once.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(socketioxide_peer::shutdown_signal())
        .await
}
