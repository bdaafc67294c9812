//! What the programs share: the listening socket, `GET /` and the shutdown signal.

use axum::serve::ListenerExt;
use socketioxide::layer::SocketIoLayer;

/// Binds `HOST`:`PORT` (defaults 127.0.0.1:3001) and says where it listens.
pub async fn listen() -> std::io::Result<tokio::net::TcpListener> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Serves `layer` (and `GET /`, answering `up and running`) until SIGINT or SIGTERM.
pub async fn serve(layer: SocketIoLayer) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "up and running" }))
        .layer(layer);
    let listener = listen().await?.tap_io(|tcp| {
        // As the npm server and ours do: small frames go out at once.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
}
