//! What the bench programs on this repository's server share: the listener (`HOST`, `PORT`,
//! default 127.0.0.1:3001), `GET /` answering `up and running`, and a clean stop on SIGINT or
//! SIGTERM.

use socketio_server::engineio::Body;
use socketio_server::socketio::SocketIo;

/// Serves `io` until the process is told to stop.
pub async fn serve(io: SocketIo) -> std::io::Result<()> {
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
