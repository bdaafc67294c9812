//! Engine.IO v4 end to end, over real sockets, against the conformance server's echo application
//! on `/engine.io/` (pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000), and against
//! small servers built here where a setting has to differ (upgrade timeout, header-read timeout).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::client::*;
use common::{spawn_conformance_server, spawn_restricted_origin_server};
use serde_json::{Value, json};
use socketio_server::engineio::EngineConfig;
use socketio_server::server::HttpConfig;
use tokio_tungstenite::tungstenite::Message;

const E: &str = ENGINE_PATH;
const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);

fn handshake_keys(handshake: &Value) -> Vec<String> {
    let mut keys: Vec<String> = handshake
        .as_object()
        .expect("the handshake is a JSON object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[track_caller]
fn assert_handshake(handshake: &Value, upgrades: Value) {
    assert_eq!(
        handshake_keys(handshake),
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ],
        "exactly these keys: {handshake}"
    );
    assert_eq!(handshake["upgrades"], upgrades);
    assert_eq!(handshake["pingInterval"], json!(300));
    assert_eq!(handshake["pingTimeout"], json!(200));
    assert_eq!(handshake["maxPayload"], json!(1_000_000));
    assert_sid_shape(handshake["sid"].as_str().expect("sid is a string"));
}

#[track_caller]
fn assert_sid_shape(sid: &str) {
    assert!(sid.len() >= 20, "sid {sid:?} has fewer than 20 characters");
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "sid {sid:?} is not URL-safe"
    );
}

// ---- handshake ------------------------------------------------------------------------------

#[tokio::test]
async fn handshake_over_polling_has_exactly_the_protocol_keys() {
    let addr = spawn_conformance_server().await;
    let resp = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    // No cache may keep or replay a polling answer.
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let packets = resp.packets();
    assert_eq!(packets.len(), 1, "one open packet: {packets:?}");
    assert_handshake(&parse_open(&packets[0]), json!(["websocket"]));
}

#[tokio::test]
async fn handshake_over_websocket_has_exactly_the_protocol_keys() {
    let addr = spawn_conformance_server().await;
    let (mut ws, handshake) = ws_open(addr, E).await;
    assert_handshake(&handshake, json!([]));
    // The session works right away.
    ws_send(&mut ws, "4ready").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4ready");
}

#[tokio::test]
async fn session_ids_are_long_url_safe_and_unique() {
    let addr = spawn_conformance_server().await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let p = Polling::open(addr, E).await;
        assert_sid_shape(&p.sid);
        assert!(seen.insert(p.sid.clone()), "sid {} handed out twice", p.sid);
    }
    for _ in 0..10 {
        let (_ws, handshake) = ws_open(addr, E).await;
        let sid = handshake["sid"].as_str().expect("sid").to_owned();
        assert_sid_shape(&sid);
        assert!(seen.insert(sid.clone()), "sid {sid} handed out twice");
    }
}

// ---- error codes ----------------------------------------------------------------------------

#[tokio::test]
async fn error_code_0_transport_unknown() {
    let addr = spawn_conformance_server().await;
    for query in [
        "EIO=4",
        "EIO=4&transport=tobi",
        "EIO=4&transport=__proto__",
        "EIO=4&transport=constructor",
        "EIO=4&transport=webtransport",
        "EIO=4&transport=",
        "EIO=4&transport=Polling",
        // The transport is checked before the version.
        "EIO=3&transport=tobi",
    ] {
        let resp = get(addr, &format!("{E}?{query}")).await;
        resp.assert_engine_error(400, 0);
    }
}

#[tokio::test]
async fn error_code_1_session_id_unknown() {
    let addr = spawn_conformance_server().await;
    let well_formed = "AAAAAAAAAAAAAAAAAAAA";
    for sid in ["test", well_formed, "!!!!", "%41"] {
        let target = format!("{E}?EIO=4&transport=polling&sid={sid}");
        get(addr, &target).await.assert_engine_error(400, 1);
        post(addr, &target, b"4x").await.assert_engine_error(400, 1);
    }
    // A WebSocket naming an unknown session is refused too, before any upgrade.
    let (_, resp) = RawWs::connect_response(
        addr,
        &format!("{E}?EIO=4&transport=websocket&sid={well_formed}"),
        &[],
    )
    .await;
    resp.assert_engine_error(400, 1);
}

#[tokio::test]
async fn error_code_2_bad_handshake_method() {
    let addr = spawn_conformance_server().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let resp = request(
            addr,
            method,
            "/engine.io/?EIO=4&transport=polling",
            &[],
            b"40",
        )
        .await;
        resp.assert_engine_error(400, 2);
    }
}

#[tokio::test]
async fn error_code_3_bad_request() {
    let addr = spawn_conformance_server().await;
    // A WebSocket handshake without the upgrade headers.
    get(addr, "/engine.io/?EIO=4&transport=websocket")
        .await
        .assert_engine_error(400, 3);
    // The same on a polling session's id.
    let p = Polling::open(addr, E).await;
    get(addr, &p.websocket_target())
        .await
        .assert_engine_error(400, 3);
    // A method polling does not know.
    request(addr, "PUT", &p.target(), &[], b"4x")
        .await
        .assert_engine_error(400, 3);
    // The session was not harmed by any of this.
    p.post_ok(b"4still").await;
    assert_eq!(p.get_answering_pings().await, ["4still"]);
}

#[tokio::test]
async fn error_code_4_forbidden_origin_on_polling() {
    let addr = spawn_restricted_origin_server("http://allowed.example").await;
    let resp = request(
        addr,
        "GET",
        "/engine.io/?EIO=4&transport=polling",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    resp.assert_engine_error(403, 4);
    assert_ne!(
        resp.header("access-control-allow-origin"),
        Some("http://evil.example")
    );
    assert_ne!(resp.header("access-control-allow-origin"), Some("*"));
    // A near miss is no match.
    for origin in [
        "http://allowed.example.evil",
        "https://allowed.example",
        "http://allowed.example:80",
        "null",
    ] {
        request(
            addr,
            "GET",
            "/engine.io/?EIO=4&transport=polling",
            &[("Origin", origin)],
            b"",
        )
        .await
        .assert_engine_error(403, 4);
    }
    // Requests of an existing session from a forbidden origin are refused as well.
    let p = Polling::open(addr, E).await;
    request(
        addr,
        "POST",
        &p.target(),
        &[("Origin", "http://evil.example")],
        b"4x",
    )
    .await
    .assert_engine_error(403, 4);
}

#[tokio::test]
async fn error_code_5_unsupported_protocol_version() {
    let addr = spawn_conformance_server().await;
    for query in [
        "transport=polling",
        "EIO=3&transport=polling",
        "EIO=5&transport=polling",
        "EIO=abc&transport=polling",
        "EIO=04&transport=polling",
        "EIO=&transport=polling",
    ] {
        get(addr, &format!("{E}?{query}"))
            .await
            .assert_engine_error(400, 5);
    }
    let (_, resp) =
        RawWs::connect_response(addr, "/engine.io/?EIO=3&transport=websocket", &[]).await;
    resp.assert_engine_error(400, 5);
}

#[tokio::test]
async fn polling_post_over_max_payload_is_413_and_ends_the_session() {
    let addr = spawn_conformance_server().await;
    // Exactly maxPayload bytes are accepted and echoed.
    let p = Polling::open(addr, E).await;
    let mut body = vec![b'a'; 1_000_000];
    body[0] = b'4';
    p.post_ok(&body).await;
    let echoed = p.get_answering_pings().await;
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0].len(), 1_000_000);
    // One byte more is refused with 413 and the session is closed.
    body.push(b'a');
    let resp = p.post(&body).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    let after = p.get().await;
    if after.status == 200 {
        assert_eq!(
            after.packets(),
            ["1"],
            "the last poll carries the close packet"
        );
        p.assert_unknown().await;
    } else {
        after.assert_engine_error(400, 1);
    }
}

#[tokio::test]
async fn polling_post_over_max_payload_without_content_length_is_413() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // A chunked body: the limit must hold while the body is read, not only on the header.
    let mut conn = HttpConn::connect(addr).await;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        p.target()
    )
    .into_bytes();
    let chunk = vec![b'a'; 100_000];
    for _ in 0..11 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer before it read everything; a failed write is fine.
    let _ = conn.send_raw(&req).await;
    let resp = tokio::time::timeout(STEP, conn.read_response(false))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(resp.status, 413);
}

// ---- polling --------------------------------------------------------------------------------

/// The packets of a polling answer but the server's pings, which the short ping interval of
/// the conformance server may put among them.
fn without_pings(packets: Vec<String>) -> Vec<String> {
    packets.into_iter().filter(|p| p != "2").collect()
}

#[tokio::test]
async fn polling_batches_packets_both_ways() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // Client to server: three packets in one POST, handled in order.
    let posted = p.post("4one\u{1e}4two\u{1e}4thrée".as_bytes()).await;
    assert_eq!((posted.status, posted.text().as_str()), (200, "ok"));
    assert_eq!(posted.header("cache-control"), Some("no-store"));
    // Server to client: the three echoes come back in one payload.
    let resp = p.get().await;
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let packets = without_pings(resp.packets());
    assert_eq!(packets, ["4one", "4two", "4thrée"]);
    // Text and binary mixed, both ways.
    p.post_ok(b"4a\x1ebAQID\x1e4b").await;
    let packets = without_pings(p.get_packets().await);
    assert_eq!(packets, ["4a", "bAQID", "4b"]);
}

/// python-engineio's client drops the connection on an answer of more than 16 packets: the
/// sessions it opens (told by its HTTP library's user agent) get their packets 16 at a time,
/// in order; other clients get a burst in one answer.
#[tokio::test]
async fn a_python_client_gets_at_most_16_packets_per_poll() {
    let addr = spawn_conformance_server().await;
    let burst: Vec<String> = (0..40).map(|i| format!("4m{i}")).collect();
    for agent in ["python-requests/2.34.2", "Python/3.11 aiohttp/3.14.5"] {
        let p = Polling::open_with(addr, E, &[("User-Agent", agent)]).await;
        p.post_ok(burst.join("\u{1e}").as_bytes()).await;
        let mut echoed = Vec::new();
        let mut answers = 0;
        while echoed.len() < burst.len() {
            let packets = p.get_packets().await;
            assert!(packets.len() <= 16, "{agent}: {} packets", packets.len());
            if answers == 0 {
                assert_eq!(packets.len(), 16, "{agent}: the first answer is full");
            }
            answers += 1;
            echoed.extend(without_pings(packets));
        }
        assert_eq!(echoed, burst, "{agent}");
        assert!(answers >= 3, "{agent}: {answers} answers");
    }
    let p = Polling::open_with(addr, E, &[("User-Agent", "Mozilla/5.0")]).await;
    p.post_ok(burst.join("\u{1e}").as_bytes()).await;
    let packets = without_pings(p.get_packets().await);
    assert_eq!(packets, burst, "a browser's burst comes in one answer");
}

#[tokio::test]
async fn polling_get_waits_until_something_is_queued() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let pending = p.spawn_get();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "the GET waits for a packet");
    p.post_ok(b"4wake").await;
    let resp = released(pending).await;
    let packets = without_pings(resp.packets());
    assert_eq!(packets, ["4wake"]);
}

/// A client that gives up a pending GET (closes its connection) is gone, as the reference
/// server has it: its session ends at once, not at its ping timeout, and the next request
/// finds an unknown sid.
#[tokio::test]
async fn a_cancelled_poll_ends_the_session() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // Well before the session would die of its first unanswered ping (interval + timeout).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
    let mut conn = HttpConn::connect(addr).await;
    conn.write_request("GET", &p.target(), &[], b"")
        .await
        .expect("send the GET");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(conn);

    // POSTs, which a live session answers at once (a GET would take the pings).
    loop {
        let resp = p.post(b"4still there?").await;
        if resp.status == 400 {
            resp.assert_engine_error(400, 1);
            break;
        }
        assert_eq!(resp.status, 200, "{:?}", resp.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its cancelled poll"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn polling_binary_is_base64_both_ways() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // [0, 1, 2, 255, 254] is AAEC//4=.
    p.post_ok(b"bAAEC//4=").await;
    assert_eq!(p.get_answering_pings().await, ["bAAEC//4="]);
    // The echo of a polling binary is binary over WebSocket too: checked on the same bytes.
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send_binary(&mut ws, &[0, 1, 2, 255, 254]).await;
    assert_eq!(ws_recv_app_binary(&mut ws).await, [0, 1, 2, 255, 254]);
    // Invalid base64 is a parse error that ends the session: with no poll in flight to carry
    // the close packet, the sid is unknown at once.
    let resp = p.post(b"b!!!").await;
    assert_eq!(resp.status, 400);
    p.get().await.assert_engine_error(400, 1);
}

/// Java's engine.io-client sends binary over polling with Android's `Base64.DEFAULT`: a line
/// break after every 76 characters and at the end, which Node's server ignores.
#[tokio::test]
async fn polling_binary_from_the_java_client_keeps_its_line_breaks() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // [1, 2, 3], exactly as the Java client posts it.
    p.post_ok(b"bAQID\n").await;
    assert_eq!(p.get_answering_pings().await, ["bAQID"]);
    // Bytes 0 to 99, in two lines, and a text packet after it in the same POST.
    let coded = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\
                 OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==";
    let java: String = coded
        .as_bytes()
        .chunks(76)
        .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
        .collect();
    assert_eq!(java.matches('\n').count(), 2);
    p.post_ok(format!("b{java}\u{1e}4after").as_bytes()).await;
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        echoed.extend(p.get_answering_pings().await);
    }
    assert_eq!(echoed, [format!("b{coded}"), "4after".to_owned()]);
    // The session is still open.
    p.post_ok(b"4still here").await;
    assert_eq!(p.get_answering_pings().await, ["4still here"]);
}

#[tokio::test]
async fn a_parse_error_hands_the_close_packet_to_a_pending_poll() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let pending = p.pending_get().await;
    assert_eq!(p.post(b"abc").await.status, 400);
    let released = released(pending).await;
    assert_eq!(released.packets(), ["1"]);
    p.assert_unknown().await;
}

#[tokio::test]
async fn websocket_carries_text_and_binary_frames() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send(&mut ws, "4héllo wörld ✓").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4héllo wörld ✓");
    let bytes: Vec<u8> = (0..=255).collect();
    ws_send_binary(&mut ws, &bytes).await;
    // A binary packet is a binary frame, with no `b` prefix and no base64.
    assert_eq!(ws_recv_app_binary(&mut ws).await, bytes);
    ws_send_binary(&mut ws, &[]).await;
    assert_eq!(ws_recv_app_binary(&mut ws).await, Vec::<u8>::new());
}

#[tokio::test]
async fn large_messages_and_what_follows_them_in_the_same_read_arrive_whole_and_in_order() {
    // After a message with a frame over 8 KiB the connection gets a fresh WebSocket context
    // (tungstenite would keep the buffer it grew for that frame): nothing sent behind it in the
    // same write may be lost or reordered, pings included, whether the message came whole or in
    // fragments.
    let addr = spawn_quiet_engine_echo().await;
    let mut ws = RawWs::connect(addr, "/engine.io/?EIO=4&transport=websocket").await;
    let open = ws.read_frame().await.expect("open packet");
    assert!(open.text().starts_with("0{"));
    let big = format!("4{}", "a".repeat(100_000));
    let fragmented = format!("4{}", "é".repeat(20_000));
    for round in 0..3 {
        let mut bytes = masked(op::FIN | op::TEXT, big.as_bytes());
        bytes.extend(masked(
            op::FIN | op::TEXT,
            format!("4after-big-{round}").as_bytes(),
        ));
        bytes.extend(masked(op::FIN | op::PING, b"p1"));
        let (head, tail) = fragmented.as_bytes().split_at(30_001);
        bytes.extend(masked(op::TEXT, head));
        bytes.extend(masked(op::FIN | op::PING, b"p2"));
        bytes.extend(masked(op::FIN | op::CONT, tail));
        bytes.extend(masked(op::FIN | op::BINARY, &[round, 1, 2, 3]));
        bytes.extend(masked(op::FIN | op::TEXT, b"4last"));
        ws.send_raw(&bytes).await.expect("write");
        let mut texts = Vec::new();
        let mut pongs = Vec::new();
        let mut binary = Vec::new();
        while texts.len() < 4 || pongs.len() < 2 || binary.is_empty() {
            let f = ws.read_frame().await.expect("a frame");
            match f.opcode() {
                op::TEXT => texts.push(f.text()),
                op::PONG => pongs.push(f.payload.clone()),
                op::BINARY => binary.push(f.payload.clone()),
                other => panic!("round {round}: unexpected opcode {other}"),
            }
        }
        assert_eq!(texts.len(), 4, "round {round}");
        assert!(texts[0] == big, "round {round}: the large message");
        assert_eq!(texts[1], format!("4after-big-{round}"));
        assert!(
            texts[2] == fragmented,
            "round {round}: the fragmented message"
        );
        assert_eq!(texts[3], "4last");
        assert_eq!(pongs, [b"p1".to_vec(), b"p2".to_vec()]);
        assert_eq!(binary, [vec![round, 1, 2, 3]]);
    }
    // The session goes on as before.
    ws.send_text("4still").await.expect("write");
    let f = ws.read_frame().await.expect("echo");
    assert_eq!(f.text(), "4still");
}

#[tokio::test]
async fn a_client_that_asks_for_base64_gets_binary_as_text_over_websocket() {
    // engine.io-client's `forceBase64` adds `b64=1`, for clients that cannot take binary frames.
    let addr = spawn_conformance_server().await;
    let mut ws = ws_connect(addr, &format!("{E}?EIO=4&transport=websocket&b64=1")).await;
    assert!(ws_recv_text(&mut ws).await.starts_with("0{"));
    ws_send_binary(&mut ws, &[1, 2, 3, 4]).await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "bAQIDBA==");
    // It may send binary as text too, and text stays text.
    ws_send(&mut ws, "bAQID").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "bAQID");
    ws_send(&mut ws, "4text").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4text");
    // So does a session that upgrades with it.
    let p = Polling::open(addr, E).await;
    let target = format!("{}&b64=1", p.websocket_target());
    let mut ws = RawWs::connect(addr, &target).await;
    ws.send_text("2probe").await.expect("probe");
    assert_eq!(ws.read_frame().await.expect("3probe").text(), "3probe");
    ws.send_text("5").await.expect("upgrade");
    ws.send_raw(&masked(op::FIN | op::BINARY, &[9, 8, 7]))
        .await
        .expect("write");
    let echo = ws.read_app_frame().await.expect("echo");
    assert_eq!((echo.opcode(), echo.text()), (op::TEXT, "bCQgH".to_owned()));
}

#[tokio::test]
async fn websocket_pings_are_answered_in_order_amid_a_backlog() {
    use futures_util::{SinkExt, StreamExt};

    let addr = spawn_quiet_engine_echo().await;
    let (ws, _) = ws_open(addr, E).await;
    let (mut tx, mut rx) = ws.split();
    // 9 MB of echoes: more than the socket buffers take while the client does not read, so the
    // server's writes, and the pongs among them, wait for the client.
    let big = format!("4{}", "x".repeat(60_000));
    let (messages, every) = (150, 10);
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        for i in 1..=messages {
            tx.send(Message::text(sent.clone())).await.unwrap();
            if i % every == 0 {
                tx.send(Message::Ping(format!("p{i}").into()))
                    .await
                    .unwrap();
            }
        }
        tx
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut echoes, mut pongs) = (0, Vec::new());
    while echoes < messages || pongs.len() < messages / every {
        match tokio::time::timeout(STEP, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                assert_eq!(t.as_str(), big, "echo {echoes}");
                echoes += 1;
            }
            Ok(Some(Ok(Message::Pong(p)))) => pongs.push(String::from_utf8_lossy(&p).into_owned()),
            other => panic!("after {echoes} echoes and pongs {pongs:?}: {other:?}"),
        }
    }
    let expected: Vec<String> = (1..=messages / every)
        .map(|k| format!("p{}", k * every))
        .collect();
    assert_eq!(pongs, expected);
    let _tx = writer.await.unwrap();
}

// ---- heartbeat ------------------------------------------------------------------------------

#[tokio::test]
async fn heartbeat_over_polling_pings_every_interval_not_at_once() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    for round in 0..3 {
        let start = Instant::now();
        let packets = p.get_packets().await;
        let since_open = p.opened.elapsed();
        assert_eq!(packets, ["2"], "round {round}");
        if round == 0 {
            assert!(
                since_open >= PING_INTERVAL - Duration::from_millis(30),
                "the first ping came {since_open:?} after the handshake"
            );
        } else {
            assert!(
                start.elapsed() >= Duration::from_millis(150),
                "a ping {:?} after the pong",
                start.elapsed()
            );
        }
        assert!(start.elapsed() < Duration::from_millis(1200), "ping late");
        p.post_ok(b"3").await;
    }
}

#[tokio::test]
async fn heartbeat_over_websocket_pings_every_interval_not_at_once() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    let opened = Instant::now();
    let mut last = opened;
    for round in 0..3 {
        assert_eq!(ws_recv_text(&mut ws).await, "2", "round {round}");
        let gap = last.elapsed();
        assert!(
            gap >= PING_INTERVAL - Duration::from_millis(30),
            "round {round}: a ping {gap:?} after the previous one"
        );
        assert!(
            gap < Duration::from_millis(1200),
            "round {round}: ping late"
        );
        last = Instant::now();
        ws_send(&mut ws, "3").await;
    }
}

#[tokio::test]
async fn ping_timeout_over_polling_closes_the_session() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    assert_eq!(p.get_packets().await, ["2"]);
    let pinged = Instant::now();
    // No pong: the pending GET gets the close packet once pingTimeout is over.
    let packets = p.get_packets().await;
    let waited = pinged.elapsed();
    assert_eq!(packets, ["1"]);
    assert!(
        waited >= PING_TIMEOUT - Duration::from_millis(50),
        "closed {waited:?} after the ping"
    );
    assert!(
        waited < Duration::from_millis(1000),
        "closed late: {waited:?}"
    );
    p.assert_unknown().await;
}

#[tokio::test]
async fn a_silent_polling_client_is_unknown_once_its_pong_is_overdue() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    // The pong to the first ping is due pingInterval + pingTimeout after the handshake, counted
    // by the server from before it answered: a client counting from the answer finds the
    // session gone, and its queued ping with it.
    tokio::time::sleep(PING_INTERVAL + PING_TIMEOUT).await;
    p.get().await.assert_engine_error(400, 1);
}

#[tokio::test]
async fn ping_timeout_over_websocket_closes_the_session() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(2)).await;
    let ping_count = end
        .messages
        .iter()
        .filter(|m| matches!(m, Message::Text(t) if t.as_str() == "2"))
        .count();
    assert_eq!(ping_count, 1, "one unanswered ping, then the end: {end:?}");
    assert!(
        end.after >= PING_INTERVAL + PING_TIMEOUT - Duration::from_millis(60),
        "closed after {:?}",
        end.after
    );
}

/// How long after a ping a session that never answered it ends, when the client sent a packet
/// `first` after the ping and then one every 50 ms: Node's server counts the first packet as a
/// sign of life (the pong may be behind it), once, and the others not.
const FIRST_PACKET_AFTER_PING: Duration = Duration::from_millis(100);

/// The bounds a session's end must fall in, counted from the ping: after the deadline that the
/// first packet moved (less a little timer slack), and well before a deadline that every packet
/// moved would allow (never, for a client sending every 50 ms).
fn assert_ended_once_extended(after_ping: Duration) {
    let moved = FIRST_PACKET_AFTER_PING + PING_TIMEOUT;
    assert!(
        after_ping >= moved - Duration::from_millis(40) && after_ping < moved + PING_INTERVAL,
        "ended {after_ping:?} after the ping; the first packet moved its pong's deadline to {moved:?}"
    );
}

#[tokio::test]
async fn a_client_that_sends_but_never_answers_a_ping_gets_one_more_timeout() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    let pinged = match ws_next(&mut ws).await {
        Some(Message::Text(t)) if t.as_str() == "2" => Instant::now(),
        other => panic!("expected a ping, got {other:?}"),
    };
    tokio::time::sleep(FIRST_PACKET_AFTER_PING).await;
    let ended = 'sending: loop {
        ws_send(&mut ws, "4still here").await;
        loop {
            match tokio::time::timeout(Duration::from_millis(50), ws_next(&mut ws)).await {
                Ok(Some(Message::Text(t))) => assert_eq!(t.as_str(), "4still here"),
                Ok(_) => break 'sending pinged.elapsed(),
                Err(_) => break,
            }
        }
        assert!(
            pinged.elapsed() < 3 * (PING_INTERVAL + PING_TIMEOUT),
            "a client that never answers a ping was kept alive by its other packets"
        );
    };
    assert_ended_once_extended(ended);
}

#[tokio::test]
async fn a_polling_client_that_sends_but_never_answers_a_ping_gets_one_more_timeout() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    assert_eq!(p.get_packets().await, ["2"]);
    let pinged = Instant::now();
    tokio::time::sleep(FIRST_PACKET_AFTER_PING).await;
    let ended = loop {
        if p.post(b"4still here").await.status != 200 {
            break pinged.elapsed();
        }
        assert!(
            pinged.elapsed() < 3 * (PING_INTERVAL + PING_TIMEOUT),
            "a client that never answers a ping was kept alive by its other packets"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Seen at the first POST after the end: up to 50 ms and a request late, which the bound
    // after the deadline allows for.
    assert_ended_once_extended(ended);
}

#[tokio::test]
async fn websocket_ping_frame_does_not_count_as_a_pong() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _sid) = RawWs::open_engine(addr, E).await;
    let start = Instant::now();
    let mut pongs = 0;
    let mut pings = 0;
    // Keep the WebSocket busy with protocol-level pings, never answering the Engine.IO ping.
    // Paced, so the server's message-rate limit stays out of the picture.
    let end = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ws.send(op::FIN | op::PING, b"hb").await.ok();
        let frame = tokio::time::timeout(Duration::from_millis(50), ws.read_frame()).await;
        match frame {
            Ok(Some(f)) if f.opcode() == op::PONG => {
                assert_eq!(f.payload, b"hb");
                pongs += 1;
            }
            Ok(Some(f)) if f.opcode() == op::TEXT && f.payload == b"2" => pings += 1,
            Ok(Some(f)) if f.opcode() == op::CLOSE => break Some(f),
            Ok(Some(f)) => panic!("unexpected frame {f:?}"),
            Ok(None) => break None,
            Err(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the session outlived its ping timeout"
        );
    };
    let close = end.expect("a close frame, not a dropped connection");
    assert!(
        close.payload.is_empty(),
        "a close frame without a code after the timeout, as the reference server's: {close:?}"
    );
    assert!(pongs > 0, "WebSocket pings are answered with pongs");
    assert_eq!(pings, 1, "exactly one Engine.IO ping before the timeout");
    assert!(start.elapsed() >= PING_INTERVAL + PING_TIMEOUT - Duration::from_millis(60));
}

#[tokio::test]
async fn a_ping_from_the_client_ends_the_session() {
    // In v4 only the server pings.
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send(&mut ws, "2").await;
    ws_expect_end(&mut ws, Duration::from_secs(1)).await;
}

// ---- close ----------------------------------------------------------------------------------

#[tokio::test]
async fn close_from_the_client_over_polling() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let pending = p.pending_get().await;
    p.post_ok(b"1").await;
    let released = tokio::time::timeout(STEP, pending)
        .await
        .expect("the pending GET is released")
        .expect("GET task")
        .packets();
    assert!(
        released == ["6"] || released == ["1"],
        "the pending GET gets a noop or close: {released:?}"
    );
    p.assert_unknown().await;
    post(addr, &p.target(), b"4x")
        .await
        .assert_engine_error(400, 1);
}

#[tokio::test]
async fn a_get_crossing_the_clients_close_gets_a_noop() {
    // A client may start a GET as it sends its close packet; the close can arrive first. The
    // reference server answers that GET as a pending one (a noop), not with an unknown sid;
    // the official test suite sends the two at once.
    let addr = spawn_conformance_server().await;
    for round in 0..10 {
        let p = Polling::open(addr, E).await;
        let closed = p.post(b"1").await;
        assert_eq!((closed.status, closed.text()), (200, "ok".to_owned()));
        let crossing = p.get().await;
        assert_eq!(crossing.status, 200, "round {round}: {crossing:?}");
        assert_eq!(crossing.packets(), ["6"], "round {round}");
        // One such GET only: the session is gone.
        p.assert_unknown().await;
    }
    // Also when the two are sent at once.
    for round in 0..10 {
        let p = Polling::open(addr, E).await;
        let (crossing, closed) = tokio::join!(p.get(), p.post(b"1"));
        assert_eq!((closed.status, closed.text()), (200, "ok".to_owned()));
        assert_eq!(crossing.status, 200, "round {round}: {crossing:?}");
        assert_eq!(crossing.packets(), ["6"], "round {round}");
        p.assert_unknown().await;
    }
}

#[tokio::test]
async fn close_from_the_client_over_websocket() {
    let addr = spawn_conformance_server().await;
    let (mut ws, handshake) = ws_open(addr, E).await;
    ws_send(&mut ws, "1").await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    assert!(end.messages.is_empty(), "{end:?}");
    let sid = handshake["sid"].as_str().expect("sid");
    get(addr, &format!("{E}?EIO=4&transport=polling&sid={sid}"))
        .await
        .assert_engine_error(400, 1);
}

#[tokio::test]
async fn a_close_frame_is_answered_even_with_packets_still_queued() {
    // The client's message and its close frame arrive together: the echo is queued when the
    // close frame is read. The echo is dropped (the client reads no more), the reply to the
    // close frame is not (RFC 6455 §5.5.1: without it a browser reports an unclean close).
    let addr = spawn_conformance_server().await;
    for round in 0..20 {
        let mut ws = RawWs::connect(addr, "/engine.io/?EIO=4&transport=websocket").await;
        assert!(
            ws.read_frame()
                .await
                .expect("open")
                .text()
                .starts_with("0{")
        );
        let mut bytes = masked(op::FIN | op::TEXT, b"4hi");
        bytes.extend(masked(op::FIN | op::CLOSE, &1000u16.to_be_bytes()));
        ws.send_raw(&bytes).await.expect("write");
        let end = ws.expect_failure(Duration::from_secs(2)).await;
        assert!(matches!(end, RawEnd::Close(1000)), "round {round}: {end:?}");
    }
}

#[tokio::test]
async fn close_from_the_server_over_polling() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let pending = p.pending_get().await;
    p.post_ok(b"4close-me").await;
    let released = tokio::time::timeout(STEP, pending)
        .await
        .expect("the pending GET is released")
        .expect("GET task")
        .packets();
    assert_eq!(released, ["1"], "the close packet");
    p.assert_unknown().await;
}

#[tokio::test]
async fn close_from_the_server_over_websocket() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send(&mut ws, "4before").await;
    ws_send(&mut ws, "4close-me").await;
    ws_send(&mut ws, "4after").await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    let texts: Vec<String> = end
        .messages
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) if t.as_str() != "2" => Some(t.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["4before"], "nothing is handled after the close");
}

// ---- upgrade --------------------------------------------------------------------------------

/// GETs until the answer holds the noop, answering pings; panics on anything else.
async fn poll_until_noop(p: &Polling, first: HttpResponse) {
    let mut resp = first;
    loop {
        let packets = resp.packets();
        assert!(
            packets.iter().all(|p| p == "2" || p == "6"),
            "only pings and the noop during the upgrade: {packets:?}"
        );
        if packets.iter().any(|p| p == "2") {
            p.post_ok(b"3").await;
        }
        if packets.iter().any(|p| p == "6") {
            return;
        }
        resp = p.get().await;
    }
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let pending = p.pending_get().await;
    let mut ws = p.probed_websocket().await;
    // The pending GET is released with a noop, and so is any GET during the upgrade.
    let released = released(pending).await;
    poll_until_noop(&p, released).await;
    poll_until_noop(&p, p.get().await).await;
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4over websocket").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4over websocket");
    // Polling is over for this session.
    p.get().await.assert_engine_error(400, 3);
    p.post(b"4x").await.assert_engine_error(400, 3);
    // A second WebSocket for the same session is accepted and closed at once, before any
    // packet, as by the reference server.
    let (mut second, resp) = RawWs::connect_response(addr, &p.websocket_target(), &[]).await;
    assert_eq!(resp.status, 101);
    let frame = second.read_frame().await.expect("a close frame");
    assert_eq!(frame.opcode(), 0x8, "{:?}", frame.text());
    // The heartbeat goes on over the WebSocket.
    let start = Instant::now();
    match ws_next(&mut ws).await {
        Some(Message::Text(t)) if t.as_str() == "2" => {}
        other => panic!("expected a ping over the WebSocket, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_millis(1000));
    ws_send(&mut ws, "3").await;
    ws_send(&mut ws, "4still").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4still");
}

#[tokio::test]
async fn packets_queued_during_the_upgrade_arrive_in_order_over_websocket() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let mut ws = p.probed_websocket().await;
    poll_until_noop(&p, p.get().await).await;
    // Produced while the upgrade is under way: queued, not lost.
    p.post_ok("4m1\u{1e}4m2\u{1e}bAQID\u{1e}4m3".as_bytes())
        .await;
    p.post_ok(b"4m4").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4m5").await;
    let mut got = Vec::new();
    while got.len() < 6 {
        match ws_recv_app(&mut ws).await {
            Message::Text(t) => got.push(t.as_str().to_owned()),
            Message::Binary(b) => got.push(format!("binary {:?}", b.as_ref())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["4m1", "4m2", "binary [1, 2, 3]", "4m3", "4m4", "4m5"]);
}

#[tokio::test]
async fn upgrade_that_never_completes_times_out_and_polling_goes_on() {
    let addr = spawn_engine_echo(
        EngineConfig {
            upgrade_timeout: Duration::from_millis(500),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            ..EngineConfig::default()
        },
        HttpConfig::default(),
    )
    .await;
    // Probed but never completed.
    let p = Polling::open(addr, E).await;
    let mut ws = p.probed_websocket().await;
    let start = Instant::now();
    let end = ws_expect_end(&mut ws, Duration::from_secs(3)).await;
    assert!(
        end.after >= Duration::from_millis(350),
        "dropped after {:?}, before the upgrade timeout",
        end.after
    );
    assert!(start.elapsed() < Duration::from_millis(2000));
    // The session is still a polling session.
    p.post_ok(b"4still polling").await;
    assert_eq!(p.get_packets().await, ["4still polling"]);

    // Connected but never probed.
    let p = Polling::open(addr, E).await;
    let mut ws = p.websocket().await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(3)).await;
    assert!(end.after >= Duration::from_millis(350));
    p.post_ok(b"4again").await;
    assert_eq!(p.get_packets().await, ["4again"]);
    // And the session can still upgrade afterwards.
    let mut ws = p.probed_websocket().await;
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4upgraded").await;
    assert_eq!(ws_recv_text(&mut ws).await, "4upgraded");
}

#[tokio::test]
async fn a_poll_sent_right_after_an_upgrade_is_refused() {
    let addr = spawn_conformance_server().await;
    // `2probe` and `5` back to back, then a GET on another connection: whichever reaches the
    // server first, the GET is refused as one for an upgraded session, never answered as if the
    // session were still polling.
    for _ in 0..20 {
        let p = Polling::open(addr, E).await;
        let mut ws = p.websocket().await;
        ws_send(&mut ws, "2probe").await;
        ws_send(&mut ws, "5").await;
        p.get().await.assert_engine_error(400, 3);
        assert_eq!(ws_recv_text(&mut ws).await, "3probe");
        ws_send(&mut ws, "4moved").await;
        assert_eq!(ws_recv_app_text(&mut ws).await, "4moved");
    }
    // A GET that was pending before the probe is let go the same way.
    let p = Polling::open(addr, E).await;
    let pending = p.pending_get().await;
    let mut ws = p.websocket().await;
    ws_send(&mut ws, "2probe").await;
    ws_send(&mut ws, "5").await;
    let released = released(pending).await;
    assert!(
        released.status == 400 || released.packets() == ["6"],
        "{} {}",
        released.status,
        released.text()
    );
    assert_eq!(ws_recv_text(&mut ws).await, "3probe");
}

#[tokio::test]
async fn upgrade_with_a_bad_probe_keeps_the_session_on_polling() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let mut ws = p.websocket().await;
    // A pong where the probe belongs (`5` would move the session without a probe, as in Node).
    ws_send(&mut ws, "3probe").await;
    ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    p.post_ok(b"4x").await;
    assert_eq!(p.get_answering_pings().await, ["4x"]);
}

#[tokio::test]
async fn probes_are_answered_again_but_not_without_end() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let mut ws = p.websocket().await;
    for _ in 0..16 {
        ws_send(&mut ws, "2probe").await;
        assert_eq!(ws_recv_text(&mut ws).await, "3probe");
    }
    ws_send(&mut ws, "2probe").await;
    ws_expect_end(&mut ws, Duration::from_secs(1)).await;
    p.post_ok(b"4x").await;
    assert_eq!(p.get_answering_pings().await, ["4x"]);
}

// ---- overlapping requests -------------------------------------------------------------------

#[tokio::test]
async fn overlapping_gets_close_the_session() {
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let first = p.pending_get().await;
    let second = p.get().await;
    assert_eq!(second.status, 400, "{}", second.text());
    let first = released(first).await;
    assert_eq!(
        first.packets(),
        ["1"],
        "the pending GET gets the close packet"
    );
    p.assert_unknown().await;
}

// ---- maxPayload over WebSocket --------------------------------------------------------------

#[tokio::test]
async fn websocket_message_over_max_payload_closes_with_1009() {
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, E).await;
    let mut text = "a".repeat(1_000_000);
    text.replace_range(0..1, "4");
    ws_send(&mut ws, &text).await;
    let echoed = ws_recv_app_text(&mut ws).await;
    assert_eq!(echoed.len(), 1_000_000, "exactly maxPayload is accepted");
    text.push('b');
    ws_send(&mut ws, &text).await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(end.code, Some(1009), "{end:?}");
    // Binary has the same limit.
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send_binary(&mut ws, &vec![7u8; 1_000_001]).await;
    let end = ws_expect_end(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(end.code, Some(1009), "{end:?}");
}

/// The rest of an oversized message is read and dropped rather than left unread: the kernel
/// resets a socket closed with bytes unread, and a reset can cost the client the close frame
/// it has not read yet. Here the client sends the whole message and never answers the close.
#[tokio::test]
async fn websocket_message_over_max_payload_ends_without_a_reset() {
    let addr = spawn_conformance_server().await;
    for _ in 0..3 {
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let text = format!("4{}", "a".repeat(1_000_000));
        // The write may fail if the server resets the connection under it.
        let _ = ws.send_text(&text).await;
        let close = loop {
            let frame = ws.read_frame().await.expect("a close frame, not a reset");
            if frame.opcode() == op::CLOSE {
                break frame;
            }
        };
        assert_eq!(close.close_code(), Some(1009));
        ws.end_of_stream(Duration::from_secs(3))
            .await
            .expect("an orderly end of the stream, not a reset");
    }
}

// ---- CORS and origins -----------------------------------------------------------------------

/// A polling session's handshake, a POST and the GET that reads it back, each with
/// `Origin: origin`: their answers.
async fn polling_from(addr: std::net::SocketAddr, origin: &str) -> [HttpResponse; 3] {
    let from = [("Origin", origin)];
    let hs = request(
        addr,
        "GET",
        &format!("{E}?EIO=4&transport=polling"),
        &from,
        b"",
    )
    .await;
    assert_eq!(hs.status, 200, "{origin}");
    let sid = parse_open(&hs.packets()[0])["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let target = format!("{E}?EIO=4&transport=polling&sid={sid}");
    let posted = request(addr, "POST", &target, &from, b"4cors").await;
    assert_eq!((posted.status, posted.text().as_str()), (200, "ok"));
    let polled = request(addr, "GET", &target, &from, b"").await;
    let packets = without_pings(polled.packets());
    assert_eq!(packets, ["4cors"]);
    [hs, posted, polled]
}

#[tokio::test]
async fn cors_preflight_and_exact_origin_with_credentials() {
    let addr = spawn_conformance_server().await;
    let origin = "http://client.example:8080";
    let resp = request(
        addr,
        "OPTIONS",
        "/engine.io/?EIO=4&transport=polling",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type, x-custom"),
        ],
        b"",
    )
    .await;
    assert!(
        resp.status == 204 || resp.status == 200,
        "preflight {}",
        resp.status
    );
    assert_eq!(resp.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = resp
        .header("access-control-allow-methods")
        .expect("allowed methods");
    for m in ["GET", "POST"] {
        assert!(methods.split(',').any(|t| t.trim() == m), "{methods}");
    }
    let headers = resp
        .header("access-control-allow-headers")
        .expect("allowed headers")
        .to_ascii_lowercase();
    assert!(headers.contains("content-type") && headers.contains("x-custom"));
    assert!(resp.body.is_empty());

    // Every answer echoes the exact origin, never `*` with credentials.
    for resp in polling_from(addr, origin).await {
        assert_eq!(resp.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            resp.header("access-control-allow-credentials"),
            Some("true")
        );
    }
    // Errors carry the CORS headers too, so that a browser can read them.
    let err = request(
        addr,
        "GET",
        "/engine.io/?EIO=4&transport=tobi",
        &[("Origin", origin)],
        b"",
    )
    .await;
    err.assert_engine_error(400, 0);
    assert_eq!(err.header("access-control-allow-origin"), Some(origin));
    // Without an Origin there is nothing to echo.
    let plain = get(addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_ne!(plain.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn by_default_every_origin_is_allowed_without_credentials() {
    let addr = spawn_engine_echo(EngineConfig::default(), HttpConfig::default()).await;
    let origin = "http://elsewhere.example";
    let preflight = request(
        addr,
        "OPTIONS",
        "/engine.io/?EIO=4&transport=polling",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(preflight.header("access-control-allow-credentials"), None);
    assert!(preflight.header("access-control-allow-methods").is_some());
    // The allowed headers echo the requested ones: caches must tell requests apart by them.
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(
        preflight.header("vary"),
        Some("Access-Control-Request-Headers")
    );
    // Every answer says `*`, so a browser sends no cookies with these requests and lets no page
    // read an answer to a request that carried some.
    for resp in polling_from(addr, origin).await {
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert_eq!(resp.header("access-control-allow-credentials"), None);
    }
    // WebSocket from any origin.
    let ws = ws_connect_with(
        addr,
        "/engine.io/?EIO=4&transport=websocket",
        &[("Origin", origin)],
    )
    .await;
    assert!(ws.is_ok(), "any origin may use WebSocket");
}

#[tokio::test]
async fn restricted_origin_preflight_only_names_the_allowed_origin() {
    let allowed = "http://allowed.example";
    let addr = spawn_restricted_origin_server(allowed).await;
    let ok = request(
        addr,
        "OPTIONS",
        "/engine.io/?EIO=4&transport=polling",
        &[
            ("Origin", allowed),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(ok.header("access-control-allow-origin"), Some(allowed));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let evil = request(
        addr,
        "OPTIONS",
        "/engine.io/?EIO=4&transport=polling",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert!(evil.status < 500);
    let acao = evil.header("access-control-allow-origin");
    assert!(
        acao.is_none() || acao == Some(allowed),
        "a forbidden origin is never allowed: {acao:?}"
    );
    // The allowed origin and requests without Origin get sessions.
    let hs = request(
        addr,
        "GET",
        "/engine.io/?EIO=4&transport=polling",
        &[("Origin", allowed)],
        b"",
    )
    .await;
    assert_eq!(hs.status, 200);
    assert_eq!(hs.header("access-control-allow-origin"), Some(allowed));
    assert_eq!(
        get(addr, "/engine.io/?EIO=4&transport=polling")
            .await
            .status,
        200
    );
    let ws = ws_connect_with(
        addr,
        "/engine.io/?EIO=4&transport=websocket",
        &[("Origin", allowed)],
    )
    .await;
    assert!(ws.is_ok(), "the allowed origin may use WebSocket");
}

#[tokio::test]
async fn forbidden_origin_is_refused_on_the_websocket_handshake() {
    let addr = spawn_restricted_origin_server("http://allowed.example").await;
    for target in [
        "/engine.io/?EIO=4&transport=websocket",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let (mut ws, resp) =
            RawWs::connect_response(addr, target, &[("Origin", "http://evil.example")]).await;
        assert!(
            resp.status == 403 || resp.status == 400,
            "{target}: a WebSocket from a forbidden origin got {}",
            resp.status
        );
        if resp.status == 403 {
            resp.assert_engine_error(403, 4);
        }
        // No WebSocket follows: the connection ends, so that frames the client may send right
        // away are never read as further requests.
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(
            ws.closed_within(Duration::from_secs(1)).await,
            "the connection of a refused handshake is closed"
        );
    }
    // Upgrading an existing session from a forbidden origin is refused as well.
    let p = Polling::open(addr, E).await;
    let (_ws, resp) = RawWs::connect_response(
        addr,
        &p.websocket_target(),
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert!(resp.status == 403 || resp.status == 400, "{}", resp.status);
}

#[tokio::test]
async fn an_origin_with_a_websocket_scheme_is_not_a_browser_and_is_let_in() {
    // The Swift client's WebSocket sends its own URL as the origin.
    let addr = spawn_restricted_origin_server("http://allowed.example").await;
    let own = format!("ws://{addr}");
    for origin in [own.as_str(), "wss://elsewhere.example"] {
        let (mut ws, resp) = RawWs::connect_response(
            addr,
            "/engine.io/?EIO=4&transport=websocket",
            &[("Origin", origin)],
        )
        .await;
        assert_eq!(resp.status, 101, "origin {origin}");
        let open = ws.read_frame().await.expect("the open packet");
        assert!(open.text().starts_with("0{"), "origin {origin}");
    }
    // Over polling as well, and a browser's foreign origin is still refused.
    polling_from(addr, &own).await;
    let evil = [("Origin", "http://evil.example")];
    let refused = request(
        addr,
        "GET",
        &format!("{E}?EIO=4&transport=polling"),
        &evil,
        b"",
    )
    .await;
    refused.assert_engine_error(403, 4);
}

// ---- routing and HTTP limits ----------------------------------------------------------------

#[tokio::test]
async fn requests_for_other_paths_get_404() {
    let addr = spawn_conformance_server().await;
    for target in [
        "/",
        "/foo",
        "/engine.iox/?EIO=4&transport=polling",
        "/engine.io/x?EIO=4&transport=polling",
        "/ENGINE.IO/?EIO=4&transport=polling",
        "/socket.io.js",
    ] {
        let resp = get(addr, target).await;
        assert_eq!(resp.status, 404, "{target}");
    }
    // A WebSocket upgrade to a foreign path is not accepted either.
    let (_ws, resp) = RawWs::connect_response(addr, "/foo?EIO=4&transport=websocket", &[]).await;
    assert_eq!(resp.status, 404);
    // The exact path without its trailing slash is ours, and with two (the .NET client's URL
    // for a path given with one).
    for target in [
        "/engine.io?EIO=4&transport=polling",
        "/engine.io//?EIO=4&transport=polling",
    ] {
        assert_eq!(get(addr, target).await.status, 200, "{target}");
    }
}

#[tokio::test]
async fn permessage_deflate_is_not_negotiated() {
    let addr = spawn_conformance_server().await;
    let (mut ws, resp) = RawWs::connect_response(
        addr,
        "/engine.io/?EIO=4&transport=websocket",
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await;
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-extensions"), None);
    // A frame with RSV1 set (a compressed message) is therefore a protocol error.
    let open = ws.read_frame().await.expect("open packet");
    assert!(open.text().starts_with('0'));
    ws.send_raw(&masked(0xC1, b"4hi")).await.ok();
    let end = ws.expect_failure(Duration::from_secs(1)).await;
    assert_failed(&end, &[1002], "RSV1 without permessage-deflate");
}

#[tokio::test]
async fn the_first_offered_subprotocol_is_named_in_the_101() {
    // A browser that offered subprotocols fails a handshake whose answer names none.
    let addr = spawn_conformance_server().await;
    let offer = ("Sec-WebSocket-Protocol", "chat.v2, chat.v1");
    for target in [
        "/engine.io/?EIO=4&transport=websocket",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let (mut ws, resp) = RawWs::connect_response(addr, target, &[offer]).await;
        assert_eq!(resp.status, 101, "{target}");
        assert_eq!(resp.header("sec-websocket-protocol"), Some("chat.v2"));
        let open = ws.read_frame().await.expect("open packet");
        assert!(open.text().starts_with("0{"), "{target}: {:?}", open.text());
    }
    // The upgrade of a polling session as well.
    let p = Polling::open(addr, E).await;
    let (_ws, resp) = RawWs::connect_response(addr, &p.websocket_target(), &[offer]).await;
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("chat.v2"));
    // An offer that is not a token is not answered, and the handshake still succeeds.
    for bad in ["a b, c", ", c", "x/y"] {
        let (_ws, resp) = RawWs::connect_response(
            addr,
            "/engine.io/?EIO=4&transport=websocket",
            &[("Sec-WebSocket-Protocol", bad)],
        )
        .await;
        assert_eq!(resp.status, 101, "{bad}");
        assert_eq!(resp.header("sec-websocket-protocol"), None, "{bad}");
    }
}

#[tokio::test]
async fn header_read_timeout_ends_slow_clients_without_blocking_others() {
    assert_eq!(
        HttpConfig::default().header_read_timeout,
        Duration::from_secs(30),
        "the default header-read timeout"
    );
    let addr = spawn_engine_echo(
        EngineConfig::default(),
        HttpConfig {
            header_read_timeout: Duration::from_millis(400),
            ..HttpConfig::default()
        },
    )
    .await;
    // Slowloris: a request head that never ends, one byte at a time.
    let mut slow = HttpConn::connect(addr).await;
    slow.send_raw(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if slow.send_raw(b"X").await.is_err() {
                return (start.elapsed(), true);
            }
            if slow.closed_within(Duration::from_millis(100)).await {
                return (start.elapsed(), true);
            }
        }
        (start.elapsed(), false)
    });
    // Meanwhile other clients are served at once.
    for _ in 0..5 {
        let start = Instant::now();
        let p = Polling::open(addr, E).await;
        p.post_ok(b"4fast").await;
        assert_eq!(p.get_packets().await, ["4fast"]);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    let (after, closed) = trickle.await.expect("trickle task");
    assert!(closed, "the slow client is still connected after {after:?}");
    assert!(
        after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn slowloris_on_the_conformance_server_does_not_block_others() {
    let addr = spawn_conformance_server().await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut conn = HttpConn::connect(addr).await;
        conn.send_raw(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(conn);
    }
    let start = Instant::now();
    let p = Polling::open(addr, E).await;
    p.post_ok(b"4served").await;
    assert_eq!(p.get_answering_pings().await, ["4served"]);
    let (mut ws, _) = ws_open(addr, E).await;
    ws_send(&mut ws, "4ws").await;
    assert_eq!(ws_recv_app_text(&mut ws).await, "4ws");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    // The slow connections are still waiting (30 s by default): none got an answer.
    for conn in &mut slow {
        assert!(!conn.closed_within(Duration::from_millis(1)).await);
    }
}

#[tokio::test]
async fn a_websocket_handshake_naming_polling_is_refused_and_takes_nothing_from_the_session() {
    let addr = spawn_conformance_server().await;
    // Without a session: no session is opened for it.
    let (_ws, resp) =
        RawWs::connect_response(addr, "/engine.io/?EIO=4&transport=polling", &[]).await;
    resp.assert_engine_error(400, 3);
    // With one: its client's packets stay its own.
    let polling = Polling::open(addr, "/engine.io/").await;
    polling.post_ok(b"4hello").await;
    let (_ws, resp) = RawWs::connect_response(addr, &polling.target(), &[]).await;
    resp.assert_engine_error(400, 3);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(polling.get_packets().await, vec!["4hello"]);
}
