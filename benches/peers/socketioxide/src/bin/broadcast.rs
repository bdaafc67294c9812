//! The minimal broadcast program on socketioxide: a client joins the room named in its
//! handshake auth (`{"room": "<name>"}`); the event `bcast` with arguments `(room, payload)`
//! sends event `msg` with `payload` to every member of `room`.

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
    socketioxide_peer::serve(layer).await
}
