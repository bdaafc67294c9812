//! The minimal broadcast program on this repository's server: a client joins the room named in
//! its handshake auth (`{"room": "<name>"}`); the event `bcast` with arguments `(room, payload)`
//! sends event `msg` with `payload` to every member of `room`. `GET /` answers `up and running`.

use std::sync::Arc;

use serde_json::Value;
use socketio_server::socketio::{Event, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder().build();
    let handle = io.clone();
    io.of("/").on_connect(move |socket| {
        if let Some(room) = socket.auth().get("room").and_then(Value::as_str) {
            socket.join(room);
        }
        let io = handle.clone();
        socket.on_raw("bcast", move |_socket: Arc<_>, event: Event| {
            if let [Value::String(room), payload] = event.args.as_slice() {
                let _ = io.to(room).emit("msg", payload);
            }
            async {}
        });
    });

    ours_peer::serve(io).await
}
