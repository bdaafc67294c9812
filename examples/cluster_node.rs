//! One node of a Socket.IO cluster on Redis; start several on different ports with the same
//! `REDIS_URL` and they behave as one server (Node.js nodes with `@socket.io/redis-adapter`
//! included).
//!
//! `PORT=3001 REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example cluster_node`
//!
//! On `/`, a socket joins the room named by its handshake auth `{ "room": "<name>" }`. Events:
//! - `bcast` `(room, payload)`: broadcasts `msg` with `payload` (any JSON, binary included) to
//!   the room, on every node;
//! - `ids` `(room)` with ack: the ids of every socket in the room, cluster-wide;
//! - `join` / `leave` `(room, other)`: every socket of `room`, on every node, joins or leaves
//!   `other`;
//! - `kick` `(room)`: every socket of `room`, on every node, is disconnected;
//! - `ask` `(payload)` with ack: sends the server-side event `hello` with `payload` to the other
//!   nodes and acknowledges with their answers (each node answers `{ "node": <its id>,
//!   "echo": payload }`).
//!
//! `GET /` answers `200`.

use std::sync::Arc;

use serde_json::{Value, json};
use socketio_server::redis::{RedisConfig, RedisNode};
use socketio_server::socketio::packet::Packet;
use socketio_server::socketio::{Event, Socket, SocketIo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());

    let node = RedisNode::connect(&redis_url, RedisConfig::default()).await?;
    let io = SocketIo::builder().adapter(node.adapter_factory()).build();
    let main_ns = io.of("/");

    let uid = node.uid().to_owned();
    main_ns.on_server_event("hello", move |args, ack| {
        let echo = args.into_iter().next().unwrap_or(Value::Null);
        ack.send(json!({ "node": uid, "echo": echo }));
    });

    main_ns.on_connect(|socket| {
        if let Some(room) = socket.auth().get("room").and_then(Value::as_str)
            && !room.is_empty()
        {
            socket.join(room);
        }
        socket.on_raw("bcast", |socket: Arc<Socket>, event: Event| async move {
            let Some(room) = event.args.first().and_then(Value::as_str) else {
                return;
            };
            let payload = event.args.get(1).cloned().unwrap_or(Value::Null);
            let packet = Packet::event(socket.namespace().name(), "msg", vec![payload])
                .with_attachments(event.attachments);
            socket.namespace().to(room).send(&packet);
        });
        socket.on("ids", |socket: Arc<Socket>, room: String, ack| async move {
            let ids: Result<Vec<String>, String> = socket
                .namespace()
                .to(&room)
                .fetch_sockets()
                .await
                .map(|all| all.into_iter().map(|s| s.id).collect())
                .map_err(|e| e.to_string());
            let _ = match ids {
                Ok(ids) => ack.send(&ids),
                Err(e) => ack.send(&json!({ "error": e })),
            };
        });
        socket.on(
            "join",
            |socket: Arc<Socket>, (room, other): (String, String), _ack| async move {
                socket.namespace().to(&room).join(&other);
            },
        );
        socket.on(
            "leave",
            |socket: Arc<Socket>, (room, other): (String, String), _ack| async move {
                socket.namespace().to(&room).leave(&other);
            },
        );
        socket.on(
            "kick",
            |socket: Arc<Socket>, room: String, _ack| async move {
                socket.namespace().to(&room).disconnect();
            },
        );
        socket.on(
            "ask",
            |socket: Arc<Socket>, payload: Value, ack| async move {
                let answers = socket
                    .namespace()
                    .server_side_emit_with_ack("hello", vec![payload])
                    .await;
                let _ = match answers {
                    Ok(answers) => ack.send(&answers),
                    Err(e) => ack.send(&json!({ "error": e.to_string() })),
                };
            },
        );
    });

    let listener = socketio_server::server::bind(
        format!("{host}:{port}"),
        socketio_server::server::DEFAULT_BACKLOG,
    )
    .await?;
    println!(
        "cluster node {} listening on http://{}",
        node.uid(),
        listener.local_addr()?
    );
    io.serve_with(
        listener,
        socketio_server::server::shutdown_signal(),
        |_req| async { hyper::Response::new(socketio_server::engineio::Body::from("ok")) },
    )
    .await;
    node.shutdown();
    Ok(())
}
