//! The payload echo program on socketioxide: the event `echo` is acknowledged with its argument,
//! binary included (`rmpv::Value` keeps byte buffers as binary; the payload benchmark sends one
//! argument per event). Limits are raised as in the other peers' echo programs: messages and
//! polling bodies up to 32 MiB, large outbound queues.

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
    socketioxide_peer::serve(layer).await
}
