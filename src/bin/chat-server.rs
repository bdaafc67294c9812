//! The chat server: the chat application on Socket.IO, with its bundled web client.

use std::process::ExitCode;
use std::time::Duration;

use socketio_server::chat::config::{self, ChatConfig, Command};
use socketio_server::chat::{Chat, web};
use socketio_server::redis::{RedisConfig, RedisNode};

fn main() -> ExitCode {
    let command = config::parse(std::env::args().skip(1), |k| std::env::var(k).ok());
    let config = match command {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chat-server: {e}\n\n{}", config::USAGE);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // As a task, the server runs on the runtime's worker threads rather than on this one.
    let served = runtime.block_on(async { tokio::spawn(run(config)).await });
    match served
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One thread when the process may use one CPU (a container's quota, `taskset`): a scheduler
/// for several threads would only add synchronisation and hand-offs between the thread that
/// accepts and the one that serves. Otherwise a worker per CPU.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_cpu {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

async fn run(config: ChatConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = config.server_builder();
    let cluster = match &config.redis_url {
        Some(url) => {
            let redis = RedisConfig {
                tls_ca_file: config.redis_tls_ca_file.clone(),
                tls_client_cert: config.redis_tls_client_cert.clone(),
                ..RedisConfig::default()
            };
            let Some(node) = join_cluster(url, redis).await? else {
                // Stopped while waiting for Redis.
                return Ok(());
            };
            tracing::info!(node = node.uid(), "clustered through redis");
            builder = builder.adapter(node.adapter_factory());
            Some(node)
        }
        None => None,
    };
    let io = builder.build();
    let chat = Chat::install(&io, config.clone());
    let listener = listen(&config).await?;
    let addr = listener.local_addr()?;
    let shown = if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    println!("chat server listening on http://{shown}:{}", addr.port());

    // Serving ends by closing every client's connection (reason `server shutting down`) and
    // waiting for them to go, within a grace.
    let shutdown = async move {
        socketio_server::server::shutdown_signal().await;
        tracing::info!("shutting down");
    };
    let mut site = web::Site::new(io.clone(), chat.clone());
    if let Some(node) = &cluster {
        site = site.with_cluster(node.clone());
    }
    io.serve_with(listener, shutdown, move |req| {
        let site = site.clone();
        async move { site.respond(&req) }
    })
    .await;

    if let Some(node) = cluster {
        node.shutdown();
    }
    tracing::info!(users = chat.user_count(), "stopped");
    Ok(())
}

/// Joins the cluster. While Redis cannot be reached (it starts after this node, say), tries
/// again until it can, as Node's Redis clients do, rather than exit; a refusal (a wrong
/// password, TLS that does not match, a bad URL) ends the process. `None`: stopped while
/// waiting.
async fn join_cluster(
    url: &str,
    config: RedisConfig,
) -> Result<Option<RedisNode>, Box<dyn std::error::Error + Send + Sync>> {
    const FIRST_WAIT: Duration = Duration::from_millis(250);
    const MAX_WAIT: Duration = Duration::from_secs(5);
    let mut wait = FIRST_WAIT;
    let stop = socketio_server::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // The URL may hold a password: it stays out of the messages.
        match RedisNode::connect(url, config.clone()).await {
            Ok(node) => return Ok(Some(node)),
            Err(e) if e.is_unreachable() => {
                tracing::warn!(error = %e, "Redis cannot be reached yet; trying again");
            }
            Err(e) => return Err(format!("cannot join the cluster through Redis: {e}").into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return Ok(None),
        }
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// The listener on the configured address. On a machine without IPv6 the default address
/// (`::`) cannot be bound: every IPv4 address is taken instead. A port in use or not allowed
/// is an error as it is, rather than a reason to listen on IPv4 alone.
async fn listen(config: &ChatConfig) -> std::io::Result<tokio::net::TcpListener> {
    use socketio_server::server::{DEFAULT_BACKLOG, bind};
    use std::io::ErrorKind::{AddrInUse, PermissionDenied};
    match bind((config.host.as_str(), config.port), DEFAULT_BACKLOG).await {
        Err(e)
            if config.host == config::ANY_HOST
                && !matches!(e.kind(), AddrInUse | PermissionDenied) =>
        {
            tracing::warn!(error = %e, "no IPv6: listening on IPv4 only");
            bind(("0.0.0.0", config.port), DEFAULT_BACKLOG).await
        }
        bound => bound,
    }
}
