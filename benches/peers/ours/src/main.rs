//! The minimal broadcast program on this repository's server: a client joins the room named in
//! its handshake auth (`{"room": "<name>"}`); the event `bcast` with arguments `(room, payload)`
//! sends event `msg` with `payload` to every member of `room`. `GET /` answers `up and running`.

use std::sync::Arc;

use serde_json::Value;
use socketio_server::engineio::Body;
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

    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let listener = socketio_server::server::bind(
        (host.as_str(), port),
        socketio_server::server::DEFAULT_BACKLOG,
    )
    .await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    };
    io.serve_with(
        listener,
        async {
            let _ = shutdown.await;
        },
        |req| async move {
            if req.method() == "GET" && req.uri().path() == "/" {
                hyper::Response::new(Body::from("up and running"))
            } else {
                socketio_server::socketio::server::not_found()
            }
        },
    )
    .await;
    Ok(())
}
