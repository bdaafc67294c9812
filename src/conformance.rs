//! The conformance server: the configuration and behaviour the Engine.IO and Socket.IO protocol
//! test suites expect, and that the captured fixtures were recorded against.
//!
//! Engine.IO on `/engine.io/` echoes every message (the text `close-me` makes the server close
//! the session instead). Socket.IO on `/socket.io/` serves `/` and `/custom`; the events are
//! described in `fixtures/README.md` and `protocol-tests/node/README.md`. Socket.IO on
//! `/recovery/` has connection state recovery on (the official suite's server has it off).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::engineio::{
    self, AllowedOrigins, CloseReason, EngineConfig, EngineIo, Frame, Message, Session,
};
use crate::socketio::packet::Packet;
use crate::socketio::{ConnectError, Event, RecoveryConfig, Socket, SocketIo, SocketIoConfig};

const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);

/// Rooms one socket may be in (its own included) through the `join` event, and the longest
/// room name it may give: together they bound what one client makes the server hold.
const MAX_ROOMS_PER_SOCKET: usize = 1000;
const MAX_ROOM_NAME_BYTES: usize = 256;

/// The raw Engine.IO echo application.
#[derive(Debug, Default)]
pub struct Echo;

impl engineio::Handler for Echo {
    type Data = ();

    fn on_open(&self, _session: &Arc<Session<()>>) {}

    fn on_message(&self, session: &Arc<Session<()>>, message: Message) {
        let frame = match message {
            Message::Text(text) if &*text == "close-me" => {
                session.close(CloseReason::ForcedClose);
                return;
            }
            Message::Text(text) => Frame::message_text(&text),
            Message::Binary(data) => Frame::message_binary(data),
        };
        let _ = session.send(frame);
    }

    fn on_close(&self, _session: &Arc<Session<()>>, _reason: CloseReason) {}
}

fn engine_config(path: &str, origins: &AllowedOrigins) -> EngineConfig {
    EngineConfig {
        path: path.to_owned(),
        ping_interval: PING_INTERVAL,
        ping_timeout: PING_TIMEOUT,
        max_payload: 1_000_000,
        allowed_origins: origins.clone(),
        ..EngineConfig::default()
    }
}

/// The Socket.IO settings of the conformance applications on `path`.
fn socket_io_config(path: &str, origins: &AllowedOrigins) -> SocketIoConfig {
    SocketIoConfig {
        engine: engine_config(path, origins),
        connect_timeout: Duration::from_millis(1000),
        ..SocketIoConfig::default()
    }
}

/// The Engine.IO echo server on `/engine.io/`.
pub fn engine_echo(origins: &AllowedOrigins) -> Arc<EngineIo<Echo>> {
    EngineIo::new(engine_config("/engine.io/", origins), Echo)
}

/// The Socket.IO conformance application on `/socket.io/`.
pub fn socket_io(origins: &AllowedOrigins) -> SocketIo {
    let io = SocketIo::builder()
        .config(socket_io_config("/socket.io/", origins))
        .build();
    let main = io.of("/");
    main.use_middleware(|socket: Arc<Socket>| async move {
        if socket.auth().get("refuse") == Some(&Value::Bool(true)) {
            return Err(
                ConnectError::new("refused by middleware").with_data(json!({ "reason": "test" }))
            );
        }
        Ok(())
    });
    main.on_connect(|socket| {
        common_handlers(&socket);
        main_handlers(&socket);
    });
    io.of("/custom")
        .on_connect(|socket| common_handlers(&socket));
    io
}

/// A Socket.IO application on `/recovery/` with connection state recovery: a new socket joins
/// the room `news`; `shout` (text, with an ack) sends `news` with the text to the room's other
/// members, then acknowledges.
pub fn recovering_socket_io(origins: &AllowedOrigins) -> SocketIo {
    let io = SocketIo::builder()
        .config(socket_io_config("/recovery/", origins))
        .connection_state_recovery(RecoveryConfig::default())
        .build();
    io.of("/").on_connect(|socket| {
        if !socket.recovered() {
            socket.join("news");
        }
        socket.on(
            "shout",
            |socket: Arc<Socket>, text: String, ack: crate::socketio::Ack| async move {
                let _ = socket.to("news").emit("news", &text);
                let _ = ack.send(&());
            },
        );
    });
    io
}

fn common_handlers(socket: &Arc<Socket>) {
    let _ = socket.emit("auth", socket.auth());
    socket.on_raw(
        "disconnect-me",
        |socket: Arc<Socket>, _event: Event| async move {
            socket.disconnect();
        },
    );
}

/// `(room, ...args)`: the room, and a `room-message` event with the other arguments.
fn room_message(mut e: Event) -> Option<(String, Packet)> {
    let room = room_of(&e)?;
    e.args.remove(0);
    let packet = Packet::event("/", "room-message", e.args).with_attachments(e.attachments);
    Some((room, packet))
}

/// The first argument as a room name.
fn room_of(event: &Event) -> Option<String> {
    event
        .args
        .first()
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn main_handlers(socket: &Arc<Socket>) {
    socket.on_raw("message", |socket: Arc<Socket>, e: Event| async move {
        let _ = socket.emit_raw("message-back", e.args, e.attachments);
    });
    socket.on_raw(
        "message-with-ack",
        |_socket: Arc<Socket>, e: Event| async move {
            let _ = e.ack.send_raw(e.args, e.attachments);
        },
    );
    socket.on_raw("request-ack", |socket: Arc<Socket>, e: Event| {
        ack_round_trip(socket, e, "ack-request", "ack-result")
    });
    // The Socket.IO protocol suite's name for the same round trip.
    socket.on_raw("emit-with-ack", |socket: Arc<Socket>, e: Event| {
        ack_round_trip(socket, e, "emit-with-ack", "emit-with-ack")
    });
    socket.on_raw("join", |socket: Arc<Socket>, e: Event| async move {
        if let Some(room) = room_of(&e) {
            // A client chooses its rooms here: their number is bounded like everything else a
            // client can grow (the answer says whether it joined).
            let joined =
                socket.rooms().len() < MAX_ROOMS_PER_SOCKET && room.len() <= MAX_ROOM_NAME_BYTES;
            if joined {
                socket.join(&room);
            }
            let _ = e.ack.send(&joined);
        }
    });
    socket.on_raw("leave", |socket: Arc<Socket>, e: Event| async move {
        if let Some(room) = room_of(&e) {
            socket.leave(&room);
            let _ = e.ack.send(&true);
        }
    });
    socket.on_raw("to-room", |socket: Arc<Socket>, e: Event| async move {
        if let Some((room, packet)) = room_message(e) {
            socket.to(&room).send(&packet);
        }
    });
    socket.on_raw("to-room-all", |socket: Arc<Socket>, e: Event| async move {
        if let Some((room, packet)) = room_message(e) {
            socket.namespace().to(&room).send(&packet);
        }
    });
    socket.on_raw("except-room", |socket: Arc<Socket>, e: Event| async move {
        if let Some((room, packet)) = room_message(e) {
            socket.namespace().except(&room).send(&packet);
        }
    });
    socket.on_raw(
        "close-transport",
        |socket: Arc<Socket>, _e: Event| async move {
            socket.close_connection();
        },
    );
}

/// Emits `ask` with the event's arguments, asking for an acknowledgement, and then `tell` with
/// the acknowledgement's arguments.
async fn ack_round_trip(socket: Arc<Socket>, e: Event, ask: &'static str, tell: &'static str) {
    if let Ok(reply) = socket
        .emit_raw_with_ack(ask, e.args, e.attachments, Duration::from_secs(10))
        .await
    {
        let _ = socket.emit_raw(tell, reply.args, reply.attachments);
    }
}

/// Serves both applications on `listener` until `shutdown` resolves; `origins` are the browser
/// origins allowed (the protocol suites use any).
pub async fn serve(
    listener: TcpListener,
    origins: AllowedOrigins,
    shutdown: impl Future<Output = ()>,
) {
    let engine = engine_echo(&origins);
    let io = socket_io(&origins);
    let recovering = recovering_socket_io(&origins);
    io.clone()
        .serve_with(listener, shutdown, move |req| {
            let engine = engine.clone();
            let recovering = recovering.clone();
            async move {
                if engine.matches(&req) {
                    engine.handle(req).await
                } else if recovering.matches(&req) {
                    recovering.handle(req).await
                } else {
                    crate::socketio::server::not_found()
                }
            }
        })
        .await;
}
