//! Several of our nodes as one cluster through a real Redis (`redis-server`, started by each
//! test on a free port): broadcasts with rooms, exceptions and binary, acknowledgements of
//! broadcasts, fetching, joining, leaving and disconnecting sockets on other nodes,
//! server-side events with answers, a node that leaves, Redis restarted mid-test, and the chat's
//! login window while the cluster checks a name.
//! Clients are raw WebSockets on each node; every delivery is checked on the wire.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::client::{Ws, ws_open, ws_recv_app, ws_recv_app_text, ws_send};
use futures_util::StreamExt;
use serde_json::{Value, json};
use socketio_server::redis::{AddressError, RedisConfig, RedisError, RedisNode};
use socketio_server::socketio::{Socket, SocketIo};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A loopback port nobody listens on (for now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A throwaway `redis-server` on a free port.
struct Redis {
    port: u16,
    /// Extra `redis-server` arguments (`--requirepass`, ...).
    args: Vec<String>,
    /// Whether `port` speaks TLS (and only TLS).
    tls: bool,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Redis {
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Redis {
            port,
            child: Redis::spawn(port, &args),
            args,
            tls: false,
        }
    }

    /// A Redis that speaks only TLS, with the certificate and key of `certs`; with
    /// `client_certs`, it asks clients for a certificate signed by `certs.ca`.
    #[cfg(feature = "redis-tls")]
    fn start_tls(certs: &TestCerts, client_certs: bool) -> Redis {
        let port = free_port();
        let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 path").to_owned();
        let args = vec![
            // The later `--port` wins: no plain port, TLS on this one.
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path(&certs.server_cert),
            "--tls-key-file".to_owned(),
            path(&certs.server_key),
            "--tls-ca-cert-file".to_owned(),
            path(&certs.ca),
            "--tls-auth-clients".to_owned(),
            if client_certs { "yes" } else { "no" }.to_owned(),
        ];
        Redis {
            port,
            child: Redis::spawn(port, &args),
            args,
            tls: true,
        }
    }

    fn spawn(port: u16, args: &[String]) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        self.child = Redis::spawn(self.port, &self.args);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One of our nodes: the server, its Redis link, its address, and the server-side events it
/// received.
struct Node {
    io: SocketIo,
    redis: RedisNode,
    addr: SocketAddr,
    server_events: mpsc::UnboundedReceiver<Vec<Value>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    async fn start(redis: &Redis, name: &str) -> Node {
        Node::start_with(redis, name, RedisConfig::default()).await
    }

    async fn start_with(redis: &Redis, name: &str, config: RedisConfig) -> Node {
        let link = RedisNode::connect(&redis.url(), config)
            .await
            .expect("connect to redis");
        let io = SocketIo::builder()
            .adapter(link.adapter_factory())
            .ack_timeout(Duration::from_secs(3))
            .build();
        let ns = io.of("/");
        let name = name.to_owned();
        let node_name = name.clone();
        ns.on_connect(move |socket: Arc<Socket>| {
            if let Some(room) = socket.auth().get("room").and_then(Value::as_str) {
                socket.join(room);
            }
            socket.set_data(json!({ "node": node_name }));
        });
        let (tx, server_events) = mpsc::unbounded_channel();
        let me = name.clone();
        ns.on_server_event("hello", move |args, ack| {
            let _ = tx.send(args.clone());
            ack.send(json!({ "from": me, "got": args }));
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = io.clone();
        tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Node {
            io,
            redis: link,
            addr,
            server_events,
            stop: Some(stop),
        }
    }

    /// Stops serving and leaves the cluster.
    fn leave(&mut self) {
        self.io.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.redis.shutdown();
    }
}

/// Waits until `nodes` nodes serve the main namespace, as Redis counts them.
async fn wait_for_cluster(node: &Node, nodes: usize) {
    wait_for_nodes(&node.io, nodes).await;
}

async fn cluster(redis: &Redis, n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(redis, &format!("node{i}")).await);
    }
    wait_for_cluster(&nodes[0], n).await;
    nodes
}

/// A client on one node, in the main namespace.
struct Client {
    ws: Ws,
    id: String,
}

impl Client {
    async fn connect(node: &Node, room: Option<&str>) -> Client {
        let (mut ws, _) = ws_open(node.addr, "/socket.io/").await;
        match room {
            Some(room) => ws_send(&mut ws, &format!("40{}", json!({ "room": room }))).await,
            None => ws_send(&mut ws, "40").await,
        }
        let reply = ws_recv_app_text(&mut ws).await;
        let body: Value = serde_json::from_str(&reply[2..]).expect("CONNECT reply");
        let id = body["sid"].as_str().expect("socket id").to_owned();
        Client { ws, id }
    }

    /// The next Socket.IO packet (text without the engine's `4`) with its attachments.
    async fn next(&mut self) -> (String, Vec<Vec<u8>>) {
        let text = ws_recv_app_text(&mut self.ws).await;
        let packet = text[1..].to_owned();
        let mut attachments = Vec::new();
        if packet.starts_with('5') || packet.starts_with('6') {
            let count: usize = packet[1..packet.find('-').expect("attachment count")]
                .parse()
                .expect("a count");
            for _ in 0..count {
                match ws_recv_app(&mut self.ws).await {
                    Message::Binary(b) => attachments.push(b.to_vec()),
                    other => panic!("expected an attachment, got {other:?}"),
                }
            }
        }
        (packet, attachments)
    }

    /// Asserts that no packet arrives for a while (pings are answered).
    async fn expect_silence(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    ws_send(&mut self.ws, "3").await
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected nothing, got {other:?}"),
            }
        }
    }

    /// Reads an event that asks for an acknowledgement and answers it with `answer`.
    async fn answer_ack(&mut self, answer: Value) {
        let (packet, _) = self.next().await;
        assert!(packet.starts_with('2'), "expected an event, got {packet}");
        let id: String = packet[1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(!id.is_empty(), "the event asks for no ack: {packet}");
        ws_send(&mut self.ws, &format!("43{id}{}", json!([answer]))).await;
    }
}

fn ids(sockets: &[socketio_server::socketio::SocketInfo]) -> Vec<String> {
    let mut ids: Vec<String> = sockets.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn broadcasts_reach_every_node_with_rooms_exceptions_and_binary() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3).await;
    let (tx, mut room_events) = mpsc::unbounded_channel();
    assert!(nodes[0].io.of("/").on_room_event(move |e| {
        let _ = tx.send(e.clone());
    }));
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    assert_eq!(
        room_events.recv().await,
        Some(socketio_server::socketio::RoomEvent::Created("r".into())),
        "the Redis adapter reports its node's room events"
    );
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    let mut c = Client::connect(&nodes[2], Some("r")).await;
    let mut outsider = Client::connect(&nodes[1], None).await;

    // To a room, from the first node: every member on every node, nobody else.
    nodes[0].io.to("r").emit("m", &json!({"n": 1})).unwrap();
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.next().await.0, r#"2["m",{"n":1}]"#);
    }
    outsider.expect_silence(Duration::from_millis(300)).await;

    // With an exception that lives on another node.
    nodes[2]
        .io
        .to("r")
        .except(&b.id)
        .emit("m", &json!({"n": 2}))
        .unwrap();
    assert_eq!(a.next().await.0, r#"2["m",{"n":2}]"#);
    assert_eq!(c.next().await.0, r#"2["m",{"n":2}]"#);
    b.expect_silence(Duration::from_millis(300)).await;

    // Binary arguments cross as binary.
    nodes[1]
        .io
        .to("r")
        .emit("bin", &(Bytes::from_static(b"\x01\x02\x03"), "tail"))
        .unwrap();
    for client in [&mut a, &mut b, &mut c] {
        let (packet, attachments) = client.next().await;
        assert_eq!(packet, r#"51-["bin",{"_placeholder":true,"num":0},"tail"]"#);
        assert_eq!(attachments, vec![vec![1, 2, 3]]);
    }

    // The whole namespace, and a socket's own room on another node.
    nodes[2].io.emit("all", &()).unwrap();
    for client in [&mut a, &mut b, &mut c, &mut outsider] {
        assert_eq!(client.next().await.0, r#"2["all"]"#);
    }
    nodes[0].io.to(&outsider.id).emit("you", &()).unwrap();
    assert_eq!(outsider.next().await.0, r#"2["you"]"#);
    a.expect_silence(Duration::from_millis(200)).await;

    // A room whose name has the shape of a socket id is still a room on every node.
    let named_like_an_id = "general-announcement";
    let mut d = Client::connect(&nodes[1], Some(named_like_an_id)).await;
    nodes[0].io.to(named_like_an_id).emit("news", &()).unwrap();
    assert_eq!(d.next().await.0, r#"2["news"]"#);
    outsider.expect_silence(Duration::from_millis(200)).await;

    // `local` stays on the node.
    nodes[0].io.to("r").local().emit("here", &()).unwrap();
    assert_eq!(a.next().await.0, r#"2["here"]"#);
    b.expect_silence(Duration::from_millis(300)).await;
    c.expect_silence(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn namespaces_whose_names_look_like_patterns_or_prefixes_get_their_own_broadcasts_once() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2).await;
    // Each name's channels are matched by a pattern of another's: `/room-*` by glob, and `/a`
    // as a prefix of `/a#b`'s.
    for name in ["/room-*", "/room-1", "/a", "/a#b"] {
        nodes[1].io.of(name);
    }
    wait_for_nodes(&nodes[0].io, 2).await;
    let addr = nodes[1].addr;
    let mut star = join_namespace(addr, "/room-*").await;
    let mut one = join_namespace(addr, "/room-1").await;
    let mut a = join_namespace(addr, "/a").await;
    let mut ab = join_namespace(addr, "/a#b").await;
    // Every namespace subscribed on the other node.
    for nsp in ["/room-*", "/room-1", "/a", "/a#b"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while nodes[0].io.of(nsp).server_count().await.ok() != Some(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{nsp} not subscribed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    nodes[0].io.of("/room-1").emit("m", "one").unwrap();
    nodes[0].io.of("/a#b").emit("m", "ab").unwrap();
    nodes[0]
        .io
        .of("/a")
        .to("b")
        .emit("m", "a to room b")
        .unwrap();
    assert_eq!(
        drain(&mut one, Duration::from_millis(500)).await,
        [r#"42/room-1,["m","one"]"#]
    );
    assert_eq!(
        drain(&mut ab, Duration::from_millis(300)).await,
        [r#"42/a#b,["m","ab"]"#]
    );
    assert!(
        drain(&mut star, Duration::from_millis(300))
            .await
            .is_empty()
    );
    // Nobody in `/a` is in room `b`.
    assert!(drain(&mut a, Duration::from_millis(300)).await.is_empty());
}

/// A client of namespace `nsp` on the node at `addr`.
async fn join_namespace(addr: SocketAddr, nsp: &str) -> Ws {
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut ws, &format!("40{nsp},")).await;
    let reply = ws_recv_app_text(&mut ws).await;
    assert!(reply.starts_with(&format!("40{nsp},")), "{reply}");
    ws
}

#[tokio::test]
async fn broadcast_acknowledgements_come_from_every_node() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3).await;
    let (tx, mut room_events) = mpsc::unbounded_channel();
    assert!(nodes[0].io.of("/").on_room_event(move |e| {
        let _ = tx.send(e.clone());
    }));
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    assert_eq!(
        room_events.recv().await,
        Some(socketio_server::socketio::RoomEvent::Created("r".into())),
        "the Redis adapter reports its node's room events"
    );
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    let mut c = Client::connect(&nodes[2], Some("r")).await;
    let _silent = Client::connect(&nodes[2], Some("r")).await;

    let op = nodes[0].io.to("r").timeout(Duration::from_millis(1500));
    let asked = tokio::spawn(async move { op.emit_with_ack::<_, Value>("q", &1).await });
    a.answer_ack(json!("a")).await;
    b.answer_ack(json!("b")).await;
    c.answer_ack(json!({"c": true})).await;
    let replies = asked.await.unwrap().unwrap();
    assert_eq!(replies.len(), 4, "{replies:?}");
    let mut answers: Vec<String> = replies
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(Value::to_string)
        .collect();
    answers.sort();
    assert_eq!(answers, vec![r#""a""#, r#""b""#, r#"{"c":true}"#]);
    let timeouts = replies.iter().filter(|r| r.is_err()).count();
    assert_eq!(timeouts, 1, "the silent client's reply is a timeout");
}

#[tokio::test]
async fn sockets_are_fetched_joined_left_and_disconnected_across_nodes() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3).await;
    let (tx, mut room_events) = mpsc::unbounded_channel();
    assert!(nodes[0].io.of("/").on_room_event(move |e| {
        let _ = tx.send(e.clone());
    }));
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    assert_eq!(
        room_events.recv().await,
        Some(socketio_server::socketio::RoomEvent::Created("r".into())),
        "the Redis adapter reports its node's room events"
    );
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    let mut c = Client::connect(&nodes[2], Some("r")).await;
    let other = Client::connect(&nodes[2], Some("other")).await;

    let fetched = nodes[1].io.to("r").fetch_sockets().await.unwrap();
    assert_eq!(
        ids(&fetched),
        sorted(vec![a.id.clone(), b.id.clone(), c.id.clone()])
    );
    let on_c = fetched.iter().find(|s| s.id == c.id).unwrap();
    assert_eq!(on_c.data, json!({"node": "node2"}));
    assert_eq!(
        sorted(on_c.rooms.clone()),
        sorted(vec![c.id.clone(), "r".into()])
    );
    assert_eq!(on_c.handshake["auth"], json!({"room": "r"}));
    // The handshake has every key of Node's.
    let mut keys: Vec<&str> = on_c
        .handshake
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "address", "auth", "headers", "issued", "query", "secure", "time", "url", "xdomain"
        ]
    );
    assert!(
        on_c.handshake["time"]
            .as_str()
            .unwrap()
            .ends_with(" GMT+0000 (Coordinated Universal Time)"),
        "{}",
        on_c.handshake["time"]
    );
    let everyone = nodes[0]
        .io
        .of("/")
        .to("r")
        .to("other")
        .fetch_sockets()
        .await
        .unwrap();
    assert_eq!(everyone.len(), 4);
    let without_b = nodes[0]
        .io
        .of("/")
        .except(&b.id)
        .fetch_sockets()
        .await
        .unwrap();
    assert_eq!(
        ids(&without_b),
        sorted(vec![a.id.clone(), c.id.clone(), other.id.clone()])
    );

    // Every member of `r`, on every node, joins `r2`; then the broadcast to `r2` reaches them.
    nodes[0].io.to("r").join("r2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r2 = nodes[2].io.to("r2").fetch_sockets().await.unwrap();
    assert_eq!(
        ids(&r2),
        sorted(vec![a.id.clone(), b.id.clone(), c.id.clone()])
    );
    nodes[2].io.to(&b.id).leave("r2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r2 = nodes[0].io.to("r2").fetch_sockets().await.unwrap();
    assert_eq!(ids(&r2), sorted(vec![a.id.clone(), c.id.clone()]));
    nodes[1].io.to("r2").emit("r2", &()).unwrap();
    assert_eq!(a.next().await.0, r#"2["r2"]"#);
    assert_eq!(c.next().await.0, r#"2["r2"]"#);
    b.expect_silence(Duration::from_millis(300)).await;

    // Disconnected from another node: the client gets DISCONNECT for its namespace.
    nodes[0].io.to(&c.id).disconnect();
    assert_eq!(c.next().await.0, "1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left = nodes[1].io.to("r").fetch_sockets().await.unwrap();
    assert_eq!(ids(&left), sorted(vec![a.id.clone(), b.id.clone()]));
}

#[tokio::test]
async fn server_side_events_and_their_answers_cross_nodes() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis, 3).await;
    let answers = nodes[0]
        .io
        .of("/")
        .server_side_emit_with_ack("hello", vec![json!("hi"), json!(2)])
        .await
        .unwrap();
    let mut from: Vec<String> = answers
        .iter()
        .map(|a| a["from"].as_str().unwrap().to_owned())
        .collect();
    from.sort();
    assert_eq!(from, vec!["node1", "node2"]);
    assert!(answers.iter().all(|a| a["got"] == json!(["hi", 2])));
    for node in &mut nodes[1..] {
        assert_eq!(
            node.server_events.recv().await.unwrap(),
            vec![json!("hi"), json!(2)]
        );
    }
    // Without an answer wanted, and never to the sender itself.
    nodes[2]
        .io
        .of("/")
        .server_side_emit("hello", vec![json!("fire")]);
    for i in [0, 1] {
        let got = tokio::time::timeout(Duration::from_secs(3), nodes[i].server_events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![json!("fire")]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(nodes[2].server_events.try_recv().is_err());
}

#[tokio::test]
async fn a_node_that_leaves_is_forgotten() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis, 3).await;
    let a = Client::connect(&nodes[0], Some("r")).await;
    let b = Client::connect(&nodes[1], Some("r")).await;
    let _c = Client::connect(&nodes[2], Some("r")).await;
    assert_eq!(nodes[0].io.to("r").fetch_sockets().await.unwrap().len(), 3);
    let mut all: Vec<String> = nodes.iter().map(|n| n.redis.uid().to_owned()).collect();
    all.sort();
    assert_eq!(nodes[1].io.of("/").node_ids().await.unwrap(), all);

    nodes[2].leave();
    wait_for_cluster(&nodes[0], 2).await;
    let gone = nodes[2].redis.uid().to_owned();
    all.retain(|uid| *uid != gone);
    assert_eq!(nodes[0].io.of("/").node_ids().await.unwrap(), all);
    let started = tokio::time::Instant::now();
    let fetched = nodes[0].io.to("r").fetch_sockets().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait for the gone node"
    );
    assert_eq!(ids(&fetched), sorted(vec![a.id.clone(), b.id.clone()]));
    let answers = nodes[1]
        .io
        .of("/")
        .server_side_emit_with_ack("hello", vec![])
        .await
        .unwrap();
    assert_eq!(answers.len(), 1);
}

#[tokio::test]
async fn redis_restart_is_survived() {
    let mut redis = Redis::start();
    // Publishes wait a second for Redis, then they are lost.
    let patient = RedisConfig {
        publish_patience: Duration::from_secs(1),
        ..RedisConfig::default()
    };
    let nodes = [
        Node::start_with(&redis, "node0", patient.clone()).await,
        Node::start_with(&redis, "node1", patient).await,
    ];
    wait_for_cluster(&nodes[0], 2).await;
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    nodes[0].io.to("r").emit("before", &()).unwrap();
    assert_eq!(a.next().await.0, r#"2["before"]"#);
    assert_eq!(b.next().await.0, r#"2["before"]"#);

    // Redis stays away for longer than publishes wait: local clients are still served, the
    // lost publishes are counted, and requests to other nodes fail instead of hanging.
    redis.stop();
    let failed_before = nodes[0]
        .redis
        .stats()
        .publish_failed
        .load(Ordering::Relaxed);
    for _ in 0..3 {
        nodes[0].io.to("r").emit("during", &()).unwrap();
        assert_eq!(a.next().await.0, r#"2["during"]"#);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes[0]
        .redis
        .stats()
        .publish_failed
        .load(Ordering::Relaxed)
        < failed_before + 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes during the outage are not counted as failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = tokio::time::Instant::now();
    assert!(nodes[0].io.to("r").fetch_sockets().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(6));
    b.expect_silence(Duration::from_millis(200)).await;

    // Redis comes back: both nodes reconnect and resubscribe by themselves.
    redis.restart();
    wait_for_cluster(&nodes[0], 2).await;
    wait_until("not resubscribed", || {
        nodes[0].redis.is_subscribed() && nodes[1].redis.is_subscribed()
    })
    .await;
    // The publisher reconnects on use; keep sending until the other node hears one.
    emit_until_heard(&nodes[0], "after", Some(&mut a), &mut b).await;
    assert!(nodes[1].redis.stats().reconnects.load(Ordering::Relaxed) >= 1);
    let fetched = nodes[1].io.to("r").fetch_sockets().await.unwrap();
    assert_eq!(ids(&fetched), sorted(vec![a.id.clone(), b.id.clone()]));
}

/// Publishes made while Redis is away for less than `publish_patience` (a restart, a failover)
/// reach the other nodes once it is back, in order, rather than being lost.
#[tokio::test]
async fn publishes_wait_out_a_short_redis_outage() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 2).await;
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    let failed = |node: &Node| node.redis.stats().publish_failed.load(Ordering::Relaxed);
    let failed_before = failed(&nodes[0]);
    redis.stop();
    for event in ["during 1", "during 2"] {
        nodes[0].io.to("r").emit(event, &()).unwrap();
        assert_eq!(a.next().await.0, format!(r#"2["{event}"]"#));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    wait_until("not resubscribed", || {
        nodes[0].redis.is_subscribed() && nodes[1].redis.is_subscribed()
    })
    .await;
    for event in ["during 1", "during 2"] {
        let got = tokio::time::timeout(Duration::from_secs(10), b.next()).await;
        assert_eq!(
            got.expect("held publishes arrive").0,
            format!(r#"2["{event}"]"#)
        );
    }
    assert_eq!(failed(&nodes[0]), failed_before);
}

/// A Redis that answers slowly (a long command, a fork) is waited for: publishes made
/// meanwhile reach the other nodes when it answers again.
#[tokio::test]
async fn publishes_wait_out_a_redis_that_answers_slowly() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"]);
    let nodes = cluster(&redis, 2).await;
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    let failed = |node: &Node| node.redis.stats().publish_failed.load(Ordering::Relaxed);
    let failed_before = failed(&nodes[0]);
    // Redis answers nothing for five seconds (longer than a question to it may take).
    let mut sleeper = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .expect("connect to redis");
    tokio::io::AsyncWriteExt::write_all(&mut sleeper, b"DEBUG SLEEP 5\r\n")
        .await
        .expect("send DEBUG SLEEP");
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes[0].io.to("r").emit("slow", &()).unwrap();
    assert_eq!(a.next().await.0, r#"2["slow"]"#);
    // A question meanwhile gives up after its own wait, not behind the publish.
    let started = tokio::time::Instant::now();
    assert!(nodes[0].io.to("r").fetch_sockets().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the question waited {:?}",
        started.elapsed()
    );
    let got = tokio::time::timeout(Duration::from_secs(10), b.next()).await;
    assert_eq!(got.expect("the publish arrives").0, r#"2["slow"]"#);
    assert_eq!(failed(&nodes[0]), failed_before);
}

/// Redis closing the node's idle command connection (a restart) is noticed before the
/// connection is used again: the first publish and the first question after it go through,
/// rather than being written into a connection Redis already left.
#[tokio::test]
async fn the_first_commands_after_a_redis_restart_go_through() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 2).await;
    let mut a = Client::connect(&nodes[0], Some("r")).await;
    let mut b = Client::connect(&nodes[1], Some("r")).await;
    redis.restart();
    // The subscribers find out by reading; nothing has used the command connections since.
    let reconnected = |node: &Node| node.redis.stats().reconnects.load(Ordering::Relaxed) > 0;
    wait_until("not resubscribed", || {
        reconnected(&nodes[0]) && reconnected(&nodes[1])
    })
    .await;
    let failed = |node: &Node| node.redis.stats().publish_failed.load(Ordering::Relaxed);
    let failed_before = failed(&nodes[0]);
    nodes[0].io.to("r").emit("after", &()).unwrap();
    assert_eq!(a.next().await.0, r#"2["after"]"#);
    assert_eq!(b.next().await.0, r#"2["after"]"#);
    assert_eq!(
        failed(&nodes[0]),
        failed_before,
        "the first publish was lost"
    );
    let fetched = nodes[1].io.to("r").fetch_sockets().await.unwrap();
    assert_eq!(ids(&fetched), sorted(vec![a.id.clone(), b.id.clone()]));
}

/// Something answering in Redis's place with a reply of a gigabyte: the question fails as
/// soon as the reply's length is read, without waiting for (or making room for) the bytes.
#[tokio::test]
async fn a_reply_too_large_for_the_command_connection_fails_the_question_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = fake.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = fake.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // The PING a connection starts with is answered as Redis would.
                if matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = conn.write_all(b"+PONG\r\n").await;
                }
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = conn.write_all(b"*2\r\n$999999999\r\nabc").await;
                }
            });
        }
    });
    let node = RedisNode::connect(&format!("redis://127.0.0.1:{port}"), RedisConfig::default())
        .await
        .expect("connect to the fake redis");
    let io = SocketIo::builder().adapter(node.adapter_factory()).build();
    let started = tokio::time::Instant::now();
    let err = io
        .of("/")
        .adapter()
        .server_count()
        .await
        .expect_err("a count out of a gigabyte reply");
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    node.shutdown();
}

/// Sends one command on a connection of the test's own, checks how its reply starts, and
/// returns the connection.
async fn redis_command(
    redis: &Redis,
    args: &[&[u8]],
    reply_starts: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .expect("connect to redis");
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    conn.write_all(&command).await.expect("send a command");
    let mut reply = [0u8; 64];
    let n = conn.read(&mut reply).await.expect("a reply");
    assert!(
        reply[..n].starts_with(reply_starts),
        "{} answered {:?}",
        String::from_utf8_lossy(args[0]),
        String::from_utf8_lossy(&reply[..n])
    );
    conn
}

/// Publishes `payload` on `channel` through a connection of the test's own.
async fn publish_raw(redis: &Redis, channel: &str, payload: &[u8]) {
    redis_command(redis, &[b"PUBLISH", channel.as_bytes(), payload], b":").await;
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Emits `event` to room `r` from `from` until `remote` (a client of another node) hears it;
/// `local`, a client of `from` in that room, hears every one.
async fn emit_until_heard(
    from: &Node,
    event: &str,
    mut local: Option<&mut Client>,
    remote: &mut Client,
) {
    let expected = format!(r#"2["{event}"]"#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        from.io.to("r").emit(event, &()).unwrap();
        if let Some(local) = local.as_deref_mut() {
            assert_eq!(local.next().await.0, expected);
        }
        match tokio::time::timeout(Duration::from_millis(300), remote.next()).await {
            Ok((packet, _)) => {
                assert_eq!(packet, expected);
                return;
            }
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "{event}: broadcasts do not cross nodes"
            ),
        }
    }
}

#[tokio::test]
async fn nodes_join_a_redis_that_requires_a_password_or_a_user() {
    let redis = Redis::start_with(&[
        "--requirepass",
        "s3cret",
        "--user",
        "node",
        "on",
        "allchannels",
        "+@all",
        ">n0de",
    ]);
    let connect = |url: String| async move {
        let link = RedisNode::connect(&url, RedisConfig::default())
            .await
            .expect("connect to redis");
        let io = SocketIo::builder().adapter(link.adapter_factory()).build();
        io.of("/");
        (io, link)
    };
    let (io, a) = connect(format!("redis://:s3cret@127.0.0.1:{}/", redis.port)).await;
    let (_io_b, b) = connect(format!("redis://node:n0de@127.0.0.1:{}/", redis.port)).await;
    wait_until("not subscribed", || a.is_subscribed() && b.is_subscribed()).await;
    wait_for_nodes(&io, 2).await;

    // A wrong password: the commands connection is refused at once, with Redis's reason.
    let wrong = format!("redis://:nope@127.0.0.1:{}/", redis.port);
    let err = RedisNode::connect(&wrong, RedisConfig::default())
        .await
        .expect_err("a wrong password");
    assert!(
        matches!(err, RedisError::Connection(_)) && err.to_string().contains("WRONGPASS"),
        "{err}"
    );
    // None at all: found at once too, by the PING a connection starts with.
    let none = format!("redis://127.0.0.1:{}/", redis.port);
    let err = RedisNode::connect(&none, RedisConfig::default())
        .await
        .expect_err("no password");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

/// A Redis restarted with a large data set answers `PING` with `-LOADING` for as long as it
/// loads, yet publishes and subscribes: nodes join it at once.
#[tokio::test]
async fn nodes_join_a_redis_that_is_still_loading_its_data() {
    let dir = std::env::temp_dir().join(format!("redis-loading-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the data");
    let dir_arg = dir.to_str().expect("a UTF-8 path").to_owned();
    let mut redis = Redis::start_with(&["--dir", &dir_arg, "--enable-debug-command", "yes"]);
    let populated = redis_reply(&redis, &["DEBUG", "POPULATE", "50000"]).await;
    assert!(populated.starts_with("+OK"), "{populated}");
    assert!(redis_reply(&redis, &["SAVE"]).await.starts_with("+OK"));
    // About five seconds of loading after the restart.
    redis.args.extend(
        [
            "--key-load-delay",
            "100",
            "--loading-process-events-interval-bytes",
            "1024",
        ]
        .map(String::from),
    );
    redis.restart();
    let ping = redis_reply(&redis, &["PING"]).await;
    assert!(ping.starts_with("-LOADING"), "not loading: {ping}");

    let a = Node::start(&redis, "a").await;
    let b = Node::start(&redis, "b").await;
    wait_for_cluster(&a, 2).await;
    let mut client = Client::connect(&b, Some("r")).await;
    a.io.to("r").emit("while loading", &()).unwrap();
    assert_eq!(client.next().await.0, r#"2["while loading"]"#);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_node_given_a_redis_it_cannot_reach_does_not_start() {
    let nobody = free_port();
    let err = RedisNode::connect(
        &format!("redis://127.0.0.1:{nobody}/"),
        RedisConfig::default(),
    )
    .await
    .expect_err("nobody listens there");
    assert!(matches!(err, RedisError::Connection(_)), "{err}");
    assert!(err.is_unreachable(), "worth trying again: {err}");
    for (url, expected) in [
        ("127.0.0.1:6379", AddressError::Scheme),
        ("redis://127.0.0.1:port/", AddressError::Port("port".into())),
    ] {
        match RedisNode::connect(url, RedisConfig::default()).await {
            Err(RedisError::Address(e)) => assert_eq!(e, expected, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// A certificate authority, a server certificate it signed for `127.0.0.1` and a client
/// certificate it signed, made with `openssl` in a directory of their own; a second authority
/// that signed nothing.
#[cfg(feature = "redis-tls")]
struct TestCerts {
    dir: std::path::PathBuf,
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

#[cfg(feature = "redis-tls")]
impl TestCerts {
    fn make(name: &str) -> TestCerts {
        let dir = std::env::temp_dir().join(format!("redis-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl must be installed (the test command installs it)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&args);
        }
        for (who, subject, ext) in [
            (
                "server",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
            ),
            ("client", "/CN=node", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, ext_file, pem) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.ext"),
                format!("{who}.pem"),
            );
            let mut args = vec!["req", "-subj", subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(&args);
            std::fs::write(
                dir.join(&ext_file),
                format!("basicConstraints=CA:FALSE\n{ext}\n"),
            )
            .expect("write the extensions");
            let mut args = vec!["x509", "-req", "-days", "2", "-in", &csr];
            args.extend(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]);
            args.extend(["-extfile", &ext_file, "-out", &pem]);
            openssl(&args);
        }
        TestCerts {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        }
    }
}

/// Settings that trust the authorities in `ca` for `rediss://`.
#[cfg(feature = "redis-tls")]
fn trusting(ca: std::path::PathBuf) -> RedisConfig {
    RedisConfig {
        tls_ca_file: Some(ca),
        ..RedisConfig::default()
    }
}

#[cfg(feature = "redis-tls")]
impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn nodes_join_a_redis_over_tls_whose_certificate_they_check() {
    let certs = TestCerts::make("cluster");
    let redis = Redis::start_tls(&certs, false);
    let trusted = trusting(certs.ca.clone());
    let a = Node::start_with(&redis, "a", trusted.clone()).await;
    let b = Node::start_with(&redis, "b", trusted).await;
    wait_for_cluster(&a, 2).await;
    let mut client = Client::connect(&b, Some("r")).await;
    a.io.to("r")
        .emit("over tls", &Bytes::from_static(b"\x00\xff"))
        .unwrap();
    let (packet, attachments) = client.next().await;
    assert_eq!(packet, r#"51-["over tls",{"_placeholder":true,"num":0}]"#);
    assert_eq!(attachments, vec![vec![0, 255]]);

    // A certificate that does not chain to the authority trusted is refused, as is TLS spoken
    // to a plain port and plain RESP spoken to the TLS one.
    let distrusting = trusting(certs.other_ca.clone());
    let err = RedisNode::connect(&redis.url(), distrusting)
        .await
        .expect_err("an untrusted certificate");
    assert!(
        matches!(err, RedisError::Connection(_)) && err.to_string().contains("certificate"),
        "{err}"
    );
    assert!(
        !err.is_unreachable(),
        "a refusal, not worth trying again: {err}"
    );
    let plain = Redis::start();
    let ca = trusting(certs.ca.clone());
    let to_plain = format!("rediss://127.0.0.1:{}/", plain.port);
    let err = RedisNode::connect(&to_plain, ca)
        .await
        .expect_err("TLS to a plain port");
    // A plain Redis waits for the end of a line that a TLS hello never sends.
    assert!(err.to_string().contains("did not answer in time"), "{err}");
    assert!(!err.is_unreachable(), "{err}");
    let to_tls = format!("redis://127.0.0.1:{}/", redis.port);
    let err = RedisNode::connect(&to_tls, RedisConfig::default())
        .await
        .expect_err("plain to TLS");
    // The TLS port hangs up on what is not a TLS hello.
    assert!(matches!(err, RedisError::Connection(_)), "{err}");
    assert!(!err.is_unreachable(), "{err}");

    // A CA file that holds no certificate is a setup error, found before any connection.
    let empty = certs.dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let config = trusting(empty);
    let err = RedisNode::connect(&redis.url(), config)
        .await
        .expect_err("no authority");
    assert!(err.to_string().contains("no certificate"), "{err}");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn a_redis_that_asks_for_client_certificates_is_shown_the_nodes() {
    let certs = TestCerts::make("mutual");
    let redis = Redis::start_tls(&certs, true);
    let without = trusting(certs.ca.clone());
    let err = RedisNode::connect(&redis.url(), without.clone())
        .await
        .expect_err("a node without a certificate got in");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let with = RedisConfig {
        tls_client_cert: Some((certs.client_cert.clone(), certs.client_key.clone())),
        ..without
    };
    let a = Node::start_with(&redis, "a", with.clone()).await;
    let b = Node::start_with(&redis, "b", with).await;
    wait_for_cluster(&a, 2).await;
    let mut client = Client::connect(&a, Some("r")).await;
    b.io.to("r").emit("mutual", &1).unwrap();
    assert_eq!(client.next().await.0, r#"2["mutual",1]"#);
}

#[tokio::test]
async fn nodes_join_a_redis_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("redis-test-{}.sock", std::process::id()));
    let path_arg = path.to_str().expect("a UTF-8 path");
    let redis = Redis::start_with(&["--unixsocket", path_arg]);
    let url = format!("redis+unix://{path_arg}");
    let link = RedisNode::connect(&url, RedisConfig::default())
        .await
        .expect("connect to redis");
    let io = SocketIo::builder().adapter(link.adapter_factory()).build();
    io.of("/");
    wait_until("not subscribed", || link.is_subscribed()).await;
    wait_for_nodes(&io, 1).await;
    drop(redis);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_skipped_and_the_next_one_arrives() {
    let redis = Redis::start();
    let small = RedisConfig {
        max_message_bytes: 4096,
        ..RedisConfig::default()
    };
    let a = Node::start_with(&redis, "a", small).await;
    let b = Node::start(&redis, "b").await;
    wait_for_cluster(&a, 2).await;
    let mut client = Client::connect(&a, Some("r")).await;

    // A broadcast of 64 KiB from a node of the test's own, beyond node a's limit, then one
    // from node b.
    let large = socketio_server::socketio::packet::Packet::event(
        "/",
        "large",
        vec![json!("x".repeat(64 * 1024))],
    );
    let opts = socketio_server::socketio::adapter::BroadcastOptions::default();
    let message = socketio_server::redis::wire::encode_broadcast("elsewhere", &large, &opts);
    publish_raw(&redis, "socket.io#/#", &message).await;
    b.io.to("r").emit("after", &"x".repeat(100)).unwrap();
    let (packet, _) = client.next().await;
    assert!(packet.starts_with(r#"2["after","#), "got {packet}");
    let stats = a.redis.stats();
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);
    assert!(a.redis.is_subscribed());
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_found_and_the_subscriber_comes_back() {
    let redis = Redis::start();
    let quick = RedisConfig {
        ping_interval: Duration::from_millis(200),
        ..RedisConfig::default()
    };
    let a = Node::start_with(&redis, "a", quick).await;
    let b = Node::start(&redis, "b").await;
    wait_for_cluster(&a, 2).await;
    let mut client = Client::connect(&a, Some("r")).await;

    // Frozen, not gone: the connection stays open and says nothing.
    let pid = redis.child.id().to_string();
    // The shell's own `kill`: a `kill` program need not be installed.
    let signal = |sig: &str| {
        let status = Command::new("sh")
            .args(["-c", &format!("kill {sig} {pid}")])
            .status();
        assert!(status.expect("kill").success(), "kill {sig}");
    };
    signal("-STOP");
    let frozen = tokio::time::Instant::now();
    wait_until("the frozen Redis is not noticed", || {
        !a.redis.is_subscribed()
    })
    .await;
    let noticed = frozen.elapsed();
    signal("-CONT");
    assert!(
        noticed >= Duration::from_millis(200),
        "noticed after {noticed:?}"
    );
    wait_until("the subscriber does not come back", || {
        a.redis.is_subscribed()
    })
    .await;
    assert!(a.redis.stats().reconnects.load(Ordering::Relaxed) >= 1);

    // Node b's publisher may find its connection stale once; keep sending until one arrives.
    emit_until_heard(&b, "back", None, &mut client).await;
}

/// Subscribes a connection of its own to the request channel: Redis counts it as one more node,
/// which never answers, so every question to the cluster waits for the request timeout.
async fn silent_node(redis: &Redis) -> tokio::net::TcpStream {
    redis_command(redis, &[b"SUBSCRIBE", b"socket.io-request#/#"], b"*3").await
}

/// A chat node as `chat-server` runs it, on `redis`, whose questions to the cluster wait
/// 800 ms at most.
async fn chat_node(redis: &Redis) -> (SocketIo, RedisNode, SocketAddr) {
    chat_node_at(&redis.url()).await
}

/// A chat node on the Redis at `url`.
async fn chat_node_at(url: &str) -> (SocketIo, RedisNode, SocketAddr) {
    use socketio_server::chat::Chat;
    use socketio_server::chat::config::ChatConfig;
    let config = RedisConfig {
        requests_timeout: Duration::from_millis(800),
        ..RedisConfig::default()
    };
    let link = RedisNode::connect(url, config)
        .await
        .expect("connect to redis");
    let chat_config = ChatConfig {
        redis_url: Some(url.to_owned()),
        ..ChatConfig::default()
    };
    let io = chat_config
        .server_builder()
        .adapter(link.adapter_factory())
        .build();
    Chat::install(&io, chat_config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = io.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    (io, link, addr)
}

/// A client of the chat, joined to the main namespace.
async fn chat_client(addr: SocketAddr) -> Ws {
    let (mut ws, _) = ws_open(addr, "/socket.io/").await;
    ws_send(&mut ws, "40").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40"));
    ws
}

/// Every text packet a client receives until it has been quiet for `quiet` (pings answered).
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await {
        match msg {
            Message::Text(t) if t.as_str() == "2" => ws_send(ws, "3").await,
            Message::Text(t) => got.push(t.as_str().to_owned()),
            _ => {}
        }
    }
    got
}

#[tokio::test]
async fn chat_logins_overlapping_in_one_room_end_with_the_whole_list() {
    // The silent node makes each login's question wait 800 ms: bob's claim starts while
    // alice's is pending, and each sees the other's claim.
    let redis = Redis::start();
    let (io, link, addr) = chat_node(&redis).await;
    let _silent = silent_node(&redis).await;
    let mut alice = chat_client(addr).await;
    let mut bob = chat_client(addr).await;
    ws_send(&mut alice, r#"4211["login",{"name":"alice","room":"r1"}]"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws_send(&mut bob, r#"4211["login",{"name":"bob","room":"r1"}]"#).await;
    let (got_alice, got_bob) = tokio::join!(
        drain(&mut alice, Duration::from_secs(2)),
        drain(&mut bob, Duration::from_secs(2))
    );
    for (who, got) in [("alice", got_alice), ("bob", got_bob)] {
        let last: Value = got
            .iter()
            .rev()
            .find_map(|p| p.strip_prefix("42"))
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .filter(|p| p[0] == "users")
            .unwrap_or_else(|| panic!("{who} got no users list last: {got:?}"));
        let names: Vec<&str> = last[1]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|u| u["name"].as_str())
            .collect();
        assert_eq!(names, ["alice", "bob"], "the last list {who} got: {got:?}");
    }
    io.close();
    link.shutdown();
}

#[tokio::test]
async fn a_chat_login_the_cluster_is_still_checking_cannot_speak() {
    let redis = Redis::start();
    let (io, link, addr) = chat_node(&redis).await;
    let _silent = silent_node(&redis).await;

    let login = |name: &str| format!(r#"4211["login",{{"name":"{name}","room":"r1"}}]"#);
    let mut alice = chat_client(addr).await;
    ws_send(&mut alice, &login("alice")).await;
    // Her `users`, then the ack, once the silent node has timed out.
    assert!(
        ws_recv_app_text(&mut alice)
            .await
            .starts_with(r#"42["users""#)
    );
    assert!(ws_recv_app_text(&mut alice).await.starts_with("4311"));

    // While the cluster checks mallory's name, what she says reaches nobody.
    let mut mallory = chat_client(addr).await;
    ws_send(&mut mallory, &login("mallory")).await;
    ws_send(&mut mallory, r#"42["roomMessage","too early"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut alice).await,
        r#"42["notification",{"title":"Someone's here","description":"mallory just entered the room"}]"#,
        "the first thing alice hears of mallory is her entry, not her message"
    );
    // Once in, she speaks as herself.
    assert!(
        ws_recv_app_text(&mut alice)
            .await
            .starts_with(r#"42["users""#)
    );
    loop {
        let got = ws_recv_app_text(&mut mallory).await;
        if got.starts_with("4311") {
            break;
        }
    }
    ws_send(&mut mallory, r#"42["roomMessage","hello"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut alice).await,
        r#"42["roomMessage",{"message":"hello","from":"mallory"}]"#
    );
    io.close();
    link.shutdown();
}

#[tokio::test]
async fn a_logout_while_the_cluster_checks_the_name_leaves_no_room_behind() {
    let redis = Redis::start();
    let (io, link, addr) = chat_node(&redis).await;
    let _silent = silent_node(&redis).await;
    let mut alice = chat_client(addr).await;
    // Logged out while the cluster is still asked about her name.
    ws_send(&mut alice, r#"4211["login",{"name":"alice","room":"r1"}]"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws_send(&mut alice, r#"4212["logout"]"#).await;
    let got = drain(&mut alice, Duration::from_millis(1500)).await;
    assert!(got.iter().any(|p| p.starts_with("4312")), "{got:?}");
    let socket = io.of("/").sockets().pop().expect("her socket");
    assert_eq!(
        socket.rooms(),
        [socket.id().to_string()],
        "only her own room"
    );
    io.close();
    link.shutdown();
}

#[tokio::test]
async fn a_name_announced_by_a_node_that_does_not_answer_stays_taken() {
    let redis = Redis::start();
    let (io, link, addr) = chat_node(&redis).await;
    let _silent = silent_node(&redis).await;
    // Both listen to the requests' channel.
    wait_for_nodes(&io, 2).await;
    // The silent node announced bob's login in r1, as a chat node does, and then stalls: it
    // answers no question.
    let announced = json!({
        "uid": "stalled",
        "type": 6,
        "data": ["chat:logged-in", {"id": "b0b", "name": "bob", "room": "r1", "node": "stalled"}],
    });
    publish_raw(
        &redis,
        "socket.io-request#/#",
        announced.to_string().as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut ws = chat_client(addr).await;
    let mut login = async |id: u32, name: &str, room: &str| {
        let payload = json!(["login", {"name": name, "room": room}]);
        ws_send(&mut ws, &format!("42{id}{payload}")).await;
        let want = format!("43{id}");
        loop {
            let got = ws_recv_app_text(&mut ws).await;
            if let Some(ack) = got.strip_prefix(&want) {
                return serde_json::from_str::<Value>(ack).expect("an ack");
            }
        }
    };
    assert_eq!(
        login(11, "BOB", "r1").await,
        json!([{"error": "Name is already taken in this room"}])
    );
    // Other names, and bob's in other rooms, are free.
    assert!(login(12, "bob", "r2").await[0]["user"].is_object());
    io.close();
    link.shutdown();
}

/// Waits until `io`'s main namespace counts `n` nodes.
async fn wait_for_nodes(io: &SocketIo, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while io.of("/").server_count().await.ok() != Some(n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not reach {n} nodes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every text packet a client receives until one contains `wanted`; panics if none does
/// `within`.
async fn drain_until(ws: &mut Ws, wanted: &str, within: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !got.iter().any(|p: &String| p.contains(wanted)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing with {wanted:?} within {within:?}: {got:?}"
        );
        got.extend(drain(ws, Duration::from_millis(500)).await);
    }
    got
}

#[tokio::test]
async fn a_logout_made_while_redis_was_away_is_announced_once() {
    let mut redis = Redis::start();
    let (io_a, link_a, addr_a) = chat_node(&redis).await;
    let (io_b, link_b, addr_b) = chat_node(&redis).await;
    wait_for_nodes(&io_a, 2).await;
    let login = |name: &str| format!(r#"4211["login",{{"name":"{name}","room":"r1"}}]"#);
    let mut xena = chat_client(addr_a).await;
    let mut yuri = chat_client(addr_b).await;
    let mut zed = chat_client(addr_b).await;
    for (ws, name) in [(&mut xena, "xena"), (&mut yuri, "yuri"), (&mut zed, "zed")] {
        ws_send(ws, &login(name)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain(&mut xena, Duration::from_millis(500)).await;

    // yuri leaves while Redis is away: node b holds the announcement until it is back.
    redis.stop();
    drop(yuri);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    wait_until("not resubscribed", || {
        link_a.is_subscribed() && link_b.is_subscribed()
    })
    .await;
    wait_for_nodes(&io_a, 2).await;
    let mut got = drain_until(&mut xena, "yuri just left", Duration::from_secs(10)).await;
    // Node a, which learns the roster again at its next check of the cluster (every second),
    // does not announce it a second time.
    got.extend(drain(&mut xena, Duration::from_millis(2500)).await);
    let left: Vec<&String> = got.iter().filter(|p| p.contains("just left")).collect();
    assert_eq!(left.len(), 1, "before node b dies: {got:?}");

    // Node b dies: node a says goodbye for the user it had, and not for the one who left.
    io_b.close();
    link_b.shutdown();
    let mut seen = drain_until(&mut xena, "zed just left", Duration::from_secs(15)).await;
    // The lists follow: node b's own as it closes (it may have no answer from node a by then),
    // and node a's once node b counts as gone, which is the last.
    let only_xena = |seen: &[String]| {
        seen.iter()
            .rev()
            .find(|p| p.contains(r#""users""#))
            .is_some_and(|l| l.contains("xena") && !l.contains("zed") && !l.contains("yuri"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !only_xena(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no list of xena alone: {seen:?}"
        );
        seen.extend(drain(&mut xena, Duration::from_millis(500)).await);
    }
    let notices: Vec<&String> = seen.iter().filter(|p| p.contains("notification")).collect();
    assert_eq!(notices.len(), 1, "{seen:?}");
    assert!(notices[0].contains("zed just left the room"), "{seen:?}");
    drop(zed);
    io_a.close();
    link_a.shutdown();
}

/// A TCP relay to Redis that the test can cut, as a network would cut one node off: `cut`
/// closes its connections and refuses new ones until `heal`.
struct Relay {
    port: u16,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    async fn start(redis: &Redis) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(tokio::sync::watch::channel(true).0);
        let (target, gate) = (redis.port, open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*gate.borrow() {
                    continue;
                }
                let mut gate = gate.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gate.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Relay { port, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

/// What `ws` receives until one packet contains `text` (pings answered), that one included.
async fn until_heard(ws: &mut Ws, text: &str, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|p| p.contains(text)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing with {text}: {seen:?}"
        );
        seen.extend(drain(ws, Duration::from_millis(300)).await);
    }
    seen
}

#[tokio::test]
async fn a_node_cut_off_from_redis_for_a_while_is_said_to_leave_and_to_come_back() {
    let redis = Redis::start();
    let relay = Relay::start(&redis).await;
    let (io_a, link_a, addr_a) = chat_node(&redis).await;
    let (io_b, link_b, addr_b) = chat_node_at(&relay.url()).await;
    wait_for_nodes(&io_a, 2).await;
    // Node a looks at the cluster every second: it has seen node b by then.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let login = |name: &str| format!(r#"4211["login",{{"name":"{name}","room":"r1"}}]"#);
    let mut xena = chat_client(addr_a).await;
    let mut zed = chat_client(addr_b).await;
    ws_send(&mut xena, &login("xena")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws_send(&mut zed, &login("zed")).await;
    until_heard(&mut xena, "zed just entered", Duration::from_secs(5)).await;
    drain(&mut xena, Duration::from_millis(300)).await;

    // Node b loses Redis for longer than it takes to be found gone.
    relay.cut();
    let seen = until_heard(&mut xena, "zed just left", Duration::from_secs(15)).await;
    let seen = [seen, drain(&mut xena, Duration::from_millis(500)).await].concat();
    let list = seen.iter().rev().find(|p| p.contains(r#""users""#));
    assert!(list.is_some_and(|l| !l.contains("zed")), "{seen:?}");

    // It comes back: zed is in the room again, for xena as for the room's list.
    relay.heal();
    let seen = until_heard(&mut xena, "zed just entered", Duration::from_secs(15)).await;
    let seen = [seen, drain(&mut xena, Duration::from_millis(500)).await].concat();
    let list = seen.iter().rev().find(|p| p.contains(r#""users""#));
    assert!(
        list.is_some_and(|l| l.contains("xena") && l.contains("zed")),
        "{seen:?}"
    );
    ws_send(&mut zed, r#"42["roomMessage","back"]"#).await;
    let seen = until_heard(&mut xena, r#""message":"back""#, Duration::from_secs(5)).await;
    assert!(
        seen.iter().any(|m| m.contains(r#""from":"zed""#)),
        "{seen:?}"
    );
    drop(zed);
    io_a.close();
    io_b.close();
    link_a.shutdown();
    link_b.shutdown();
}

/// The reply to one command on a connection of the test's own, read whole: a bulk string's
/// text, or an integer's digits, or the last line of anything else.
async fn redis_reply(redis: &Redis, args: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .expect("connect to redis");
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    conn.write_all(command.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.expect("a reply");
        assert!(n > 0, "redis hung up");
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply).into_owned();
        let whole = match text.strip_prefix('$') {
            // A bulk string: its length, then that many bytes and CRLF.
            Some(rest) => rest.split_once("\r\n").is_some_and(|(len, body)| {
                len.parse::<usize>().is_ok_and(|len| body.len() >= len + 2)
            }),
            None => {
                let lines = if text.starts_with('*') { 4 } else { 1 };
                text.ends_with("\r\n") && text.matches('\n').count() >= lines
            }
        };
        if whole {
            return text;
        }
    }
}

/// Node 1's share of the Redis subscriptions for `/dyn-1` (node 0 keeps its own): the request
/// and response channels' subscribers, and the pattern subscriptions of every connection.
async fn dyn_subscriptions(redis: &Redis) -> [u64; 3] {
    let count = |reply: String| -> u64 {
        let last = reply
            .trim_end()
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        last.trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("a count: {reply:?}"))
    };
    let clients = redis_reply(redis, &["CLIENT", "LIST"]).await;
    let patterns = clients
        .split_whitespace()
        .filter_map(|field| field.strip_prefix("psub="))
        .map(|n| n.parse::<u64>().expect("a psub count"))
        .sum();
    [
        count(redis_reply(redis, &["PUBSUB", "NUMSUB", "socket.io-request#/dyn-1#"]).await),
        count(redis_reply(redis, &["PUBSUB", "NUMSUB", "socket.io-response#/dyn-1#"]).await),
        patterns,
    ]
}

#[tokio::test]
async fn a_dynamic_namespace_that_goes_stops_listening_and_a_new_one_listens_again() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2).await;
    for node in &nodes {
        node.io
            .dynamic_namespace(|name| name.starts_with("/dyn-"), |_ns| {});
    }
    let join = |node: &Node| {
        let addr = node.addr;
        async move {
            let (mut ws, _) = ws_open(addr, "/socket.io/").await;
            ws_send(&mut ws, "40/dyn-1,").await;
            let reply = ws_recv_app_text(&mut ws).await;
            assert!(reply.starts_with("40/dyn-1,"), "{reply}");
            ws
        }
    };
    // Node 0's client keeps the namespace there; node 1's comes and goes.
    let _stays = join(&nodes[0]).await;
    for round in 0..2 {
        let mut ws = join(&nodes[1]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            nodes[0].io.of("/dyn-1").emit("m", &round).unwrap();
            match tokio::time::timeout(Duration::from_millis(300), ws_recv_app_text(&mut ws)).await
            {
                Ok(packet) => {
                    assert_eq!(packet, format!(r#"42/dyn-1,["m",{round}]"#));
                    break;
                }
                Err(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: broadcasts do not reach node 1"
                ),
            }
        }
        // Both nodes listen for `/dyn-1`, and both for `/`: four patterns.
        assert_eq!(dyn_subscriptions(&redis).await, [2, 2, 4]);
        ws_send(&mut ws, "41/dyn-1,").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while dyn_subscriptions(&redis).await != [1, 1, 3] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: node 1 still listens for a namespace it no longer has"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !nodes[1]
                .io
                .namespaces()
                .iter()
                .any(|ns| ns.name() == "/dyn-1")
        );
    }
}

/// A login to room `r1` with ack id 11.
fn r1_login(name: &str) -> String {
    format!(r#"4211["login",{{"name":"{name}","room":"r1"}}]"#)
}

/// Two chat nodes on one Redis, with a client logged in to room `r1` on each.
struct TwoChatNodes {
    io_a: SocketIo,
    link_a: RedisNode,
    addr_a: SocketAddr,
    _io_b: SocketIo,
    link_b: RedisNode,
    addr_b: SocketAddr,
    on_a: Ws,
    on_b: Ws,
}

impl TwoChatNodes {
    /// `on_a` logs in on node a, then `on_b` on node b; what `on_a` got meanwhile is read.
    async fn start(redis: &Redis, on_a: &str, on_b: &str) -> TwoChatNodes {
        let (io_a, link_a, addr_a) = chat_node(redis).await;
        let (io_b, link_b, addr_b) = chat_node(redis).await;
        wait_for_nodes(&io_a, 2).await;
        let mut a = chat_client(addr_a).await;
        let mut b = chat_client(addr_b).await;
        for (ws, name) in [(&mut a, on_a), (&mut b, on_b)] {
            ws_send(ws, &r1_login(name)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drain(&mut a, Duration::from_millis(300)).await;
        TwoChatNodes {
            io_a,
            link_a,
            addr_a,
            _io_b: io_b,
            link_b,
            addr_b,
            on_a: a,
            on_b: b,
        }
    }
}

/// Lists sent while Redis was away lack the users of the nodes that could not be asked; once
/// it is back, every node sends its rooms their whole lists again, and those are the lists the
/// clients are left with.
#[tokio::test]
async fn room_lists_made_while_redis_was_away_are_put_right_once_it_is_back() {
    let mut redis = Redis::start();
    let TwoChatNodes {
        link_a,
        link_b,
        addr_b,
        on_a: mut xena,
        on_b: mut yuri,
        ..
    } = TwoChatNodes::start(&redis, "xena", "yuri").await;
    drain(&mut yuri, Duration::from_millis(300)).await;

    redis.stop();
    let mut zed = chat_client(addr_b).await;
    ws_send(&mut zed, &r1_login("zed")).await;
    let got = drain(&mut zed, Duration::from_millis(1000)).await;
    let last_list = |got: &[String]| got.iter().rev().find(|p| p.contains(r#""users""#)).cloned();
    let list = last_list(&got).expect("zed's login gets a list");
    assert!(
        !list.contains("xena"),
        "node b could not ask node a: {list}"
    );

    redis.restart();
    let whole = |list: &Option<String>| {
        list.as_ref()
            .is_some_and(|l| ["xena", "yuri", "zed"].iter().all(|n| l.contains(n)))
    };
    let mut lists = [None, None, None];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lists.iter().all(whole) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lists were not put right: {lists:?}"
        );
        for (i, ws) in [&mut xena, &mut yuri, &mut zed].into_iter().enumerate() {
            if let Some(list) = last_list(&drain(ws, Duration::from_millis(200)).await) {
                lists[i] = Some(list);
            }
        }
    }
    // Nothing made during the outage comes after them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (i, ws) in [&mut xena, &mut yuri, &mut zed].into_iter().enumerate() {
        if let Some(list) = last_list(&drain(ws, Duration::from_millis(200)).await) {
            lists[i] = Some(list);
        }
    }
    assert!(lists.iter().all(whole), "{lists:?}");
    link_a.shutdown();
    link_b.shutdown();
}

/// The clients of a node that dies log in again on another one, often before that node counts
/// as gone: when it does, the room is sent its list, but not told that a user who is there
/// under that name has just left.
#[tokio::test]
async fn a_user_back_on_another_node_is_not_said_to_leave_when_the_old_node_dies() {
    let redis = Redis::start();
    let TwoChatNodes {
        io_a,
        link_a,
        addr_a,
        link_b,
        on_a: mut xena,
        on_b: bob,
        ..
    } = TwoChatNodes::start(&redis, "xena", "bob").await;
    // Node a's check of the cluster (every second) has seen node b.
    drain(&mut xena, Duration::from_millis(1500)).await;

    // Node b leaves the cluster without a word, as a node that dies does; bob is back at once.
    link_b.shutdown();
    wait_for_nodes(&io_a, 1).await;
    let mut bob_again = chat_client(addr_a).await;
    ws_send(&mut bob_again, &r1_login("bob")).await;
    let ack = loop {
        let got = ws_recv_app_text(&mut bob_again).await;
        if let Some(ack) = got.strip_prefix("4311") {
            break ack.to_owned();
        }
    };
    assert!(ack.contains(r#""user""#), "{ack}");

    // Node b counts as gone after four checks a second apart.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        seen.extend(drain(&mut xena, Duration::from_millis(500)).await);
    }
    let lists: Vec<&String> = seen.iter().filter(|p| p.contains(r#""users""#)).collect();
    assert!(
        lists.len() >= 2,
        "a list for bob's login and one when node b was gone: {seen:?}"
    );
    assert!(
        !seen.iter().any(|p| p.contains("bob just left")),
        "{seen:?}"
    );
    let last = lists.last().expect("a list");
    assert_eq!(last.matches(r#""name":"bob""#).count(), 1, "{last}");
    assert!(last.contains("xena"), "{last}");
    drop(bob);
    link_a.shutdown();
}
