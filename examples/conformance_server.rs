//! The conformance server: Engine.IO echo on `/engine.io/` and the Socket.IO test application on
//! `/socket.io/`, with the settings the protocols' test suites expect.
//!
//! `cargo run --release --example conformance_server -- --port 3000` (`RUST_LOG=debug` logs
//! every refusal and close, with its reason)

use socketio_server::conformance;
use socketio_server::engineio::AllowedOrigins;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut port: u16 = 3000;
    let mut host = String::from("0.0.0.0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            "--host" => host = args.next().unwrap_or(host),
            "--help" | "-h" => {
                println!("usage: conformance_server [--port N] [--host ADDR]");
                return Ok(());
            }
            other => {
                eprintln!("unknown argument: {other}");
                std::process::exit(2);
            }
        }
    }
    // Quiet unless RUST_LOG asks: the protocol suites provoke errors on purpose.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let listener = socketio_server::server::bind(
        (host.as_str(), port),
        socketio_server::server::DEFAULT_BACKLOG,
    )
    .await?;
    println!(
        "conformance server listening on http://{}",
        listener.local_addr()?
    );
    let shutdown = socketio_server::server::shutdown_signal();
    conformance::serve(listener, AllowedOrigins::AnyWithCredentials, shutdown).await;
    Ok(())
}
