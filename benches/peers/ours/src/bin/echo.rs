//! The payload echo program on this repository's server: the event `echo` is acknowledged with
//! the same arguments, binary attachments included. Limits are raised as in the other peers'
//! echo programs: messages and polling bodies up to 32 MiB, large outbound queues, no limit on
//! the attachments held or on the WebSocket message rate. `GET /` answers `up and running`.

use std::sync::Arc;

use socketio_server::socketio::{Event, Socket, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder()
        .max_payload(32 * 1024 * 1024)
        .outbound_queue(100_000, 512 * 1024 * 1024)
        .max_buffered_attachment_bytes(1 << 30)
        .max_buffered_attachment_bytes_per_address(1 << 30)
        .ws_message_rate(1_000_000_000, 1e9)
        .build();
    io.of("/").on_connect(|socket| {
        socket.on_raw("echo", |_socket: Arc<Socket>, event: Event| {
            if event.ack.requested() {
                let _ = event.ack.send_raw(event.args, event.attachments);
            }
            async {}
        });
    });

    ours_peer::serve(io).await
}
