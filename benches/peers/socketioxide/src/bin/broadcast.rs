//! The minimal broadcast program on socketioxide: a client joins the room named in its
//! handshake auth (`{"room": "<name>"}`); the event `bcast` with arguments `(room, payload)`
//! sends event `msg` with `payload` to every member of `room`.

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |socket: SocketRef, Data(auth): Data<Value>| {
        if let Some(room) = auth.get("room").and_then(Value::as_str) {
            socket.join(room.to_owned());
        }
        socket.on(
            "bcast",
            async |io: SocketIo, Data((room, payload)): Data<(String, Value)>| {
                let _ = io.to(room).emit("msg", &payload).await;
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
