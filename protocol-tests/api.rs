//! The embedding API over real sockets: typed handlers (binary included), the fallback for
//! events without a handler of their own, dynamic namespaces, acknowledgements from the server
//! to one client and to a whole room, an upgrade of the embedding program's own beside
//! Socket.IO, and what a socket keeps of its opening request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::client::{
    HttpConn, Polling, RawWs, Ws, op, parse_open, ws_connect_with, ws_expect_end_answering_pings,
    ws_open, ws_recv_app, ws_recv_app_text, ws_send, ws_send_binary,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketio_server::engineio::Transport;
use socketio_server::id::Id;
use socketio_server::socketio::{
    AckError, ConnectError, DisconnectReason, EmitError, Event, EventRefused, RecoveryConfig,
    RoomEvent, Socket, SocketIo,
};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Upload {
    name: String,
    data: Bytes,
}

async fn serve(io: &SocketIo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let io = io.clone();
    tokio::spawn(async move { io.serve(listener, std::future::pending()).await });
    addr
}

/// A WebSocket connected to namespace `nsp`; returns it and the CONNECT reply.
async fn connect(addr: SocketAddr, nsp: &str) -> (Ws, String) {
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    ws_send(&mut ws, &format!("40{prefix}")).await;
    let reply = ws_recv_app_text(&mut ws).await;
    (ws, reply)
}

/// The socket id of a CONNECT reply (`40{"sid":...}`).
fn socket_id(reply: &str) -> Id {
    let body: Value = serde_json::from_str(&reply[2..]).expect("a CONNECT reply");
    body["sid"]
        .as_str()
        .and_then(Id::parse)
        .expect("a socket id")
}

/// Sends a CONNECT to the main namespace over the polling session that `open` (the handshake's
/// answer on `http`) opened; returns the POST's answer.
async fn connect_over_polling(
    http: &mut HttpConn,
    handshake: &str,
    open: &common::client::HttpResponse,
) -> common::client::HttpResponse {
    let sid = parse_open(&open.text())["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    http.request("POST", &format!("{handshake}&sid={sid}"), &[], b"40")
        .await
        .expect("an answer")
}

/// Serves `io` from a plain hyper accept loop, as a program with its own server would: Socket.IO
/// on its path, the program's `mine` on every other one. Request bodies are boxed into a type
/// of the program's own before anything sees them, as frameworks on hyper (axum, tower layers)
/// do, and the client's address goes into the extensions.
async fn serve_from_own_hyper(io: &SocketIo) -> SocketAddr {
    use http_body_util::BodyExt;
    use http_body_util::combinators::BoxBody;
    use hyper::server::conn::http1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let io = io.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.expect("accept");
            let io = io.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let mut req =
                            req.map(|body| BoxBody::new(body.map_err(std::io::Error::other)));
                        req.extensions_mut()
                            .insert(socketio_server::engineio::RemoteAddr(peer));
                        let io = io.clone();
                        async move {
                            if io.matches(&req) {
                                return Ok::<_, std::convert::Infallible>(io.handle(req).await);
                            }
                            Ok(hyper::Response::new(http_body_util::Full::new(
                                Bytes::from_static(b"mine"),
                            )))
                        }
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_programs_own_hyper_server_serves_every_transport() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on("echo", |socket, n: u32, _ack| async move {
            let _ = socket.emit("echoed", &n);
        });
    });
    let addr = serve_from_own_hyper(&io).await;
    assert_eq!(common::client::get(addr, "/other").await.text(), "mine");

    // Straight to a WebSocket.
    let (mut ws, _) = connect(addr, "/").await;
    ws_send(&mut ws, r#"42["echo",1]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["echoed",1]"#);

    // Polling, then the upgrade.
    let polling = Polling::open(addr, "/socket.io/").await;
    polling.connect_main().await;
    polling.post_ok(br#"42["echo",2]"#).await;
    assert_eq!(polling.get_packets().await, [r#"42["echoed",2]"#]);
    let mut ws = polling.probed_websocket().await;
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, r#"42["echo",3]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["echoed",3]"#);
    // The address reached the sockets through the extension.
    let sockets = io.of("/").sockets();
    assert_eq!(sockets.len(), 2);
    assert!(sockets.iter().all(|s| s.remote_addr().is_some()));
}

#[tokio::test]
async fn allow_request_refuses_handshakes_before_any_session_exists() {
    let io = SocketIo::builder()
        .allow_request(|req| req.headers().get("x-pass").is_some_and(|v| v == "yes"))
        .build();
    let addr = serve(&io).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let mut http = HttpConn::connect(addr).await;
    let refused = http
        .request("GET", handshake, &[], b"")
        .await
        .expect("an answer");
    refused.assert_engine_error(403, 4);
    let refused = http
        .request("GET", handshake, &[("x-pass", "no")], b"")
        .await
        .expect("an answer");
    refused.assert_engine_error(403, 4);
    // Asked before the protocol version is looked at, as in Node.
    let refused = http
        .request("GET", "/socket.io/?EIO=3&transport=polling", &[], b"")
        .await
        .expect("an answer");
    refused.assert_engine_error(403, 4);
    let ws = ws_connect_with(addr, "/socket.io/?EIO=4&transport=websocket", &[]).await;
    assert!(ws.is_err(), "a refused WebSocket handshake is not upgraded");
    assert_eq!(io.engine().session_count(), 0);

    // Let in: the session's later requests are not asked about again.
    let open = http
        .request("GET", handshake, &[("x-pass", "yes")], b"")
        .await
        .expect("an answer");
    assert_eq!(open.status, 200, "{}", open.text());
    let post = connect_over_polling(&mut http, handshake, &open).await;
    assert_eq!(post.text(), "ok");
    let mut ws = ws_connect_with(
        addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[("x-pass", "yes")],
    )
    .await
    .expect("a WebSocket");
    assert!(ws_recv_app_text(&mut ws).await.starts_with("0{"));
}

#[tokio::test]
async fn a_websocket_only_server_refuses_polling_and_offers_no_upgrade() {
    let io = SocketIo::builder()
        .transports(&[Transport::WebSocket])
        .build();
    let addr = serve(&io).await;
    common::client::get(addr, "/socket.io/?EIO=4&transport=polling")
        .await
        .assert_engine_error(400, 0);
    assert_eq!(io.engine().session_count(), 0);

    let (mut ws, open) = ws_open(addr, "/socket.io/").await;
    assert_eq!(open["upgrades"], json!([]));
    ws_send(&mut ws, "40").await;
    let connected = ws_recv_app_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\":"), "{connected}");
    assert_eq!(io.engine().session_count(), 1);
}

#[tokio::test]
async fn a_polling_only_server_refuses_websockets() {
    let io = SocketIo::builder()
        .transports(&[Transport::Polling])
        .build();
    let addr = serve(&io).await;
    let (_, direct) =
        RawWs::connect_response(addr, "/socket.io/?EIO=4&transport=websocket", &[]).await;
    direct.assert_engine_error(400, 0);

    let polling = Polling::open(addr, "/socket.io/").await;
    assert_eq!(polling.handshake["upgrades"], json!([]));
    let (_, upgrade) = RawWs::connect_response(addr, &polling.websocket_target(), &[]).await;
    upgrade.assert_engine_error(400, 0);
    // The session goes on over polling.
    polling.connect_main().await;
}

#[tokio::test]
async fn without_upgrades_polling_sessions_stay_on_polling() {
    let io = SocketIo::builder().allow_upgrades(false).build();
    let addr = serve(&io).await;
    let polling = Polling::open(addr, "/socket.io/").await;
    assert_eq!(polling.handshake["upgrades"], json!([]));
    let (_, upgrade) = RawWs::connect_response(addr, &polling.websocket_target(), &[]).await;
    upgrade.assert_engine_error(400, 3);
    polling.connect_main().await;

    // A client may still open a WebSocket session directly.
    let (mut ws, open) = ws_open(addr, "/socket.io/").await;
    assert_eq!(open["upgrades"], json!([]));
    ws_send(&mut ws, "40").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40{\"sid\":"));
}

#[tokio::test]
async fn response_headers_go_into_answers_and_handshakes_are_told_apart() {
    let io = SocketIo::builder()
        .response_headers(|req, handshake, headers| {
            headers.insert("x-node", "a".parse().unwrap());
            if handshake {
                headers.insert("set-cookie", "sticky=a; Path=/".parse().unwrap());
            }
            if req.headers().contains_key("x-break") {
                // Framing headers are left out whatever the function says.
                headers.insert("content-length", "1".parse().unwrap());
                headers.insert("connection", "close".parse().unwrap());
            }
            if req.headers().contains_key("x-panic") {
                panic!("a mistake in the program's function");
            }
        })
        .build();
    let addr = serve(&io).await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let mut http = HttpConn::connect(addr).await;
    let open = http
        .request("GET", handshake, &[("x-break", "1")], b"")
        .await
        .expect("an answer");
    assert_eq!(open.status, 200);
    assert_eq!(open.header("x-node"), Some("a"));
    assert_eq!(open.header("set-cookie"), Some("sticky=a; Path=/"));
    assert_ne!(open.header("connection"), Some("close"));
    // The connection is still usable: the body was framed by the server, not by the function.
    let post = connect_over_polling(&mut http, handshake, &open).await;
    assert_eq!(post.text(), "ok");
    assert_eq!(post.header("x-node"), Some("a"));
    assert_eq!(post.header("set-cookie"), None, "not a handshake");

    // A WebSocket handshake's 101 gets them too; a refusal does not.
    let (_ws, upgraded) =
        RawWs::connect_response(addr, "/socket.io/?EIO=4&transport=websocket", &[]).await;
    assert_eq!(upgraded.status, 101);
    assert_eq!(upgraded.header("x-node"), Some("a"));
    assert_eq!(upgraded.header("set-cookie"), Some("sticky=a; Path=/"));
    let refused = common::client::get(addr, "/socket.io/?EIO=4&transport=nope").await;
    refused.assert_engine_error(400, 0);
    assert_eq!(refused.header("x-node"), None);
    // An empty sid opens a session: a handshake.
    let open = common::client::get(addr, "/socket.io/?EIO=4&transport=polling&sid=").await;
    assert_eq!(open.status, 200);
    assert_eq!(open.header("set-cookie"), Some("sticky=a; Path=/"));

    // A function that panics adds nothing, and the answer still goes out.
    let mut http = HttpConn::connect(addr).await;
    let open = http
        .request("GET", handshake, &[("x-panic", "1")], b"")
        .await
        .expect("an answer");
    assert_eq!(open.status, 200);
    assert_eq!(open.header("x-node"), None);
}

#[tokio::test]
async fn room_events_tell_of_joins_leaves_and_disconnects() {
    let io = SocketIo::builder().build();
    let ns = io.of("/");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    assert!(ns.on_room_event(move |e| {
        let _ = tx.send(e.clone());
    }));
    ns.on_connect(|socket| {
        socket.on("join", |socket, room: String, ack| async move {
            socket.join(&room);
            let _ = ack.send(&());
        });
        socket.on("leave", |socket, room: String, ack| async move {
            socket.leave(&room);
            let _ = ack.send(&());
        });
    });
    let addr = serve(&io).await;
    let (mut a, reply) = connect(addr, "/").await;
    let a_id = socket_id(&reply);
    let (mut b, reply) = connect(addr, "/").await;
    let b_id = socket_id(&reply);
    ws_send(&mut a, r#"421["join","lobby"]"#).await;
    assert!(ws_recv_app_text(&mut a).await.starts_with("431"));
    ws_send(&mut b, r#"421["join","lobby"]"#).await;
    assert!(ws_recv_app_text(&mut b).await.starts_with("431"));
    ws_send(&mut a, r#"422["leave","lobby"]"#).await;
    assert!(ws_recv_app_text(&mut a).await.starts_with("432"));
    drop(b); // its connection ends: it leaves its rooms
    let mut events = Vec::new();
    while events.len() < 6 {
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        events.push(
            next.expect("a room event in time")
                .expect("the listener is alive"),
        );
    }
    let joined = |socket| RoomEvent::Joined {
        room: "lobby".into(),
        socket,
    };
    let left = |socket| RoomEvent::Left {
        room: "lobby".into(),
        socket,
    };
    assert_eq!(
        events,
        [
            RoomEvent::Created("lobby".into()),
            joined(a_id),
            joined(b_id),
            left(a_id),
            left(b_id),
            RoomEvent::Deleted("lobby".into()),
        ]
    );
}

#[tokio::test]
async fn typed_handlers_take_several_arguments_and_binary() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on(
            "add",
            |_s: Arc<Socket>, (a, b): (i64, i64), ack| async move {
                let _ = ack.send(&(a + b));
            },
        );
        socket.on("upload", |_s: Arc<Socket>, up: Upload, ack| async move {
            let _ = ack.send(&(up.name, up.data.len(), up.data));
        });
        socket.on("slow", |_s: Arc<Socket>, (): (), ack| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = ack.send("slow done");
        });
    });
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/").await;
    assert!(reply.starts_with("40{\"sid\":"), "{reply}");

    ws_send(&mut ws, r#"421["add",2,40]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "431[42]");

    // A slow handler does not hold up the next event.
    ws_send(&mut ws, r#"422["slow"]"#).await;
    ws_send(&mut ws, r#"423["add",1,1]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "433[2]");
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"432["slow done"]"#);

    ws_send(
        &mut ws,
        r#"451-4["upload",{"name":"f","data":{"_placeholder":true,"num":0}}]"#,
    )
    .await;
    ws_send_binary(&mut ws, &[9, 8, 7]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"461-4["f",3,{"_placeholder":true,"num":0}]"#
    );
    match ws_recv_app(&mut ws).await {
        Message::Binary(b) => assert_eq!(&b[..], &[9, 8, 7]),
        other => panic!("expected the attachment, got {other:?}"),
    }

    // Arguments that do not deserialise: an error ack, and the connection goes on.
    ws_send(&mut ws, r#"425["add","two",1]"#).await;
    let refused = ws_recv_app_text(&mut ws).await;
    let args: Value = serde_json::from_str(refused.strip_prefix("435").expect("ack 5")).unwrap();
    assert!(
        args[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid arguments")),
        "{refused}"
    );
    ws_send(&mut ws, r#"426["add",3,4]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "436[7]");
}

#[tokio::test]
async fn events_without_a_handler_of_their_own_reach_the_fallback() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on("known", |_s: Arc<Socket>, n: u32, ack| async move {
            let _ = ack.send(&("named", n));
        });
        socket.on_fallback(|socket: Arc<Socket>, event: Event| async move {
            let sizes: Vec<usize> = event.attachments.iter().map(Bytes::len).collect();
            let seen = json!({ "name": event.name, "args": event.args, "sizes": sizes });
            if event.ack.requested() {
                let _ = event.ack.send(&seen);
            } else {
                let _ = socket.emit("seen", &seen);
            }
        });
    });
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/").await;
    assert!(reply.starts_with("40{\"sid\":"), "{reply}");

    // A named handler still gets its own event.
    ws_send(&mut ws, r#"421["known",7]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"431["named",7]"#);

    ws_send(&mut ws, r#"422["whatever",1,{"a":"b"}]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"432[{"name":"whatever","args":[1,{"a":"b"}],"sizes":[]}]"#
    );
    ws_send(&mut ws, r#"42["no ack"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["seen",{"name":"no ack","args":[],"sizes":[]}]"#
    );
    // Attachments come with the event, as to a raw handler.
    ws_send(&mut ws, r#"451-3["file",{"_placeholder":true,"num":0}]"#).await;
    ws_send_binary(&mut ws, &[1, 2, 3, 4]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"433[{"name":"file","args":[{"_placeholder":true,"num":0}],"sizes":[4]}]"#
    );
}

#[tokio::test]
async fn on_any_sees_every_event_before_its_handler() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on_any(|socket, name, args| {
            let _ = socket.emit("seen", &(name, args));
        });
        // A listener that panics costs the client nothing.
        socket.on_any(|_socket, name, _args| assert_ne!(name, "boom"));
        socket.on("known", |_s: Arc<Socket>, n: u32, ack| async move {
            let _ = ack.send(&("named", n));
        });
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;

    ws_send(&mut ws, r#"421["known",7]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","known",[7]]"#);
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"431["named",7]"#);
    // Events without a handler too.
    ws_send(&mut ws, r#"42["nobody",{"a":1}]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["seen","nobody",[{"a":1}]]"#
    );
    ws_send(&mut ws, r#"42["boom"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","boom",[]]"#);
    ws_send(&mut ws, r#"422["known",8]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","known",[8]]"#);
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"432["named",8]"#);
}

#[tokio::test]
async fn event_middleware_can_change_an_event_or_stop_it() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.on_any(|socket, name, _args| {
            let _ = socket.emit("seen", &name);
        });
        // Renames `legacy` to `modern`, and refuses `secret` unless its first argument is the
        // password, telling the client first.
        socket.use_event_middleware(|socket, mut event: Event| async move {
            if event.name == "legacy" {
                event.name = "modern".to_owned();
            }
            if event.name == "secret" && event.args.first() != Some(&json!("open sesame")) {
                let _ = socket.emit("refused", &event.name);
                return Err(EventRefused::new("wrong password"));
            }
            Ok(event)
        });
        // A second one that waits before it lets an event through: the handler still runs.
        socket.use_event_middleware(|_socket, event: Event| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(event)
        });
        socket.on("modern", |_s: Arc<Socket>, n: u32, ack| async move {
            let _ = ack.send(&("modern", n));
        });
        socket.on("secret", |_s: Arc<Socket>, _p: String, ack| async move {
            let _ = ack.send(&"the secret");
        });
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;

    ws_send(&mut ws, r#"421["legacy",7]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","legacy"]"#);
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"431["modern",7]"#);

    // Refused: no ack comes back, only what the middleware sent.
    ws_send(&mut ws, r#"422["secret","guess"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","secret"]"#);
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["refused","secret"]"#);
    ws_send(&mut ws, r#"423["secret","open sesame"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["seen","secret"]"#);
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"433["the secret"]"#);
}

#[tokio::test]
async fn an_event_whose_socket_left_while_its_middleware_waited_is_dropped() {
    let io = SocketIo::builder().build();
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel::<String>();
    io.of("/").on_connect(move |socket| {
        socket.use_event_middleware(|_socket, event: Event| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(event)
        });
        let tx = tx.clone();
        socket.on_raw("note", move |_s: Arc<Socket>, event: Event| {
            let _ = tx.send(event.name);
            async {}
        });
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    ws_send(&mut ws, r#"42["note"]"#).await;
    assert_eq!(handled.recv().await.as_deref(), Some("note"));
    ws_send(&mut ws, r#"42["note"]"#).await;
    ws_send(&mut ws, "41").await;
    let late = tokio::time::timeout(Duration::from_millis(500), handled.recv()).await;
    assert!(late.is_err(), "the handler ran for a socket that had left");
}

#[tokio::test]
async fn dynamic_namespaces_are_created_on_first_connect() {
    let io = SocketIo::builder().build();
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        |ns| {
            let name = ns.name().to_owned();
            ns.on_connect(move |socket| {
                let _ = socket.emit("welcome", &name);
            });
        },
    );
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/team-blue").await;
    assert!(reply.starts_with("40/team-blue,{\"sid\":"), "{reply}");
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42/team-blue,["welcome","/team-blue"]"#
    );
    let (_ws, refused) = connect(addr, "/other").await;
    assert_eq!(refused, r#"44/other,{"message":"Invalid namespace"}"#);
    assert!(io.namespaces().iter().any(|ns| ns.name() == "/team-blue"));
}

// Several worker threads: a setup that waited on itself would block one, and the timeout
// below would fail the test instead of hanging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_namespace_setup_may_use_the_server() {
    let io = SocketIo::builder().build();
    let server = io.clone();
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        move |ns| {
            // Its own name gives the namespace being set up; another dynamic name is made
            // (and set up) on the spot; a plain one too; the main namespace is emitted to.
            assert!(Arc::ptr_eq(&server.of(ns.name()), ns));
            if ns.name() == "/team-blue" {
                server.of("/team-red");
            }
            server.of("/lobby");
            let _ = server.emit("made", ns.name());
            let count = server.namespaces().len();
            let name = ns.name().to_owned();
            ns.on_connect(move |socket| {
                let _ = socket.emit("welcome", &(&name, count));
            });
            server.dynamic_namespace(|name| name == "/late", |_| {});
        },
    );
    let addr = serve(&io).await;
    let (mut main, _) = connect(addr, "/").await;
    let (mut ws, reply) = tokio::time::timeout(Duration::from_secs(5), connect(addr, "/team-blue"))
        .await
        .expect("the CONNECT is answered: the setup did not wait on itself");
    assert!(reply.starts_with("40/team-blue,{\"sid\":"), "{reply}");
    // When blue's setup counted, the table held "/", "/lobby" and "/team-red" (made inside
    // it); blue itself joins the table once its setup is over.
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42/team-blue,["welcome","/team-blue",3]"#
    );
    assert_eq!(
        ws_recv_app_text(&mut main).await,
        r#"42["made","/team-red"]"#
    );
    assert_eq!(
        ws_recv_app_text(&mut main).await,
        r#"42["made","/team-blue"]"#
    );
    let mut names: Vec<String> = io
        .namespaces()
        .iter()
        .map(|ns| ns.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["/", "/lobby", "/team-blue", "/team-red"]);
    let (_late, reply) = connect(addr, "/late").await;
    assert!(reply.starts_with("40/late,"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_get_one_dynamic_namespace_set_up_once() {
    let io = SocketIo::builder().build();
    let setups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = setups.clone();
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        move |ns| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Long enough for the other CONNECT to arrive while this one is being set up.
            std::thread::sleep(Duration::from_millis(200));
            ns.on_connect(|socket| {
                let _ = socket.emit("ready", &());
            });
        },
    );
    let addr = serve(&io).await;
    let (a, b) = tokio::join!(connect(addr, "/team-x"), connect(addr, "/team-x"));
    let mut clients = [a, b];
    for (ws, reply) in &mut clients {
        assert!(reply.starts_with("40/team-x,{\"sid\":"), "{reply}");
        assert_eq!(ws_recv_app_text(ws).await, r#"42/team-x,["ready"]"#);
    }
    assert_eq!(setups.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(io.of("/team-x").socket_count(), 2);
}

#[tokio::test]
async fn a_setup_that_panics_refuses_its_connect_and_nothing_else() {
    let io = SocketIo::builder().build();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        move |ns| {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("a mistake in the program's setup");
            }
            ns.on_connect(|socket| {
                let _ = socket.emit("ready", &());
            });
        },
    );
    let addr = serve(&io).await;
    let (mut ws, refused) = connect(addr, "/team-x").await;
    assert_eq!(refused, r#"44/team-x,{"message":"Invalid namespace"}"#);
    assert!(io.namespaces().iter().all(|ns| ns.name() != "/team-x"));
    // The same connection goes on: the next CONNECT makes the namespace anew.
    ws_send(&mut ws, "40/team-x,").await;
    let reply = ws_recv_app_text(&mut ws).await;
    assert!(reply.starts_with("40/team-x,{\"sid\":"), "{reply}");
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42/team-x,["ready"]"#);
}

#[tokio::test]
async fn a_setup_looking_up_its_name_on_another_server_gets_that_servers_namespace() {
    let other = SocketIo::builder().build();
    let io = SocketIo::builder().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let elsewhere = other.clone();
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        move |ns| {
            let theirs = elsewhere.of(ns.name());
            let _ = tx.send(Arc::ptr_eq(&theirs, ns));
        },
    );
    let addr = serve(&io).await;
    let (_ws, reply) = connect(addr, "/team-x").await;
    assert!(reply.starts_with("40/team-x,"), "{reply}");
    assert_eq!(
        rx.recv().await,
        Some(false),
        "one server's namespace handed out by another"
    );
    assert!(other.namespaces().iter().any(|ns| ns.name() == "/team-x"));
}

/// Whether `io` has a namespace named `name`, waiting up to 3 s for it to be `expected`.
async fn namespace_becomes(io: &SocketIo, name: &str, expected: bool) -> bool {
    for _ in 0..300 {
        if io.namespaces().iter().any(|ns| ns.name() == name) == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_dynamic_namespace_goes_when_nothing_holds_it() {
    let io = SocketIo::builder().build();
    let setups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = setups.clone();
    io.dynamic_namespace(
        |name| name.starts_with("/room-"),
        move |ns| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ns.use_middleware(|socket| async move {
                match socket.auth().get("token") {
                    Some(_) => Ok(()),
                    None => Err(ConnectError::new("no token")),
                }
            });
        },
    );
    let addr = serve(&io).await;

    // A refused CONNECT leaves nothing behind: a client cannot fill the server with names.
    for n in 0..20 {
        let (_ws, refused) = connect(addr, &format!("/room-{n}")).await;
        assert_eq!(refused, format!(r#"44/room-{n},{{"message":"no token"}}"#));
    }
    assert!(namespace_becomes(&io, "/room-0", false).await);
    assert!(
        io.namespaces()
            .iter()
            .all(|ns| !ns.name().starts_with("/room-"))
    );

    // Two sockets hold it; it goes with the last of them.
    let join = |addr| async move {
        let (mut ws, _) = ws_open(addr, "/socket.io/").await;
        ws_send(&mut ws, r#"40/room-a,{"token":1}"#).await;
        let reply = ws_recv_app_text(&mut ws).await;
        assert!(reply.starts_with("40/room-a,{\"sid\":"), "{reply}");
        ws
    };
    let first = join(addr).await;
    let mut second = join(addr).await;
    assert!(namespace_becomes(&io, "/room-a", true).await);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(io.namespaces().iter().any(|ns| ns.name() == "/room-a"));
    ws_send(&mut second, "41/room-a,").await;
    assert!(namespace_becomes(&io, "/room-a", false).await);
    let before = setups.load(std::sync::atomic::Ordering::SeqCst);

    // The next CONNECT makes it anew, set up again.
    let _third = join(addr).await;
    assert!(namespace_becomes(&io, "/room-a", true).await);
    assert_eq!(setups.load(std::sync::atomic::Ordering::SeqCst), before + 1);

    // The program reaching a name first makes the same kind of namespace, set up alike.
    let _room = io.of("/room-b");
    assert_eq!(setups.load(std::sync::atomic::Ordering::SeqCst), before + 2);
    let (_ws, refused) = connect(addr, "/room-b").await;
    assert_eq!(refused, r#"44/room-b,{"message":"no token"}"#);
}

#[tokio::test]
async fn a_catch_all_matcher_leaves_the_main_namespace_and_its_handlers_alone() {
    let io = SocketIo::builder().build();
    io.dynamic_namespace(|_name| true, |_ns| {});
    io.of("/").on_connect(|socket| {
        let _ = socket.emit("main", &());
    });
    let addr = serve(&io).await;
    for _ in 0..2 {
        let (mut ws, reply) = connect(addr, "/").await;
        assert!(reply.starts_with("40{"), "{reply}");
        assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["main"]"#);
        ws_send(&mut ws, "41").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_connection_is_in_at_most_so_many_namespaces() {
    let io = SocketIo::builder().max_namespaces_per_connection(3).build();
    io.dynamic_namespace(|name| name.starts_with("/n-"), |_ns| {});
    io.dynamic_namespace(
        |name| name.starts_with("/slow-"),
        |ns| {
            ns.use_middleware(|_socket| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            });
        },
    );
    let addr = serve(&io).await;
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    let join = async |ws: &mut Ws, nsp: &str| {
        ws_send(ws, &format!("40{nsp},")).await;
        ws_recv_app_text(ws).await
    };
    for n in 0..2 {
        let reply = join(&mut ws, &format!("/n-{n}")).await;
        assert!(
            reply.starts_with(&format!("40/n-{n},{{\"sid\":")),
            "{reply}"
        );
    }
    // A CONNECT still in its middleware counts.
    ws_send(&mut ws, "40/slow-1,").await;
    let too_many = r#"44/n-2,{"message":"Too many namespaces"}"#;
    assert_eq!(join(&mut ws, "/n-2").await, too_many);
    let slow = ws_recv_app_text(&mut ws).await;
    assert!(slow.starts_with("40/slow-1,{\"sid\":"), "{slow}");
    assert_eq!(join(&mut ws, "/n-2").await, too_many);
    // Leaving one makes room; another connection has an allowance of its own.
    ws_send(&mut ws, "41/n-0,").await;
    assert!(join(&mut ws, "/n-2").await.starts_with("40/n-2,"));
    let (_other, reply) = connect(addr, "/n-9").await;
    assert!(reply.starts_with("40/n-9,"), "{reply}");
}

#[tokio::test]
async fn a_dynamic_namespace_stays_while_it_keeps_sockets_for_recovery() {
    let io = SocketIo::builder()
        .connection_state_recovery(RecoveryConfig {
            max_disconnection: Duration::from_millis(400),
            ..RecoveryConfig::default()
        })
        .build();
    io.dynamic_namespace(
        |name| name.starts_with("/user-"),
        |ns| {
            ns.on_connect(|socket| {
                let _ = socket.emit("hello", &());
            });
        },
    );
    let addr = serve(&io).await;
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut ws, "40/user-1,").await;
    let reply = ws_recv_app_text(&mut ws).await;
    let data: Value = serde_json::from_str(reply.strip_prefix("40/user-1,").expect("CONNECT"))
        .expect("CONNECT data");
    let pid = data["pid"].as_str().expect("pid").to_owned();
    let sid = data["sid"].as_str().expect("sid").to_owned();
    let hello = ws_recv_app_text(&mut ws).await;
    let args: Vec<Value> =
        serde_json::from_str(hello.strip_prefix("42/user-1,").expect("hello")).expect("args");
    let offset = args[1].as_str().expect("offset").to_owned();
    drop(ws); // the connection is lost: the socket is kept for its return

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(io.namespaces().iter().any(|ns| ns.name() == "/user-1"));
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(
        &mut ws,
        &format!(r#"40/user-1,{{"pid":"{pid}","offset":"{offset}"}}"#),
    )
    .await;
    let reply = ws_recv_app_text(&mut ws).await;
    assert!(
        reply.contains(&format!(r#""sid":"{sid}""#)),
        "recovered: {reply}"
    );
    drop(ws);

    // Kept for 400 ms after the second loss, then gone.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(io.namespaces().iter().any(|ns| ns.name() == "/user-1"));
    assert!(namespace_becomes(&io, "/user-1", false).await);
}

#[tokio::test]
async fn server_acks_to_one_client_and_to_a_room() {
    let io = SocketIo::builder().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Socket>>();
    io.of("/").on_connect(move |socket| {
        socket.join("room");
        let _ = tx.send(socket);
    });
    let addr = serve(&io).await;
    let (mut a, _) = connect(addr, "/").await;
    let (mut b, _) = connect(addr, "/").await;
    let sa = rx.recv().await.expect("first socket");
    let sb = rx.recv().await.expect("second socket");

    // To one client: the reply comes back typed.
    let asked = tokio::spawn(async move {
        sa.emit_with_ack::<_, String>("question", &("q", 1), Duration::from_secs(2))
            .await
    });
    let question = ws_recv_app_text(&mut a).await;
    assert_eq!(question, r#"421["question","q",1]"#);
    ws_send(&mut a, r#"431["answer"]"#).await;
    assert_eq!(asked.await.unwrap().unwrap(), "answer");

    // An answer without arguments: `43<id>` with nothing after the id, as the reference
    // parser takes it, rather than a malformed packet that closes the connection.
    let sb_asks = Arc::clone(&sb);
    let asked = tokio::spawn(async move {
        sb_asks
            .emit_with_ack::<_, ()>("done?", &(), Duration::from_secs(2))
            .await
    });
    assert_eq!(ws_recv_app_text(&mut b).await, r#"421["done?"]"#);
    ws_send(&mut b, "431").await;
    assert!(matches!(asked.await.unwrap(), Ok(())));

    // To a room: one answer arrives, the other client never answers and times out.
    let broadcast = io.to("room").timeout(Duration::from_millis(300));
    let all = tokio::spawn(async move { broadcast.emit_with_ack::<_, u32>("count", &()).await });
    let qa = ws_recv_app_text(&mut a).await;
    let qb = ws_recv_app_text(&mut b).await;
    let id = qa
        .strip_prefix("42")
        .and_then(|r| r.strip_suffix(r#"["count"]"#))
        .expect("an ack id");
    assert!(qb.ends_with(r#"["count"]"#), "{qb}");
    ws_send(&mut a, &format!("43{id}[7]")).await;
    let replies = all.await.unwrap().expect("emitted");
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies.iter().filter(|r| matches!(r, Ok(7))).count(),
        1,
        "{replies:?}"
    );
    assert_eq!(
        replies
            .iter()
            .filter(|r| matches!(r, Err(AckError::Timeout)))
            .count(),
        1,
        "{replies:?}"
    );
}

/// A program's own upgrade beside Socket.IO: its `101` reaches the client even when the program
/// waits for the client to speak first (the server holds a `101` head back, to send it with
/// what follows, and must let it go before it waits to read).
#[tokio::test]
async fn an_upgrade_of_the_programs_own_gets_its_101_before_the_program_reads() {
    use hyper::{Response, StatusCode, header};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let io = SocketIo::builder().build();
    tokio::spawn(async move {
        io.serve_with(listener, std::future::pending(), |req| async move {
            tokio::spawn(async move {
                let upgraded = hyper::upgrade::on(req).await.expect("upgraded");
                let mut conn = BufReader::new(hyper_util::rt::TokioIo::new(upgraded));
                let mut line = String::new();
                conn.read_line(&mut line).await.expect("a line");
                conn.get_mut()
                    .write_all(format!("echo {line}").as_bytes())
                    .await
                    .expect("echo");
            });
            let mut resp = Response::new(socketio_server::engineio::Body::default());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(header::UPGRADE, "line-echo".parse().unwrap());
            resp.headers_mut()
                .insert(header::CONNECTION, "upgrade".parse().unwrap());
            resp
        })
        .await
    });

    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        b"GET /custom HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: line-echo\r\n\r\n",
    )
    .await
    .expect("request");
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the 101 in time, while the program waits to read")
            .expect("read");
        assert!(n > 0, "connection closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp.write_all(b"hi\n").await.expect("line");
    let mut echo = vec![0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echo))
        .await
        .expect("the echo in time")
        .expect("read");
    assert_eq!(&echo, b"echo hi\n");
}

/// A program's own upgrade through `server::serve`: after the `101` the connection is its own,
/// and shutting its side down sends the FIN the peer waits for.
#[tokio::test]
async fn a_programs_own_upgrade_can_shut_its_side_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(socketio_server::server::serve(
        listener,
        socketio_server::server::HttpConfig::default(),
        |mut req: hyper::Request<hyper::body::Incoming>| async move {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    let _ = io.write_all(b"hello").await;
                    let _ = io.shutdown().await;
                    // As a closing handshake does: wait for the peer's end.
                    let mut buf = [0u8; 16];
                    let _ = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
                }
            });
            let mut resp = hyper::Response::new(socketio_server::engineio::Body::default());
            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            let headers = resp.headers_mut();
            headers.insert(
                "connection",
                hyper::header::HeaderValue::from_static("upgrade"),
            );
            headers.insert("upgrade", hyper::header::HeaderValue::from_static("foo"));
            resp
        },
        std::future::pending(),
    ));
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101") && text.ends_with("hello"),
        "{text:?}"
    );
    assert!(
        ended.is_ok(),
        "no end of stream after the program's shutdown: {text:?}"
    );
}

/// A server whose sockets report, as their first event, what they kept of the opening request.
fn echoing_the_request() -> SocketIo {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        let headers = socket.headers();
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect()
        };
        let seen = json!({
            "tags": all("x-tag"),
            "empty": all("x-empty"),
            "cookie": all("cookie"),
            "query": socket.query(),
            "token": socket.query_param("token"),
            "handshake_query": socket.info().handshake["query"],
            "url": socket.info().handshake["url"],
        });
        let _ = socket.emit("seen", &seen);
    });
    io
}

fn seen_event(packet: &str) -> Value {
    let args: Value = serde_json::from_str(packet.strip_prefix("42").expect("an event")).unwrap();
    assert_eq!(args[0], "seen", "{packet}");
    args[1].clone()
}

#[tokio::test]
async fn a_socket_keeps_the_headers_and_query_of_its_opening_request() {
    let io = echoing_the_request();
    let addr = serve(&io).await;
    let headers = [
        ("X-Tag", "one"),
        ("Cookie", "session=abc; theme=dark"),
        ("X-Tag", "two, three"),
        ("X-Empty", ""),
    ];

    // Opened over WebSocket.
    let target = "/socket.io/?EIO=4&transport=websocket&token=a%20b+c%2B&room=r1";
    let mut ws = ws_connect_with(addr, target, &headers)
        .await
        .expect("WebSocket");
    assert!(ws_recv_app_text(&mut ws).await.starts_with("0{"));
    ws_send(&mut ws, "40").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
    // The query as it came, and its parameters decoded (the first of a repeated one).
    let expected = |url: &str, query: &str, decoded: Value| {
        json!({
            "tags": ["one", "two, three"],
            "empty": [""],
            "cookie": ["session=abc; theme=dark"],
            "query": query,
            "token": decoded["token"],
            "handshake_query": decoded,
            "url": url,
        })
    };
    assert_eq!(
        seen_event(&ws_recv_app_text(&mut ws).await),
        expected(
            target,
            "EIO=4&transport=websocket&token=a%20b+c%2B&room=r1",
            json!({"EIO": "4", "transport": "websocket", "token": "a b c+", "room": "r1"}),
        )
    );

    // Opened over polling: the handshake request is the one kept, not the later ones.
    let mut http = HttpConn::connect(addr).await;
    let target = "/socket.io/?EIO=4&transport=polling&token=p&token=%E2%9C%93&name=%E2%9C%93";
    let open = http.request("GET", target, &headers, b"").await.unwrap();
    let sid = parse_open(&open.packets()[0])["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let later = [("X-Tag", "later")];
    let posted = http.request("POST", &session, &later, b"40").await.unwrap();
    assert_eq!(posted.status, 200);
    let mut packets = Vec::new();
    while packets.len() < 2 {
        let got = http.request("GET", &session, &later, b"").await.unwrap();
        packets.extend(got.packets());
    }
    assert!(packets[0].starts_with("40{"), "{packets:?}");
    assert_eq!(
        seen_event(&packets[1]),
        expected(
            target,
            "EIO=4&transport=polling&token=p&token=%E2%9C%93&name=%E2%9C%93",
            json!({"EIO": "4", "transport": "polling", "token": "p", "name": "✓"}),
        )
    );
}

// ---- connection state recovery ------------------------------------------------------------

/// A server with connection state recovery: a new socket joins `news` and gets data; every
/// socket is greeted with whether it was recovered, and its data.
fn recovering_server() -> SocketIo {
    let io = SocketIo::builder()
        .connection_state_recovery(RecoveryConfig::default())
        .build();
    io.of("/").on_connect(|socket| {
        if !socket.recovered() {
            socket.join("news");
            socket.set_data(json!({"name": "ann"}));
        }
        let _ = socket.emit("hello", &(socket.recovered(), socket.data()));
        // The server ends the connection under the client, or disconnects it for good.
        socket.on_raw("cut", |socket: Arc<Socket>, _e: Event| async move {
            socket.close_connection();
        });
        socket.on_raw("kick", |socket: Arc<Socket>, _e: Event| async move {
            socket.disconnect_and_close();
        });
    });
    io
}

/// An event's arguments, its name first.
fn event_args(packet: &str) -> Vec<Value> {
    let args = packet
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("not an event: {packet}"));
    serde_json::from_str(args).unwrap()
}

/// Connects to `/` with `auth`; returns the socket, its sid and its pid.
async fn connect_with_auth(addr: SocketAddr, auth: &Value) -> (Ws, String, String) {
    let (ws, sid, pid, before) = connect_with_auth_seeing(addr, auth).await;
    assert!(before.is_empty(), "{before:?}");
    (ws, sid, pid)
}

/// As [`connect_with_auth`], with the packets that came ahead of the CONNECT answer.
async fn connect_with_auth_seeing(
    addr: SocketAddr,
    auth: &Value,
) -> (Ws, String, String, Vec<String>) {
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut ws, &format!("40{auth}")).await;
    let mut before = Vec::new();
    let reply = loop {
        let packet = ws_recv_app_text(&mut ws).await;
        match packet.strip_prefix("40") {
            Some(reply) => break reply.to_owned(),
            None => before.push(packet),
        }
    };
    let data: Value = serde_json::from_str(&reply).unwrap();
    let field = |k: &str| data[k].as_str().expect(k).to_owned();
    (ws, field("sid"), field("pid"), before)
}

async fn until_no_socket(io: &SocketIo) {
    for _ in 0..200 {
        if io.of("/").socket_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never saw the connection end");
}

#[tokio::test]
async fn a_client_that_comes_back_gets_its_socket_and_the_events_it_missed() {
    let io = recovering_server();
    let addr = serve(&io).await;
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    assert_ne!(sid, pid);
    let hello = event_args(&ws_recv_app_text(&mut ws).await);
    assert_eq!(
        hello[..3],
        [json!("hello"), json!(false), json!({"name": "ann"})]
    );
    // The offset is the last argument.
    let offset = hello[3].as_str().expect("an offset").to_owned();

    drop(ws);
    until_no_socket(&io).await;
    io.to("news").emit("news", "missed 1").unwrap();
    io.emit("all", "missed 2").unwrap();
    io.to("elsewhere").emit("other", "not its room").unwrap();
    io.of("/")
        .except("news")
        .emit("other", "its room left out")
        .unwrap();
    io.to("news").volatile().emit("other", "volatile").unwrap();

    let (mut ws, back_sid, back_pid, missed) =
        connect_with_auth_seeing(addr, &json!({"pid": pid, "offset": offset, "token": "t"})).await;
    assert_eq!((&back_sid, &back_pid), (&sid, &pid), "the same socket");
    // The missed events come ahead of the CONNECT answer, as Node sends them; what the connect
    // handler sends follows it.
    let without_offset = |packet: &str| {
        let args = event_args(packet);
        assert!(args.last().unwrap().is_string(), "{args:?}");
        args[..args.len() - 1].to_vec()
    };
    let missed: Vec<_> = missed.iter().map(|p| without_offset(p)).collect();
    assert_eq!(
        missed,
        [
            vec![json!("news"), json!("missed 1")],
            vec![json!("all"), json!("missed 2")],
        ]
    );
    assert_eq!(
        without_offset(&ws_recv_app_text(&mut ws).await),
        [json!("hello"), json!(true), json!({"name": "ann"})]
    );
    // Still in its room, with its data, offsets going on.
    io.to("news").emit("news", "live").unwrap();
    let live = event_args(&ws_recv_app_text(&mut ws).await);
    assert_eq!(live[..2], [json!("news"), json!("live")]);
    assert!(live[2].is_string());
    let socket = io.of("/").sockets().pop().expect("the socket");
    assert!(socket.recovered());
    assert_eq!(socket.id().as_str(), sid);
    assert_eq!(socket.auth()["token"], "t");

    // Once only: the same pid again while the socket is connected gets a new socket.
    let (_other, other_sid, other_pid) =
        connect_with_auth(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_ne!(other_sid, sid);
    assert_ne!(other_pid, pid);
}

#[tokio::test]
async fn a_socket_left_on_purpose_or_an_unknown_offset_is_not_recovered() {
    let io = recovering_server();
    let addr = serve(&io).await;

    // The client left the namespace itself.
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    let hello = event_args(&ws_recv_app_text(&mut ws).await);
    let offset = hello[3].as_str().unwrap().to_owned();
    ws_send(&mut ws, "41").await;
    until_no_socket(&io).await;
    let (mut ws, new_sid, new_pid) =
        connect_with_auth(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_ne!(new_sid, sid);
    assert_eq!(event_args(&ws_recv_app_text(&mut ws).await)[1], false);

    // A known pid with an offset the server never gave (its offsets' random start, then a
    // count it has not reached); a pid it never gave; a pid that is not a string.
    drop(ws);
    until_no_socket(&io).await;
    let unknown_count = format!("{}999999", &offset[..8]);
    for auth in [
        json!({"pid": new_pid, "offset": unknown_count}),
        json!({"pid": "AAAAAAAAAAAAAAAAAAAA", "offset": offset}),
        json!({"pid": 1, "offset": offset}),
    ] {
        let (mut ws, _, _) = connect_with_auth(addr, &auth).await;
        assert_eq!(
            event_args(&ws_recv_app_text(&mut ws).await)[1],
            false,
            "{auth}"
        );
    }
}

#[tokio::test]
async fn a_connection_the_server_cut_is_recovered_but_a_kicked_client_is_not() {
    let io = recovering_server();
    let addr = serve(&io).await;

    // Cut: the client sees its transport close, comes back, and has its socket.
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    let offset = event_args(&ws_recv_app_text(&mut ws).await)[3].clone();
    ws_send(&mut ws, r#"42["cut"]"#).await;
    ws_expect_end_answering_pings(&mut ws, Duration::from_secs(2)).await;
    until_no_socket(&io).await;
    let (mut ws, back_sid, _) =
        connect_with_auth(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_eq!(back_sid, sid);
    let hello = event_args(&ws_recv_app_text(&mut ws).await);
    assert_eq!(hello[1], true);

    // Kick: a DISCONNECT first (the client does not reconnect by itself), and no recovery.
    let offset = hello[3].clone();
    ws_send(&mut ws, r#"42["kick"]"#).await;
    let end = ws_expect_end_answering_pings(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(
        end.messages,
        [Message::text("41")],
        "a DISCONNECT, then the end"
    );
    until_no_socket(&io).await;
    let (mut ws, new_sid, _) =
        connect_with_auth(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_ne!(new_sid, sid);
    assert_eq!(event_args(&ws_recv_app_text(&mut ws).await)[1], false);
}

#[tokio::test]
async fn an_event_a_handler_sends_after_the_connection_dropped_reaches_the_client_that_comes_back()
{
    let io = recovering_server();
    let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
    io.of("/").on_connect(move |socket| {
        let _ = socket.emit("hello", &(socket.recovered(), socket.data()));
        let _ = held_tx.send(socket.clone());
    });
    let addr = serve(&io).await;
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    let offset = event_args(&ws_recv_app_text(&mut ws).await)[3].clone();
    let first = held.recv().await.expect("the socket");
    drop(ws);
    until_no_socket(&io).await;
    // The connection is gone; a slow handler answers now.
    first
        .emit("late", "while away")
        .expect("kept for the client's return");
    let (mut ws, back_sid, _, missed) =
        connect_with_auth_seeing(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_eq!(back_sid, sid);
    let [late] = &missed[..] else {
        panic!("one missed event: {missed:?}");
    };
    let late = event_args(late);
    assert_eq!(
        (late[0].as_str(), late[1].as_str()),
        (Some("late"), Some("while away"))
    );
    assert_eq!(
        event_args(&ws_recv_app_text(&mut ws).await)[1],
        true,
        "hello, recovered"
    );
    // Back already: the old socket's event reaches the client at once.
    first.emit("later", "back").expect("sent");
    let later = event_args(&ws_recv_app_text(&mut ws).await);
    assert_eq!(later[0].as_str(), Some("later"));
    // Without recovery, an event for a socket that left is refused.
    let plain = SocketIo::builder().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    plain.of("/").on_connect(move |socket| {
        let _ = tx.send(socket.clone());
    });
    let plain_addr = serve(&plain).await;
    let (ws, _) = connect(plain_addr, "/").await;
    let gone = rx.recv().await.expect("the socket");
    drop(ws);
    until_no_socket(&plain).await;
    assert!(matches!(
        gone.emit("late", "x"),
        Err(EmitError::Disconnected)
    ));
}

#[tokio::test]
async fn more_missed_events_than_the_outbound_queue_takes_make_a_fresh_socket() {
    let io = recovering_server();
    let addr = serve(&io).await;
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    let offset = event_args(&ws_recv_app_text(&mut ws).await)[3].clone();
    drop(ws);
    until_no_socket(&io).await;
    // The outbound queue holds 1024 packets.
    for i in 0..1024 {
        io.to("news").emit("news", &i).unwrap();
    }
    let (mut ws, new_sid, _) =
        connect_with_auth(addr, &json!({"pid": pid, "offset": offset})).await;
    assert_ne!(new_sid, sid, "connected afresh");
    assert_eq!(event_args(&ws_recv_app_text(&mut ws).await)[1], false);
}

#[test]
fn a_room_listener_that_broadcasts_does_not_hold_up_a_recovering_socket() {
    // On a thread and runtime of its own, watched from here: should the recovering CONNECT
    // wait for ever, a runtime could not even be shut down, and the test would hang.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(rejoined_rooms_are_announced_after_recovery());
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the recovering socket never got its CONNECT answer and events")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the scenario failed: see its panic above")
        }
    }
}

async fn rejoined_rooms_are_announced_after_recovery() {
    let io = recovering_server();
    let announcer = io.clone();
    assert!(io.of("/").on_room_event(move |event| {
        if let RoomEvent::Joined { room, .. } = event {
            let _ = announcer.to(room).emit("joined", room);
        }
    }));
    let addr = serve(&io).await;
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({})).await;
    let joined = event_args(&ws_recv_app_text(&mut ws).await);
    assert_eq!(joined[..2], [json!("joined"), json!("news")]);
    let hello = event_args(&ws_recv_app_text(&mut ws).await);
    let offset = hello.last().and_then(Value::as_str).expect("an offset");

    drop(ws);
    until_no_socket(&io).await;
    // Rejoining `news` tells the listener, which broadcasts to `news`.
    let auth = json!({"pid": pid, "offset": offset});
    let (mut ws, back_sid, _) = connect_with_auth(addr, &auth).await;
    assert_eq!(back_sid, sid);
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(event_args(&ws_recv_app_text(&mut ws).await)[0].clone());
    }
    names.sort_by_key(|n| n.to_string());
    assert_eq!(names, [json!("hello"), json!("joined")]);
    // The namespace still delivers.
    io.to("news").emit("news", "live").unwrap();
    assert_eq!(event_args(&ws_recv_app_text(&mut ws).await)[0], "news");
}

#[tokio::test]
async fn a_disconnect_handler_that_panics_does_not_keep_the_socket() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.join("r");
        socket.on_disconnecting(|_, _| panic!("a program's mistake, while leaving"));
        socket.on_disconnect(|_, _| panic!("a program's mistake, once gone"));
    });
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/").await;
    assert!(reply.starts_with("40{"), "{reply}");
    ws_send(&mut ws, "41").await;
    until_no_socket(&io).await;
    assert_eq!(
        io.of("/").adapter().room_count(),
        0,
        "its room went with it"
    );
    // The connection itself goes on: another namespace CONNECT on it is answered.
    ws_send(&mut ws, "40").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
    // And closing it ends the socket all the same.
    drop(ws);
    until_no_socket(&io).await;
    assert_eq!(io.of("/").adapter().room_count(), 0);
}

#[tokio::test]
async fn rooms_joined_by_a_refusing_middleware_are_left() {
    let io = SocketIo::builder().build();
    io.of("/").use_middleware(|socket| async move {
        socket.join("lobby");
        Err(ConnectError::new("not today"))
    });
    let addr = serve(&io).await;
    for _ in 0..3 {
        let (_ws, reply) = connect(addr, "/").await;
        assert_eq!(reply, r#"44{"message":"not today"}"#);
    }
    assert_eq!(io.of("/").adapter().room_count(), 0);
}

#[tokio::test]
async fn a_middleware_that_panics_refuses_the_socket_and_leaves_its_rooms() {
    let io = SocketIo::builder().build();
    io.of("/").use_middleware(|socket| async move {
        socket.join("lobby");
        panic!("a bug in the application");
    });
    io.of("/late").use_middleware(|socket| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        socket.join("lobby");
        panic!("a bug after a wait");
    });
    io.of("/fine");
    let addr = serve(&io).await;
    for _ in 0..3 {
        let (_ws, reply) = connect(addr, "/").await;
        assert_eq!(reply, r#"44{"message":"Internal server error"}"#);
    }
    let (mut ws, reply) = connect(addr, "/late").await;
    assert_eq!(reply, r#"44/late,{"message":"Internal server error"}"#);
    assert_eq!(io.of("/").adapter().room_count(), 0);
    assert_eq!(io.of("/late").adapter().room_count(), 0);
    // The connection goes on.
    ws_send(&mut ws, "40/fine,").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40/fine,{"));
}

#[tokio::test]
async fn a_middleware_can_emit_ahead_of_the_connect_answer() {
    let io = SocketIo::builder().build();
    io.of("/").use_middleware(|socket| async move {
        assert!(!socket.connected(), "not connected while middleware runs");
        socket
            .emit("welcome", "hi")
            .expect("sent from a middleware");
        Ok(())
    });
    io.of("/").on_connect(|socket| {
        socket.emit("ready", &()).unwrap();
    });
    io.of("/strict").use_middleware(|socket| async move {
        socket
            .emit("why", "no token")
            .expect("sent from a refusing middleware");
        Err(ConnectError::new("not today"))
    });
    let addr = serve(&io).await;

    // The client holds an event that comes before the CONNECT answer until it is connected.
    let (mut ws, first) = connect(addr, "/").await;
    assert_eq!(first, r#"42["welcome","hi"]"#);
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["ready"]"#);

    let (mut ws, first) = connect(addr, "/strict").await;
    assert_eq!(first, r#"42/strict,["why","no token"]"#);
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"44/strict,{"message":"not today"}"#
    );
}

/// A server whose connection handler is slow (300 ms), on a worker thread of its own: a
/// middleware that waits moves the rest of the connect to a task of its own, and the handler
/// blocks in place, so that the client's packets and other tasks run meanwhile. Then it
/// registers a `bye` handler and a disconnect handler, which report to `heard` ("bye", and the
/// reason); `started` hears of each handler's start.
fn slow_setup_server() -> (
    SocketIo,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let io = SocketIo::builder().build();
    io.of("/").use_middleware(|_socket| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    });
    let (started_tx, started) = tokio::sync::mpsc::unbounded_channel();
    let (tx, heard) = tokio::sync::mpsc::unbounded_channel();
    io.of("/").on_connect(move |socket| {
        let _ = started_tx.send(());
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(300)));
        let tx2 = tx.clone();
        socket.on("bye", move |_socket, _: Value, _ack| {
            let tx = tx2.clone();
            async move {
                let _ = tx.send("bye".to_owned());
            }
        });
        let tx = tx.clone();
        socket.on_disconnect(move |_, reason| {
            let _ = tx.send(reason.to_string());
        });
    });
    (io, started, heard)
}

async fn next_heard(heard: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("heard in time")
        .expect("the server is up")
}

// Two worker threads: the connection handler runs on one while the client's packets are
// read on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_its_connection_handler_runs_is_seen_leave_after_it() {
    let (io, _started, mut heard) = slow_setup_server();
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/").await;
    assert!(reply.starts_with("40{"), "{reply}");
    ws_send(&mut ws, r#"42["bye"]"#).await;
    // socket.io-client's `disconnect(); connect()`: the namespace is free to join again.
    ws_send(&mut ws, "41").await;
    ws_send(&mut ws, "40").await;
    assert_eq!(next_heard(&mut heard).await, "bye");
    assert_eq!(next_heard(&mut heard).await, "client namespace disconnect");
    let again = ws_recv_app_text(&mut ws).await;
    assert!(again.starts_with("40{") && again != reply, "{again}");
    assert_eq!(io.of("/").socket_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_the_server_disconnects_while_its_connection_handler_runs_leaves_after_it() {
    let (io, mut started, mut heard) = slow_setup_server();
    let addr = serve(&io).await;
    let (mut ws, reply) = connect(addr, "/").await;
    assert!(reply.starts_with("40{"), "{reply}");
    started.recv().await.unwrap();
    // An administrator's "disconnect everyone", from another task, twice.
    io.of("/").broadcast().disconnect();
    io.of("/").broadcast().disconnect();
    assert_eq!(ws_recv_app_text(&mut ws).await, "41");
    // The client joins again at once: nothing meant for its old socket reaches the new one.
    ws_send(&mut ws, "40").await;
    let again = ws_recv_app_text(&mut ws).await;
    assert!(again.starts_with("40{") && again != reply, "{again}");
    assert_eq!(next_heard(&mut heard).await, "server namespace disconnect");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(io.of("/").socket_count(), 1, "the new socket stays");
}

#[tokio::test]
async fn reserved_event_names_are_not_sent() {
    let io = SocketIo::builder().build();
    let (tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    let server = io.clone();
    io.of("/").on_connect(move |socket| {
        let mut got = Vec::new();
        for name in ["connect", "connect_error", "disconnect", "disconnecting"] {
            got.push(socket.emit(name, "x").map_err(|e| e.to_string()));
            got.push(
                server
                    .emit(name, "x")
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        }
        got.push(
            socket
                .emit_raw("disconnect", vec![], vec![])
                .map_err(|e| e.to_string()),
        );
        got.push(socket.emit("fine", "x").map_err(|e| e.to_string()));
        let _ = tx.send(got);
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    let got = results.recv().await.unwrap();
    let (refused, sent) = got.split_at(got.len() - 1);
    for r in refused {
        let e = r.as_ref().expect_err("refused");
        assert!(e.ends_with("is a reserved event name"), "{e}");
    }
    assert_eq!(sent, [Ok(())]);
    // Only the one allowed event reached the client.
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["fine","x"]"#);
}

#[tokio::test]
async fn closing_the_connection_through_a_socket_that_left_ends_nothing() {
    let io = SocketIo::builder().build();
    let (tx, mut admin_sockets) = tokio::sync::mpsc::unbounded_channel();
    io.of("/admin").on_connect(move |socket| {
        let _ = tx.send(socket);
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    ws_send(&mut ws, "40/admin,").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40/admin,"));
    let admin: Arc<Socket> = admin_sockets.recv().await.unwrap();
    ws_send(&mut ws, "41/admin,").await;
    while admin.connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    admin.disconnect_and_close();
    // The main namespace's socket and the connection go on.
    io.of("/").emit("still", &()).unwrap();
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["still"]"#);
    assert_eq!(io.of("/").socket_count(), 1);
}

/// Reports the reason each socket of the main namespace leaves with; `setup` runs on each
/// socket as it connects.
fn report_disconnects(
    io: &SocketIo,
    setup: impl Fn(&Arc<Socket>) + Send + Sync + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<DisconnectReason> {
    let (tx, reasons) = tokio::sync::mpsc::unbounded_channel();
    io.of("/").on_connect(move |socket| {
        setup(&socket);
        let tx = tx.clone();
        socket.on_disconnect(move |_, reason| {
            let _ = tx.send(reason);
        });
    });
    reasons
}

async fn next_reason(
    reasons: &mut tokio::sync::mpsc::UnboundedReceiver<DisconnectReason>,
) -> DisconnectReason {
    tokio::time::timeout(Duration::from_secs(5), reasons.recv())
        .await
        .expect("a disconnect")
        .expect("the server is up")
}

#[tokio::test]
async fn sockets_closed_under_a_client_that_breaks_the_protocol_say_why_as_node_does() {
    let io = SocketIo::builder().build();
    let mut reasons = report_disconnects(&io, |socket| {
        socket.on("close me", |socket, (): (), _ack| async move {
            socket.close_connection();
        });
    });
    let addr = serve(&io).await;
    let sends = [
        // Not a Socket.IO packet.
        r#"42["x""#,
        // A packet for a namespace the client has not joined.
        r#"42/nope,["x"]"#,
        // The program closes the connection.
        r#"42["close me"]"#,
        // Not an Engine.IO packet.
        "9",
    ];
    let expected = [
        ("forced close", true),
        ("forced close", true),
        ("forced close", true),
        ("parse error", false),
    ];
    for (text, want) in sends.into_iter().zip(expected) {
        let (mut ws, reply) = connect(addr, "/").await;
        assert!(reply.starts_with("40{"), "{reply}");
        ws_send(&mut ws, text).await;
        let got = next_reason(&mut reasons).await;
        assert_eq!((got.as_str(), got.is_recoverable()), want, "after {text}");
    }
}

#[tokio::test]
async fn a_websocket_lost_without_a_close_frame_is_a_closed_transport() {
    let io = SocketIo::builder().build();
    let mut reasons = report_disconnects(&io, |_| {});
    let addr = serve(&io).await;
    let mut next_reason = async || next_reason(&mut reasons).await.to_string();
    let connected = async || {
        let (mut ws, _) = RawWs::open_engine(addr, "/socket.io/").await;
        ws.send_text("40").await.unwrap();
        let reply = ws.read_frame().await.expect("the CONNECT answer");
        assert!(reply.text().starts_with("40{"), "{}", reply.text());
        ws
    };

    // The TCP connection ends without a close frame: a closed tab, a lost network.
    drop(connected().await);
    assert_eq!(next_reason().await, "transport close");
    // A close frame.
    let mut ws = connected().await;
    ws.send(op::FIN | op::CLOSE, &1000u16.to_be_bytes())
        .await
        .unwrap();
    assert_eq!(next_reason().await, "transport close");
    // A frame that breaks the protocol (unmasked, from a client).
    let mut ws = connected().await;
    ws.send_raw(&[op::FIN | op::TEXT, 1, b'x']).await.unwrap();
    assert_eq!(next_reason().await, "transport error");
}

#[tokio::test]
async fn namespaces_made_on_demand_stop_at_the_servers_limit() {
    // `/` and two more.
    let io = SocketIo::builder().max_namespaces(3).build();
    io.dynamic_namespace(|name| name.starts_with("/room-"), |_ns| {});
    let addr = serve(&io).await;
    let (a, reply) = connect(addr, "/room-a").await;
    assert!(reply.starts_with("40/room-a,{"), "{reply}");
    let (_b, reply) = connect(addr, "/room-b").await;
    assert!(reply.starts_with("40/room-b,{"), "{reply}");
    let (_c, reply) = connect(addr, "/room-c").await;
    assert_eq!(reply, r#"44/room-c,{"message":"Invalid namespace"}"#);
    // The namespaces that exist still take sockets.
    let (_b2, reply) = connect(addr, "/room-b").await;
    assert!(reply.starts_with("40/room-b,{"), "{reply}");
    drop(a);
    assert!(namespace_becomes(&io, "/room-a", false).await);
    // Once one has gone, there is room for another.
    let mut reply = String::new();
    for _ in 0..50 {
        let (_c, answer) = connect(addr, "/room-c").await;
        reply = answer;
        if reply.starts_with("40/room-c,{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reply.starts_with("40/room-c,{"), "{reply}");
    // The program's own are never refused.
    assert_eq!(io.of("/room-d").name(), "/room-d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_as_soon_as_the_client_is_connected_waits_for_its_handler() {
    let io = SocketIo::builder().build();
    let ns = io.of("/");
    // Middleware that waits: the rest of the connect runs on a task of its own.
    ns.use_middleware(|_socket| async {
        tokio::task::yield_now().await;
        Ok(())
    });
    ns.on_connect(|socket| {
        // A connection handler that wakes another task (as one that tells a room does), which
        // leaves the connection's own task free to run on the other thread, and is then
        // slower than the client.
        tokio::spawn(async {});
        std::thread::sleep(Duration::from_millis(200));
        socket.on("echo", |_socket, text: String, ack| async move {
            let _ = ack.send(&text);
        });
    });
    let addr = serve(&io).await;
    let (mut ws, _) = RawWs::open_engine(addr, "/socket.io/").await;
    ws.send_text("40").await.unwrap();
    let reply = ws.read_frame().await.expect("the CONNECT answer");
    assert!(reply.text().starts_with("40{"), "{}", reply.text());
    for n in 1..=3 {
        ws.send_text(&format!(r#"42{n}["echo","{n}"]"#))
            .await
            .unwrap();
    }
    for n in 1..=3 {
        let ack = ws.read_frame().await.expect("an ack");
        assert_eq!(ack.text(), format!(r#"43{n}["{n}"]"#));
    }
}

#[tokio::test]
async fn a_broadcast_with_acks_has_a_reply_for_every_recipient_even_one_it_could_not_ask() {
    // No socket may owe an acknowledgement: asking any of them fails at once.
    let io = SocketIo::builder().max_pending_acks(0).build();
    let addr = serve(&io).await;
    let (_a, _) = connect(addr, "/").await;
    let (_b, _) = connect(addr, "/").await;
    let replies = io
        .broadcast()
        .timeout(Duration::from_millis(200))
        .emit_with_ack::<_, Value>("question", &())
        .await
        .unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, Err(AckError::Emit(EmitError::TooManyPendingAcks)))),
        "{replies:?}"
    );
}

#[tokio::test]
async fn the_namespace_lists_its_rooms_and_acts_on_all_its_sockets() {
    let io = SocketIo::builder().build();
    io.of("/").on_connect(|socket| {
        socket.join("a");
        socket.join("b");
        socket.on("x", |_socket, _: Value, ack| async move {
            let _ = ack.send(&"x");
        });
        assert!(socket.off("x"), "it had a handler");
        assert!(!socket.off("x"));
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    let mut rooms = io.of("/").rooms();
    rooms.sort();
    assert_eq!(rooms, ["a", "b"]);
    // An event whose handler was taken off is dropped: no answer.
    ws_send(&mut ws, r#"421["x"]"#).await;
    let answer = tokio::time::timeout(Duration::from_millis(300), ws_recv_app_text(&mut ws)).await;
    assert!(answer.is_err(), "{answer:?}");
    assert_eq!(io.broadcast().fetch_sockets().await.unwrap().len(), 1);
    io.broadcast().leave("a");
    assert_eq!(io.of("/").rooms(), ["b"]);
    io.broadcast().disconnect();
    assert_eq!(ws_recv_app_text(&mut ws).await, "41");
}

#[tokio::test]
async fn a_closed_server_opens_no_more_sessions() {
    let io = SocketIo::builder().build();
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    assert!(io.close_within(Duration::from_secs(2)).await);
    assert_eq!(io.of("/").socket_count(), 0);
    ws_expect_end_answering_pings(&mut ws, Duration::from_secs(1)).await;
    let refused = common::client::get(addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(refused.status, 503);
}

/// Serves `io` on a listener of its own until the sender is used (or dropped); the address,
/// the sender and the serving task.
async fn serve_until_stopped(
    io: &SocketIo,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let io = io.clone();
    let serving = tokio::spawn(async move {
        io.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop, serving)
}

#[tokio::test]
async fn stopping_serve_disconnects_every_client_before_it_returns() {
    let io = SocketIo::builder().build();
    let mut reasons = report_disconnects(&io, |_| {});
    let (addr, stop, serving) = serve_until_stopped(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    let polling = common::client::Polling::open(addr, "/socket.io/").await;
    polling.post_ok(b"40").await;
    assert!(polling.get_packets().await[0].starts_with("40"));
    let pending = polling.pending_get().await;
    // One between two polls: its next one could not reach a server that stopped listening,
    // so it is not waited for.
    let between = common::client::Polling::open(addr, "/socket.io/").await;
    between.post_ok(b"40").await;
    assert!(between.get_packets().await[0].starts_with("40"));
    assert_eq!(io.of("/").socket_count(), 3);

    stop.send(()).expect("still serving");
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("serve returns without waiting out its 5 s grace")
        .expect("serve did not panic");
    // Every socket had left, its handlers run, by the time serve returned.
    assert_eq!(io.of("/").socket_count(), 0);
    for _ in 0..3 {
        let reason = reasons.try_recv().expect("a disconnect handler ran");
        assert_eq!(reason, DisconnectReason::ServerShuttingDown);
    }
    ws_expect_end_answering_pings(&mut ws, Duration::from_secs(1)).await;
    let last = pending.await.expect("the pending poll");
    assert_eq!(last.status, 200);
    assert_eq!(last.packets(), vec!["1"]);
}

#[tokio::test]
async fn a_server_served_on_two_listeners_closes_with_the_last() {
    let io = SocketIo::builder().build();
    let mut reasons = report_disconnects(&io, |_| {});
    let mut stops = Vec::new();
    let mut servings = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let (addr, stop, serving) = serve_until_stopped(&io).await;
        addrs.push(addr);
        stops.push(stop);
        servings.push(serving);
    }
    let (mut on_second, _) = connect(addrs[1], "/").await;
    stops.remove(0).send(()).expect("still serving");
    tokio::time::timeout(Duration::from_secs(3), servings.remove(0))
        .await
        .expect("the first serve returns")
        .expect("no panic");
    // The other listener's clients stay, and new ones are taken.
    let opened = common::client::get(addrs[1], "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(opened.status, 200);
    ws_send(&mut on_second, r#"42["still here"]"#).await;
    assert!(reasons.try_recv().is_err());
    assert_eq!(io.of("/").socket_count(), 1);

    stops.remove(0).send(()).expect("still serving");
    tokio::time::timeout(Duration::from_secs(3), servings.remove(0))
        .await
        .expect("the last serve returns")
        .expect("no panic");
    assert_eq!(
        reasons.try_recv().expect("it left"),
        DisconnectReason::ServerShuttingDown
    );
}

#[tokio::test]
async fn serves_raced_in_a_select_close_the_server_when_they_stop() {
    let io = SocketIo::builder().build();
    let mut reasons = report_disconnects(&io, |_| {});
    let first = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let second = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = second.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let serving = tokio::spawn({
        let io = io.clone();
        async move {
            // The first to return ends the select; the other is dropped, not stopped.
            tokio::select! {
                _ = io.serve(first, signal()) => {}
                _ = io.serve(second, signal()) => {}
            }
        }
    });
    let (_ws, _) = connect(addr, "/").await;
    stop.send(true).expect("still serving");
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("the select ends")
        .expect("no panic");
    let reason = tokio::time::timeout(Duration::from_secs(3), reasons.recv())
        .await
        .expect("the socket leaves")
        .expect("a reason");
    assert_eq!(reason, DisconnectReason::ServerShuttingDown);
}

#[tokio::test]
async fn a_sockets_rooms_are_listed_in_the_order_it_joined_them() {
    let io = SocketIo::builder().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Socket>>();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    io.of("/").on_connect(move |socket| {
        for room in ["b", "a", "c", "a"] {
            socket.join(room);
        }
        let seen_tx = seen_tx.clone();
        socket.on_disconnecting(move |socket, _| {
            let _ = seen_tx.send(socket.rooms());
        });
        let _ = tx.send(socket);
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    let socket = rx.recv().await.expect("the socket");
    let id = socket.id().to_string();
    assert_eq!(socket.rooms(), [id.as_str(), "b", "a", "c"]);
    socket.leave("a");
    assert_eq!(socket.rooms(), [id.as_str(), "b", "c"]);
    // While it leaves its rooms are still there; once it has left, none (as Node lists them).
    ws_send(&mut ws, "41").await;
    let leaving = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the disconnecting handler ran")
        .expect("a list");
    assert_eq!(leaving, [id.as_str(), "b", "c"]);
    until_no_socket(&io).await;
    assert!(socket.rooms().is_empty(), "{:?}", socket.rooms());
}

#[tokio::test]
async fn a_volatile_emit_to_one_client_is_dropped_while_it_is_behind() {
    let io = SocketIo::builder().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Socket>>();
    io.of("/").on_connect(move |socket| {
        let _ = tx.send(socket);
    });
    let addr = serve(&io).await;
    let (mut ws, _) = connect(addr, "/").await;
    let socket = rx.recv().await.expect("the socket");
    socket.emit_volatile("where", &1).unwrap();
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["where",1]"#);
    // A burst the connection's task has not written yet: the client is behind.
    for n in 0..100 {
        socket.emit("news", &n).unwrap();
    }
    assert!(matches!(
        socket.emit_volatile("where", &2),
        Err(EmitError::Send(_))
    ));
    for n in 0..100 {
        assert_eq!(
            ws_recv_app_text(&mut ws).await,
            format!(r#"42["news",{n}]"#)
        );
    }
    socket.emit_volatile("where", &3).unwrap();
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["where",3]"#);
}

/// Emits work from any thread, runtime or not; a server-side event on a single node too.
#[test]
fn a_server_side_event_may_be_sent_from_a_thread_without_a_runtime() {
    let io = SocketIo::builder().build();
    let ns = io.of("/");
    std::thread::spawn(move || {
        ns.server_side_emit("tick", vec![json!(1)]);
        assert_eq!(ns.emit("tick", &1).expect("an emit"), 0);
    })
    .join()
    .expect("no panic outside a runtime");
}

#[tokio::test]
async fn a_middleware_hands_typed_values_to_the_handlers() {
    #[derive(Clone, Debug, PartialEq)]
    struct User {
        name: String,
    }
    let io = SocketIo::builder().build();
    io.of("/").use_middleware(|socket| async move {
        let name = socket.auth()["name"].as_str().unwrap_or("anon").to_owned();
        assert!(socket.insert_extension(User { name }).is_none());
        Ok(())
    });
    io.of("/").on_connect(|socket| {
        socket.on("whoami", |socket, (): (), ack| async move {
            let user = socket.extension::<User>().expect("set by the middleware");
            let _ = ack.send(&user.name);
        });
        socket.on("forget", |socket, (): (), ack| async move {
            let gone = socket.remove_extension::<User>();
            let _ = ack.send(&(gone.is_some(), socket.extension::<User>().is_none()));
        });
    });
    let addr = serve(&io).await;
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut ws, r#"40{"name":"ann"}"#).await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40"));
    ws_send(&mut ws, r#"421["whoami"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"431["ann"]"#);
    ws_send(&mut ws, r#"422["forget"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "432[true,true]");
    // Each socket has its own.
    let (mut other, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut other, r#"40{"name":"bob"}"#).await;
    assert!(ws_recv_app_text(&mut other).await.starts_with("40"));
    ws_send(&mut other, r#"421["whoami"]"#).await;
    assert_eq!(ws_recv_app_text(&mut other).await, r#"431["bob"]"#);
}

#[tokio::test]
async fn a_recovered_socket_keeps_the_typed_values_its_middleware_set() {
    #[derive(Clone)]
    struct Token(String);
    let io = recovering_server();
    io.of("/").use_middleware(|socket| async move {
        let token = socket.auth()["token"].as_str().unwrap_or("").to_owned();
        socket.insert_extension(Token(token));
        Ok(())
    });
    let addr = serve(&io).await;
    let (mut ws, sid, pid) = connect_with_auth(addr, &json!({"token": "first"})).await;
    let offset = event_args(&ws_recv_app_text(&mut ws).await)[3].clone();
    drop(ws);
    until_no_socket(&io).await;
    // The middleware does not run for a recovered socket: what it set comes back with it.
    let (_ws, back_sid, _) = connect_with_auth(
        addr,
        &json!({"pid": pid, "offset": offset, "token": "second"}),
    )
    .await;
    assert_eq!(back_sid, sid);
    let socket = io.of("/").sockets().pop().expect("the socket");
    assert!(socket.recovered());
    assert_eq!(
        socket.extension::<Token>().map(|t| t.0).as_deref(),
        Some("first")
    );
}
