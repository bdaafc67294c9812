//! Socket.IO v5 end to end at the packet level, over raw WebSocket (and polling where it
//! matters), against the conformance server's `/socket.io/` application: namespaces `/` and
//! `/custom`, connect timeout 1000 ms, `message` → `message-back`, `message-with-ack` acked with
//! its arguments (see `protocol-tests/node/README.md`).

mod common;

use std::time::{Duration, Instant};

use common::client::*;
use common::spawn_conformance_server;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const S: &str = SOCKETIO_PATH;

/// A WebSocket Engine.IO session on `/socket.io/`: the socket and the engine sid.
async fn engine(addr: std::net::SocketAddr) -> (Ws, String) {
    let (ws, handshake) = ws_open(addr, S).await;
    let sid = handshake["sid"].as_str().expect("sid").to_owned();
    (ws, sid)
}

/// Parses `<prefix><json>`; panics if `packet` does not start with `prefix`.
#[track_caller]
fn json_after(packet: &str, prefix: &str) -> Value {
    let rest = packet
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{packet:?} does not start with {prefix:?}"));
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{packet:?}: {e}"))
}

/// Sends a CONNECT for `nsp` (with `auth` when given) and returns the socket id of the reply;
/// also checks the `auth` event the conformance server emits on connect.
async fn join(ws: &mut Ws, nsp: &str, auth: Option<Value>) -> String {
    let prefix = if nsp == "/" {
        "40".to_owned()
    } else {
        format!("40{nsp},")
    };
    let packet = match &auth {
        Some(a) => format!("{prefix}{a}"),
        None => prefix.clone(),
    };
    ws_send(ws, &packet).await;
    let reply = json_after(&ws_recv_app_text(ws).await, &prefix);
    let keys: Vec<&String> = reply.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys,
        ["sid"],
        "the CONNECT reply carries exactly the socket id"
    );
    let sid = reply["sid"].as_str().expect("a string sid").to_owned();
    let event_prefix = if nsp == "/" {
        "42".to_owned()
    } else {
        format!("42{nsp},")
    };
    let auth_event = json_after(&ws_recv_app_text(ws).await, &event_prefix);
    assert_eq!(auth_event, json!(["auth", auth.unwrap_or(json!({}))]));
    sid
}

/// A connected Socket.IO client on `/`.
async fn connected(addr: std::net::SocketAddr) -> (Ws, String, String) {
    let (mut ws, engine_sid) = engine(addr).await;
    let socket_sid = join(&mut ws, "/", None).await;
    (ws, engine_sid, socket_sid)
}

/// Sends `packets` (text, or binary when given as bytes) and asserts the server closes the
/// connection soon after, with nothing answered in between.
async fn assert_closes(addr: std::net::SocketAddr, packets: &[Message], what: &str) {
    assert_closes_answering(addr, packets, &[], what).await;
}

/// Like [`assert_closes`], where the server answers exactly `answers` before closing.
async fn assert_closes_answering(
    addr: std::net::SocketAddr,
    packets: &[Message],
    answers: &[Message],
    what: &str,
) {
    let (mut ws, _, _) = connected(addr).await;
    for p in packets {
        if ws.send(p.clone()).await.is_err() {
            break;
        }
    }
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    let got: Vec<&Message> = end
        .messages
        .iter()
        .filter(|m| !matches!(m, Message::Text(t) if t.as_str() == "2"))
        .collect();
    let expected: Vec<&Message> = answers.iter().collect();
    assert_eq!(got, expected, "{what}: the answers before closing");
}

/// Sends `args` (JSON text) with the test app's `message` and checks that `message-back`
/// carries them byte for byte.
async fn assert_echoed(ws: &mut Ws, args: &str) {
    ws_send(ws, &format!(r#"42["message",{args}]"#)).await;
    assert_eq!(
        ws_recv_app_text(ws).await,
        format!(r#"42["message-back",{args}]"#)
    );
}

fn text(s: &str) -> Message {
    Message::text(s)
}

fn binary(b: &[u8]) -> Message {
    Message::binary(b.to_vec())
}

use futures_util::SinkExt;

// ---- connect --------------------------------------------------------------------------------

#[tokio::test]
async fn connect_reply_carries_a_socket_id_distinct_from_the_engine_id() {
    let addr = spawn_conformance_server().await;
    let (mut ws, engine_sid) = engine(addr).await;
    let socket_sid = join(&mut ws, "/", None).await;
    assert_ne!(socket_sid, engine_sid);
    assert!(socket_sid.len() >= 20, "{socket_sid}");
    assert!(
        !engine_sid.contains(&socket_sid) && !socket_sid.contains(&engine_sid),
        "the socket id says nothing about the session id"
    );
    // Another namespace on the same connection gets yet another id.
    let custom_sid = join(&mut ws, "/custom", None).await;
    assert_ne!(custom_sid, socket_sid);
    assert_ne!(custom_sid, engine_sid);
    // The socket id does not authorise polling requests.
    get(
        addr,
        &format!("{S}?EIO=4&transport=polling&sid={socket_sid}"),
    )
    .await
    .assert_engine_error(400, 1);
}

#[tokio::test]
async fn connect_with_an_auth_object() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    let auth = json!({ "token": "123", "nested": { "list": [1, "two", null] } });
    join(&mut ws, "/", Some(auth)).await;
    join(&mut ws, "/custom", Some(json!({ "token": "abc" }))).await;
}

#[tokio::test]
async fn connect_over_polling() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, S).await;
    p.post_ok(br#"40{"token":"polling"}"#).await;
    let mut packets = Vec::new();
    while packets.len() < 2 {
        packets.extend(p.get_answering_pings().await);
    }
    let reply = json_after(&packets[0], "40");
    assert_ne!(reply["sid"].as_str().expect("sid"), p.sid);
    assert_eq!(
        json_after(&packets[1], "42"),
        json!(["auth", {"token": "polling"}])
    );
    // An event and its echo, batched in one POST.
    p.post_ok("42[\"message\",1]\u{1e}42[\"message\",2]".as_bytes())
        .await;
    let mut packets = Vec::new();
    while packets.len() < 2 {
        packets.extend(p.get_answering_pings().await);
    }
    assert_eq!(
        packets,
        [r#"42["message-back",1]"#, r#"42["message-back",2]"#]
    );
}

#[tokio::test]
async fn unknown_namespace_gets_connect_error_and_the_connection_stays_open() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    ws_send(&mut ws, "40/random,").await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    ws_send(&mut ws, r#"40/other,{"token":"x"}"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"44/other,{"message":"Invalid namespace"}"#
    );
    // The same connection can still join a real namespace and use it.
    join(&mut ws, "/", None).await;
    ws_send(&mut ws, r#"42["message","after refusal"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","after refusal"]"#
    );
}

#[tokio::test]
async fn an_auth_object_over_16_kib_gets_connect_error_and_the_connection_stays_open() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    let big = format!(r#"40{{"token":"{}"}}"#, "t".repeat(16 * 1024));
    ws_send(&mut ws, &big).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"44{"message":"Auth payload too large"}"#
    );
    // Just under the limit is fine, on the same connection.
    let token = "t".repeat(16 * 1024 - r#"{"token":""}"#.len());
    ws_send(&mut ws, &format!(r#"40{{"token":"{token}"}}"#)).await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with(r#"40{"sid":"#));
    let auth = ws_recv_app_text(&mut ws).await;
    assert!(
        auth.starts_with(r#"42["auth",{"token":"ttt"#),
        "{}",
        &auth[..40]
    );
}

#[tokio::test]
async fn middleware_refusal_is_a_connect_error_with_data() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    ws_send(&mut ws, r#"40{"refuse":true}"#).await;
    // Byte for byte as Node writes it: the message ahead of the data.
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"44{"message":"refused by middleware","data":{"reason":"test"}}"#
    );
    join(&mut ws, "/", Some(json!({ "refuse": false }))).await;
}

/// robustness.md's protocol violations over polling, as the reference server's own tests send
/// them: the connection closes cleanly. The client's polls get what was queued before the
/// close (the CONNECT answer, when it joined first), then `6␞1` in an answer of its own, and
/// then the session is gone.
#[tokio::test]
async fn a_protocol_violation_over_polling_ends_with_a_noop_and_close_of_their_own() {
    let addr = spawn_conformance_server().await;
    let violations: [&[&str]; 3] = [&["40", "40"], &[r#"42["some event"]"#], &["40", "4abc"]];
    for posts in violations {
        let p = Polling::open(addr, S).await;
        for packet in posts {
            p.post_ok(packet.as_bytes()).await;
        }
        let mut answers = Vec::new();
        while !answers
            .last()
            .is_some_and(|a: &Vec<String>| a.contains(&"1".to_owned()))
        {
            // Pings queued before the close come too; a closed session takes no pong.
            let packets = p.get_packets().await.into_iter().filter(|x| x != "2");
            answers.push(packets.collect());
        }
        let last = answers.pop().unwrap_or_default();
        assert_eq!(last, ["6", "1"], "{posts:?}: the close packet, alone");
        let before: Vec<String> = answers.concat();
        if posts[0] == "40" {
            assert!(
                before[0].starts_with("40{\"sid\":"),
                "{posts:?}: {before:?}"
            );
        } else {
            assert!(before.is_empty(), "{posts:?}: {before:?}");
        }
        p.assert_unknown().await;
    }
}

#[tokio::test]
async fn connect_timeout_closes_a_connection_that_joins_no_namespace() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    let start = Instant::now();
    let end = ws_expect_end_answering_pings(&mut ws, Duration::from_secs(3)).await;
    let after = start.elapsed();
    assert!(end.messages.is_empty(), "{end:?}");
    assert!(
        after >= Duration::from_millis(850),
        "closed after {after:?}, before the connect timeout"
    );
    assert!(
        after < Duration::from_millis(2000),
        "closed late: {after:?}"
    );
}

#[tokio::test]
async fn connect_timeout_counts_a_refused_namespace_as_no_namespace() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    let start = Instant::now();
    ws_send(&mut ws, "40/random,").await;
    let end = ws_expect_end_answering_pings(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(
        end.messages,
        [text(r#"44/random,{"message":"Invalid namespace"}"#)]
    );
    assert!(start.elapsed() >= Duration::from_millis(850));
}

#[tokio::test]
async fn joined_connection_outlives_the_connect_timeout() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1300) {
        match tokio::time::timeout(Duration::from_millis(100), ws_recv_app(&mut ws)).await {
            Ok(msg) => panic!("unexpected {msg:?}"),
            Err(_) => continue,
        }
    }
    ws_send(&mut ws, r#"42["message","alive"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","alive"]"#
    );
}

#[tokio::test]
async fn multiplexed_namespaces_and_leaving_one_keeps_the_other() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = engine(addr).await;
    join(&mut ws, "/", None).await;
    join(&mut ws, "/custom", Some(json!({"ns": "custom"}))).await;
    // `/custom` has no `message` handler; `/` does. Both are served on one connection.
    ws_send(&mut ws, r#"42/custom,["message","to custom"]"#).await;
    ws_send(&mut ws, r#"42["message","to main"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","to main"]"#
    );
    // The server disconnects `/custom` on request; `/` stays.
    ws_send(&mut ws, r#"42/custom,["disconnect-me"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "41/custom,");
    ws_send(&mut ws, r#"42["message","still main"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","still main"]"#
    );
    // The client rejoins and then leaves `/custom` itself; `/` stays.
    join(&mut ws, "/custom", None).await;
    ws_send(&mut ws, "41/custom,").await;
    ws_send(&mut ws, r#"42["message","main again"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","main again"]"#
    );
    // Leaving `/` keeps `/custom` joined again.
    join(&mut ws, "/custom", None).await;
    ws_send(&mut ws, "41").await;
    ws_send(&mut ws, r#"42/custom,["disconnect-me"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "41/custom,");
}

#[tokio::test]
async fn server_side_disconnect_and_transport_close() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    ws_send(&mut ws, r#"42["disconnect-me"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "41");
    // An event for the namespace just left is out of place: the connection closes.
    ws_send(&mut ws, r#"42["message","gone"]"#).await;
    ws_expect_end(&mut ws, Duration::from_secs(1)).await;

    let (mut ws, _, _) = connected(addr).await;
    ws_send(&mut ws, r#"42["close-transport"]"#).await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    assert!(end.messages.iter().all(|m| m == &text("2")), "{end:?}");
}

/// A session the server closes after `3probe` and before the client's `5`: the client has
/// paused polling, so the close must reach it over the WebSocket it is moving to, not as a
/// close of its probe (which would leave it waiting for a ping timeout).
#[tokio::test]
async fn a_close_during_the_upgrade_reaches_the_client_over_its_new_websocket() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, S).await;
    p.connect_main().await;
    let mut ws = p.probed_websocket().await;
    // Still over polling, as a client pausing its polling may do: the server closes the session.
    p.post_ok(br#"42["close-transport"]"#).await;
    let early = tokio::time::timeout(Duration::from_millis(300), ws_next(&mut ws)).await;
    assert!(
        early.is_err(),
        "the probe socket was used before the client moved to it: {early:?}"
    );
    ws_send(&mut ws, "5").await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(
        end.code,
        Some(1005),
        "a close frame without a code: {end:?}"
    );
    assert_eq!(
        end.messages,
        [text("1")],
        "the close packet, then the close frame"
    );
}

#[tokio::test]
async fn a_protocol_error_during_the_upgrade_reaches_the_client_over_its_new_websocket() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, S).await;
    p.connect_main().await;
    let mut ws = p.probed_websocket().await;
    // A packet that does not decode, posted just before the client paused its polling.
    p.post_ok(b"4abc").await;
    ws_send(&mut ws, "5").await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(
        end.messages,
        [text("1")],
        "the close packet, then the close frame: {end:?}"
    );
}

// ---- events, acks, binary -------------------------------------------------------------------

#[tokio::test]
async fn events_and_acks_round_trip() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    ws_send(&mut ws, r#"42["message",1,"two",{"three":[3]},null]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back",1,"two",{"three":[3]},null]"#
    );
    ws_send(&mut ws, r#"42["message"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["message-back"]"#);
    // Numbers come back as JavaScript writes them (a client that sent `1.0` reads `1`), but
    // integers stay exact beyond 2^53.
    ws_send(
        &mut ws,
        r#"42["message",1.0,2.50,1e2,1e20,1e21,1.5E-7,-0.0,9007199254740993]"#,
    )
    .await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back",1,2.5,100,100000000000000000000,1e+21,1.5e-7,0,9007199254740993]"#
    );
    // Objects come back with their keys in the client's order, as JavaScript keeps them.
    assert_echoed(
        &mut ws,
        r#"{"zebra":1,"apple":{"y":[{"b":2,"a":1}],"x":null},"mango":"m"}"#,
    )
    .await;
    // But for array indices, which a JavaScript object lists first, ascending (as Node's
    // server sends this object back).
    ws_send(
        &mut ws,
        r#"42["message",{"b":1,"2":2,"1":3,"10":4,"01":5,"4294967295":6,"4294967294":7,"-1":8,"a":{"z":0,"0":1}}]"#,
    )
    .await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back",{"1":3,"2":2,"10":4,"4294967294":7,"b":1,"01":5,"4294967295":6,"-1":8,"a":{"0":1,"z":0}}]"#
    );
    ws_send(&mut ws, r#"4217["message-with-ack","a",2]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"4317["a",2]"#);
    // The largest ack id a JavaScript number holds exactly.
    ws_send(&mut ws, r#"429007199254740991["message-with-ack","max"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"439007199254740991["max"]"#
    );
    // Server to client: the server asks, the client acks, the server reports the answer.
    ws_send(&mut ws, r#"42["request-ack","q"]"#).await;
    let ask = ws_recv_app_text(&mut ws).await;
    let id: String = ask
        .strip_prefix("42")
        .expect("an event")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!id.is_empty(), "the server's event asks for an ack: {ask}");
    assert_eq!(&ask[2 + id.len()..], r#"["ack-request","q"]"#);
    ws_send(&mut ws, &format!(r#"43{id}["answer",42]"#)).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["ack-result","answer",42]"#
    );
    // An ack nobody asked for is ignored.
    ws_send(&mut ws, r#"43999["unexpected"]"#).await;
    ws_send(&mut ws, r#"42["message","after"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","after"]"#
    );
}

#[tokio::test]
async fn binary_events_round_trip() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    ws_send(&mut ws, r#"451-["message",{"_placeholder":true,"num":0}]"#).await;
    ws_send_binary(&mut ws, &[1, 2, 3]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws_recv_app_binary(&mut ws).await, [1, 2, 3]);
    // Keys keep the client's order around an attachment too.
    ws_send(
        &mut ws,
        r#"451-["message",{"z":{"_placeholder":true,"num":0},"b":[2],"a":"1"}]"#,
    )
    .await;
    ws_send_binary(&mut ws, &[4]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"451-["message-back",{"z":{"_placeholder":true,"num":0},"b":[2],"a":"1"}]"#
    );
    assert_eq!(ws_recv_app_binary(&mut ws).await, [4]);
    // Two attachments, nested and out of order, plus an empty one.
    ws_send(
        &mut ws,
        r#"453-["message",{"a":{"_placeholder":true,"num":1}},[{"_placeholder":true,"num":0}],{"_placeholder":true,"num":2}]"#,
    )
    .await;
    ws_send_binary(&mut ws, b"zero").await;
    ws_send_binary(&mut ws, b"one").await;
    ws_send_binary(&mut ws, b"").await;
    let header = ws_recv_app_text(&mut ws).await;
    let data = json_after(&header, "453-");
    let mut parts = Vec::new();
    for _ in 0..3 {
        parts.push(ws_recv_app_binary(&mut ws).await);
    }
    // The server numbers attachments its own way; resolve placeholders and compare values.
    let resolve = |v: &Value| -> Vec<u8> {
        let n = v["num"].as_u64().expect("a placeholder") as usize;
        parts[n].clone()
    };
    assert_eq!(data[0], json!("message-back"));
    assert_eq!(resolve(&data[1]["a"]), b"one");
    assert_eq!(resolve(&data[2][0]), b"zero");
    assert_eq!(resolve(&data[3]), b"");
    // Binary on `/custom` and over polling are covered by the fixtures; ten attachments, the
    // limit, are accepted.
    let placeholders: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
        .collect();
    ws_send(
        &mut ws,
        &format!(r#"4510-["message",{}]"#, placeholders.join(",")),
    )
    .await;
    for i in 0..10u8 {
        ws_send_binary(&mut ws, &[i]).await;
    }
    assert!(
        ws_recv_app_text(&mut ws)
            .await
            .starts_with("4510-[\"message-back\",")
    );
    for i in 0..10u8 {
        assert_eq!(ws_recv_app_binary(&mut ws).await, [i]);
    }
}

#[tokio::test]
async fn binary_acks_both_ways() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    // Client to server: the ack carries the binary back.
    ws_send(
        &mut ws,
        r#"451-7["message-with-ack","x",{"_placeholder":true,"num":0}]"#,
    )
    .await;
    ws_send_binary(&mut ws, &[9, 8, 7]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"461-7["x",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws_recv_app_binary(&mut ws).await, [9, 8, 7]);
    // Server to client: a binary ack from the client is reassembled.
    ws_send(&mut ws, r#"42["request-ack"]"#).await;
    let ask = ws_recv_app_text(&mut ws).await;
    let id: String = ask[2..].chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(&ask[2 + id.len()..], r#"["ack-request"]"#);
    ws_send(
        &mut ws,
        &format!(r#"461-{id}[{{"_placeholder":true,"num":0}}]"#),
    )
    .await;
    ws_send_binary(&mut ws, &[4, 5]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"451-["ack-result",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws_recv_app_binary(&mut ws).await, [4, 5]);
}

#[tokio::test]
async fn a_socket_joins_at_most_1000_rooms_of_256_bytes_in_the_test_app() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    // Its own room is one of them.
    for i in 1..=1000 {
        ws_send(&mut ws, &format!(r#"42{i}["join","room-{i}"]"#)).await;
        let joined = i < 1000;
        assert_eq!(ws_recv_app_text(&mut ws).await, format!("43{i}[{joined}]"));
    }
    ws_send(&mut ws, r#"421["leave","room-1"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "431[true]");
    ws_send(&mut ws, r#"422["join","room-again"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "432[true]");
    // Room names are at most 256 bytes long.
    ws_send(&mut ws, r#"421["leave","room-2"]"#).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "431[true]");
    let long = "r".repeat(257);
    ws_send(&mut ws, &format!(r#"423["join","{long}"]"#)).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "433[false]");
    let longest = "r".repeat(256);
    ws_send(&mut ws, &format!(r#"424["join","{longest}"]"#)).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "434[true]");
}

#[tokio::test]
async fn rooms_and_broadcasts() {
    let addr = spawn_conformance_server().await;
    let (mut a, _, _) = connected(addr).await;
    let (mut b, _, _) = connected(addr).await;
    let (mut c, _, _) = connected(addr).await;
    for ws in [&mut a, &mut b] {
        ws_send(ws, r#"421["join","room-1"]"#).await;
        assert_eq!(ws_recv_app_text(ws).await, "431[true]");
    }
    // To the room except the sender.
    ws_send(&mut a, r#"42["to-room","room-1","hi"]"#).await;
    assert_eq!(ws_recv_app_text(&mut b).await, r#"42["room-message","hi"]"#);
    // To the room, sender included.
    ws_send(&mut c, r#"42["to-room-all","room-1","all"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut a).await,
        r#"42["room-message","all"]"#
    );
    assert_eq!(
        ws_recv_app_text(&mut b).await,
        r#"42["room-message","all"]"#
    );
    // Everyone not in the room.
    ws_send(&mut a, r#"42["except-room","room-1","out"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut c).await,
        r#"42["room-message","out"]"#
    );
    // Nobody got anything else.
    for ws in [&mut a, &mut b, &mut c] {
        ws_send(ws, r#"42["message","sync"]"#).await;
        assert_eq!(ws_recv_app_text(ws).await, r#"42["message-back","sync"]"#);
    }
}

#[tokio::test]
async fn packets_the_reference_parser_accepts_keep_the_connection() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    // A number names an event (no listener here); an ack without an id acknowledges nothing.
    ws_send(&mut ws, r#"42[1,"x"]"#).await;
    ws_send(&mut ws, r#"421[2.5]"#).await;
    ws_send(&mut ws, r#"43["x"]"#).await;
    ws_send(&mut ws, r#"461-[{"_placeholder":true,"num":0}]"#).await;
    ws_send_binary(&mut ws, b"unasked").await;
    ws_send(&mut ws, r#"42["message","after"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","after"]"#
    );
    // Half a surrogate pair (text cut inside an emoji by a JavaScript client).
    ws_send(&mut ws, r#"42["message","cut \ud83d"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        "42[\"message-back\",\"cut \u{fffd}\"]"
    );
    // A number a double cannot hold: Infinity in JavaScript, sent on as null.
    ws_send(&mut ws, r#"42["message",1e400,-1e999]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back",null,null]"#
    );
}

#[tokio::test]
async fn a_client_that_never_acknowledges_is_owed_at_most_1024_questions() {
    // Each `request-ack` makes the server emit with an ack; this client answers none of them
    // at first. The server keeps at most 1024 waiting (its default `max_pending_acks`); the
    // emits beyond fail and send nothing.
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    for i in 0..1100 {
        ws_send(&mut ws, &format!(r#"42["request-ack",{i}]"#)).await;
    }
    let mut asked = Vec::new();
    while let Ok(ask) =
        tokio::time::timeout(Duration::from_millis(500), ws_recv_app_text(&mut ws)).await
    {
        asked.push(ask);
    }
    assert_eq!(asked.len(), 1024, "questions asked: {:?}", asked.last());
    // An answer makes room for one more question.
    let id: String = asked[0][2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    ws_send(&mut ws, &format!(r#"43{id}["answer"]"#)).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["ack-result","answer"]"#
    );
    ws_send(&mut ws, r#"42["request-ack","again"]"#).await;
    let ask = ws_recv_app_text(&mut ws).await;
    assert!(ask.ends_with(r#"["ack-request","again"]"#), "{ask}");
}

// ---- invalid packets: the connection closes -------------------------------------------------

#[tokio::test]
async fn reserved_event_names_close_the_connection() {
    let addr = spawn_conformance_server().await;
    for name in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        assert_closes(addr, &[text(&format!(r#"42["{name}"]"#))], name).await;
        assert_closes(addr, &[text(&format!(r#"421["{name}","x"]"#))], name).await;
    }
}

#[tokio::test]
async fn an_error_event_is_ignored() {
    // `error` is not reserved by the parser; the reference server ignores it (CVE-2024-38355
    // was a crash on it). It never reaches internal dispatch.
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    ws_send(&mut ws, r#"42["error"]"#).await;
    ws_send(&mut ws, r#"42["error","x"]"#).await;
    ws_send(&mut ws, r#"425["error",{"message":"boom"}]"#).await;
    ws_send(&mut ws, r#"42["message","still here"]"#).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"42["message-back","still here"]"#
    );
}

#[tokio::test]
async fn attachments_over_the_limit_close_the_connection() {
    let addr = spawn_conformance_server().await;
    let placeholders: Vec<String> = (0..11)
        .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
        .collect();
    let header = format!(r#"4511-["message",{}]"#, placeholders.join(","));
    assert_closes(addr, &[text(&header)], "11 attachments").await;
    // Closed on the header, before any attachment is buffered.
    assert_closes(addr, &[text(r#"455999999-["message"]"#)], "a huge count").await;
    assert_closes(
        addr,
        &[text(r#"4599999999999999999999-["message"]"#)],
        "an overflowing count",
    )
    .await;
    for bad in [
        "45",
        "451",
        "45a-[\"m\"]",
        "451.5-[\"m\"]",
        "45-1-[\"m\"]",
        "450-[\"message\"]",
    ] {
        assert_closes(addr, &[text(bad)], bad).await;
    }
}

#[tokio::test]
async fn placeholder_abuse_closes_the_connection() {
    // CVE-2022-2421 and its variants.
    let addr = spawn_conformance_server().await;
    let cases: &[&str] = &[
        r#"451-["message",{"_placeholder":true,"num":"splice"}]"#,
        r#"451-["message",{"_placeholder":true,"num":"0"}]"#,
        r#"451-["message",{"_placeholder":true,"num":1}]"#,
        r#"451-["message",{"_placeholder":true,"num":-1}]"#,
        r#"451-["message",{"_placeholder":true,"num":0.5}]"#,
        r#"451-["message",{"_placeholder":true,"num":null}]"#,
        r#"451-["message",{"_placeholder":"true","num":0}]"#,
        r#"451-["message",{"_placeholder":1,"num":0}]"#,
        r#"451-["message",{"_placeholder":true}]"#,
        r#"451-["message",{"_placeholder":true,"num":"__proto__"}]"#,
    ];
    for case in cases {
        assert_closes(
            addr,
            &[text(case), binary(b"world"), binary(b"again")],
            case,
        )
        .await;
    }
    // What only looks like a placeholder, beside a real one: nothing refers to the attachment.
    assert_closes(
        addr,
        &[
            text(r#"451-["message",{"_placeholder":false,"num":0}]"#),
            binary(b"world"),
        ],
        "an attachment nothing refers to",
    )
    .await;
}

#[tokio::test]
async fn what_only_looks_like_a_placeholder_is_passed_on_as_data() {
    // As with the reference parser: a packet without attachments has no placeholders, and in
    // one with attachments only `"_placeholder": true` marks one.
    let addr = spawn_conformance_server().await;
    let (mut ws, _, _) = connected(addr).await;
    for args in [
        r#"{"_placeholder":true,"num":0}"#,
        r#"{"_placeholder":false,"note":"user data"}"#,
        r#"{"meta":{"_placeholder":"yes"}}"#,
    ] {
        assert_echoed(&mut ws, args).await;
    }
    ws_send(
        &mut ws,
        r#"451-["message",{"_placeholder":false},{"_placeholder":true,"num":0}]"#,
    )
    .await;
    ws_send_binary(&mut ws, &[7]).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        r#"451-["message-back",{"_placeholder":false},{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws_recv_app_binary(&mut ws).await, [7]);
}

#[tokio::test]
async fn event_names_that_are_neither_string_nor_number_close_the_connection() {
    // CVE-2023-32695 and the same validator's other inputs.
    let addr = spawn_conformance_server().await;
    for case in [
        r#"42[{"toString":"foo"}]"#,
        r#"42[true,"foo"]"#,
        r#"42[null,"bar"]"#,
        r#"42[["message"]]"#,
        r#"42[]"#,
        r#"42{}"#,
        r#"42"message""#,
        r#"42"#,
        r#"42["message""#,
        r#"42["message"]trailing"#,
    ] {
        assert_closes(addr, &[text(case)], case).await;
    }
}

#[tokio::test]
async fn oversized_ack_ids_close_the_connection() {
    let addr = spawn_conformance_server().await;
    let huge = format!(r#"42{}["message-with-ack"]"#, "9".repeat(100_000));
    assert_closes(addr, &[text(&huge)], "100,000 ack id digits").await;
    assert_closes(
        addr,
        &[text(r#"429007199254740992["message-with-ack"]"#)],
        "2^53",
    )
    .await;
    assert_closes(
        addr,
        &[text(r#"4299999999999999999999["message-with-ack"]"#)],
        "over u64",
    )
    .await;
    assert_closes(addr, &[text(r#"431"x""#)], "an ack that is not an array").await;
}

#[tokio::test]
async fn text_while_attachments_are_pending_closes_the_connection() {
    let addr = spawn_conformance_server().await;
    assert_closes(
        addr,
        &[
            text(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#),
            binary(b"first"),
            text(r#"42["message","plain"]"#),
        ],
        "text between attachments",
    )
    .await;
    assert_closes(
        addr,
        &[
            text(r#"451-["message",{"_placeholder":true,"num":0}]"#),
            text(r#"451-["message",{"_placeholder":true,"num":0}]"#),
        ],
        "a second header before the attachment",
    )
    .await;
}

#[tokio::test]
async fn binary_frame_without_pending_packet_closes_the_connection() {
    let addr = spawn_conformance_server().await;
    assert_closes(addr, &[binary(&[1, 2, 3])], "stray binary").await;
    assert_closes_answering(
        addr,
        &[
            text(r#"451-["message",{"_placeholder":true,"num":0}]"#),
            binary(b"expected"),
            binary(b"one too many"),
        ],
        &[
            text(r#"451-["message-back",{"_placeholder":true,"num":0}]"#),
            binary(b"expected"),
        ],
        "an attachment too many",
    )
    .await;
    // Before any namespace is joined, too.
    let (mut ws, _) = engine(addr).await;
    ws_send_binary(&mut ws, &[1]).await;
    ws_expect_end(&mut ws, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn protocol_violations_around_connect_close_the_connection() {
    let addr = spawn_conformance_server().await;
    // A second CONNECT to a namespace already joined.
    assert_closes(addr, &[text("40")], "double connect").await;
    // A CONNECT_ERROR from the client.
    assert_closes(
        addr,
        &[text(r#"44{"message":"x"}"#)],
        "client CONNECT_ERROR",
    )
    .await;
    assert_closes(
        addr,
        &[text(r#"44["handle me please"]"#)],
        "client CONNECT_ERROR",
    )
    .await;
    // Unknown packet types and an empty Socket.IO packet.
    for bad in ["4", "47", "49", "4abc", "4hello", "45", "45woooot"] {
        assert_closes(addr, &[text(bad)], bad).await;
    }
    // An event for a namespace not joined.
    assert_closes(addr, &[text(r#"42/custom,["message"]"#)], "not joined").await;
    // A DISCONNECT with a payload, or for a namespace not joined.
    assert_closes(addr, &[text(r#"41{"x":1}"#)], "disconnect with payload").await;
    assert_closes(addr, &[text("41/admin,")], "disconnect not joined").await;
    // Before any CONNECT: an event, or a CONNECT whose payload is not an object.
    for bad in [
        "42[\"message\"]",
        "40\"invalid\"",
        "40[]",
        "40123",
        "40null",
    ] {
        let (mut ws, _) = engine(addr).await;
        ws_send(&mut ws, bad).await;
        let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
        assert!(end.messages.is_empty(), "{bad}: {end:?}");
    }
}
