//! Socket.IO inside a program that runs its own hyper server: Socket.IO answers its path, the
//! program answers every other one. Nothing of this crate's accept loop is used.
//!
//! `cargo run --release --example hyper_app`, then connect any Socket.IO client to port 3000
//! (its `chat` events go to everybody), or `curl localhost:3000/health`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use socketio_server::engineio::RemoteAddr;
use socketio_server::socketio::SocketIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on("chat", |socket, text: String, _ack| async move {
            let _ = socket.namespace().emit("chat", &text);
        });
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    loop {
        let (stream, peer) = listener.accept().await?;
        let io = io.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                // The client's address: sockets show it in their handshake, and the limits per
                // address (sessions, handshakes a second, buffered attachments) count by it.
                // Without it they cannot apply.
                req.extensions_mut().insert(RemoteAddr(peer));
                let io = io.clone();
                async move {
                    if io.matches(&req) {
                        return Ok::<_, Infallible>(io.handle(req).await);
                    }
                    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                }
            });
            // `with_upgrades` hands the connection over when a WebSocket is accepted.
            let served = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                eprintln!("connection ended: {e}");
            }
        });
    }
}
