//! A minimal Socket.IO server: every `message` comes back to its sender as `message`, and an
//! ack is answered with the same arguments.
//!
//! `cargo run --release --example echo`, then connect any Socket.IO client to port 3000.

use std::sync::Arc;

use socketio_server::socketio::{Event, Socket, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on_raw("message", |socket: Arc<Socket>, event: Event| async move {
            if event.ack.requested() {
                let _ = event.ack.send_raw(event.args, event.attachments);
            } else {
                let _ = socket.emit_raw("message", event.args, event.attachments);
            }
        });
    });
    let listener =
        socketio_server::server::bind("0.0.0.0:3000", socketio_server::server::DEFAULT_BACKLOG)
            .await?;
    println!("echo server listening on http://localhost:3000");
    io.serve(listener, socketio_server::server::shutdown_signal())
        .await;
    Ok(())
}
