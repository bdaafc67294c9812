//! Bad input, over real sockets: the known attacks and malformed inputs of
//! `shared/spec/robustness.md` (sections A: HTTP and handshake, C: WebSocket frames, E: Socket.IO
//! connect and namespaces) and more. Each test sends the raw bytes, checks the protocol's answer
//! (status and error JSON, close code, disconnect), and checks that bystanders connected
//! throughout (an Engine.IO echo client and a Socket.IO client) still get their answers and that
//! new clients can still connect.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::client::*;
use common::spawn_conformance_server;
use socketio_server::engineio::EngineConfig;
use socketio_server::server::HttpConfig;

const E: &str = ENGINE_PATH;
const S: &str = SOCKETIO_PATH;

/// Opens a raw WebSocket Engine.IO session on `/engine.io/`, sends `bytes` as they are and
/// returns how the server ended the connection.
async fn ws_attack(addr: std::net::SocketAddr, bytes: &[u8]) -> RawEnd {
    let (mut ws, _) = RawWs::open_engine(addr, E).await;
    // The server may end the connection before everything is written.
    let _ = ws.send_raw(bytes).await;
    ws.expect_failure(Duration::from_secs(2)).await
}

/// The answer of a polling GET of a session the server should have closed: the close packet
/// (its last poll) or code 1.
#[track_caller]
fn assert_closed_session(resp: &HttpResponse) {
    if resp.status == 200 {
        let packets = resp.packets();
        assert_eq!(
            packets.last().map(String::as_str),
            Some("1"),
            "the last poll of a closed session ends with the close packet: {packets:?}"
        );
    } else {
        resp.assert_engine_error(400, 1);
    }
}

// =============================================================================================
// A. HTTP / Engine.IO handshake and routing
// =============================================================================================

#[tokio::test]
async fn a_malformed_handshakes_get_their_error_codes() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let cases: &[(&str, &str, u8)] = &[
            ("GET", "?transport=polling", 5),
            ("GET", "?EIO=abc&transport=polling", 5),
            ("GET", "?EIO=3&transport=polling", 5),
            ("GET", "?EIO=5&transport=polling", 5),
            ("GET", "?EIO=04&transport=polling", 5),
            ("GET", "?EIO=4", 0),
            ("GET", "?EIO=4&transport=tobi", 0),
            ("GET", "?EIO=4&transport=__proto__", 0),
            ("GET", "?EIO=4&transport=constructor", 0),
            ("GET", "?EIO=4&transport=webtransport", 0),
            ("GET", "?EIO=4&transport=", 0),
            ("GET", "?EIO=3&transport=tobi", 0),
            ("POST", "?EIO=4&transport=polling", 2),
            ("PUT", "?EIO=4&transport=polling", 2),
            ("DELETE", "?EIO=4&transport=polling", 2),
            ("GET", "?EIO=4&transport=websocket", 3),
            ("GET", "?EIO=4&transport=polling&sid=test", 1),
        ];
        for path in [E, S] {
            for (method, query, code) in cases {
                let resp = request(addr, method, &format!("{path}{query}"), &[], b"40").await;
                resp.assert_engine_error(400, *code);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_malformed_sid_is_unknown_not_a_new_session() {
    let (addr, server) =
        spawn_engine_echo_server(EngineConfig::default(), HttpConfig::default()).await;
    with_engine_bystander(addr, || async {
        let before = server.session_count();
        let long = "A".repeat(10_000);
        for sid in [
            "!!!!",
            "!!!!!!!!!!!!!!!!!!!!",
            long.as_str(),
            "%00",
            "..%2F..%2F",
        ] {
            let target = format!("{E}?EIO=4&transport=polling&sid={sid}");
            get(addr, &target).await.assert_engine_error(400, 1);
            post(addr, &target, b"4x").await.assert_engine_error(400, 1);
            let (_ws, resp) = RawWs::connect_response(
                addr,
                &format!("{E}?EIO=4&transport=websocket&sid={sid}"),
                &[],
            )
            .await;
            resp.assert_engine_error(400, 1);
        }
        assert_eq!(server.session_count(), before, "no session was created");
    })
    .await;
}

#[tokio::test]
async fn a_http11_request_without_host_is_refused_and_opens_no_session() {
    let (addr, server) =
        spawn_engine_echo_server(EngineConfig::default(), HttpConfig::default()).await;
    with_engine_bystander(addr, || async {
        let before = server.session_count();
        let target = format!("{E}?EIO=4&transport=polling");
        let resp = raw_request(addr, format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert_eq!(resp.status, 400);
        assert_eq!(resp.header("connection"), Some("close"));
        assert_eq!(server.session_count(), before, "no session was created");
        // HTTP/1.0 has no Host requirement; with Host, 1.1 is served.
        for head in [
            format!("GET {target} HTTP/1.0\r\n\r\n"),
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ] {
            let resp = raw_request(addr, head.as_bytes()).await;
            assert_eq!(resp.status, 200, "{head}");
            assert!(resp.body.starts_with(b"0{"), "{head}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_sid_parameters_take_the_first_and_never_open_a_session() {
    let (addr, server) =
        spawn_engine_echo_server(EngineConfig::default(), HttpConfig::default()).await;
    with_engine_bystander(addr, || async {
        let p = Polling::open(addr, E).await;
        let other = Polling::open(addr, E).await;
        let count = server.session_count();
        // The first `sid` wins: this is a request of `p`'s session.
        p.post_ok(b"4mine").await;
        let resp = get(
            addr,
            &format!(
                "{E}?EIO=4&transport=polling&sid={}&sid={}",
                p.sid, other.sid
            ),
        )
        .await;
        assert_eq!(resp.packets(), ["4mine"]);
        // An unknown first `sid` is unknown, whatever follows.
        get(
            addr,
            &format!("{E}?EIO=4&transport=polling&sid=nope&sid={}", p.sid),
        )
        .await
        .assert_engine_error(400, 1);
        // Duplicated transports and versions: the first wins too.
        get(addr, &format!("{E}?EIO=4&transport=tobi&transport=polling"))
            .await
            .assert_engine_error(400, 0);
        get(addr, &format!("{E}?EIO=3&EIO=4&transport=polling"))
            .await
            .assert_engine_error(400, 5);
        assert_eq!(server.session_count(), count, "no session was created");
        // Both sessions are unharmed.
        other.post_ok(b"4other").await;
        assert_eq!(other.get_packets().await, ["4other"]);
    })
    .await;
}

#[tokio::test]
async fn a_unknown_transports_in_a_websocket_upgrade_are_code_0() {
    // CVE-2023-31125: `transport=__proto__` as a WebSocket upgrade.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for transport in ["__proto__", "constructor", "tobi", "hasOwnProperty", ""] {
            for path in [E, S] {
                let (mut ws, resp) = RawWs::connect_response(
                    addr,
                    &format!("{path}?EIO=4&transport={transport}"),
                    &[],
                )
                .await;
                resp.assert_engine_error(400, 0);
                assert!(ws.closed_within(Duration::from_secs(1)).await);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_websocket_handshakes_are_refused() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let target = "/engine.io/?EIO=4&transport=websocket";
        let cases: &[&[(&str, &str)]] = &[
            // Unknown version (13 and 8 are taken), short key, no key, no Connection: Upgrade.
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "7"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "short"),
            ],
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
            &[
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            // A key of the right length that is not 16 bytes in base64, and two keys.
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!!!"),
            ],
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"),
            ],
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ],
        ];
        for (i, headers) in cases.iter().enumerate() {
            let resp = request(addr, "GET", target, headers, b"").await;
            resp.assert_engine_error(400, 3);
            // RFC 6455 (section 4.4): the versions spoken are named to a client of another.
            let versions = (i == 0).then_some("13, 8");
            assert_eq!(resp.header("sec-websocket-version"), versions, "case {i}");
        }
        // A handshake with a body: whether its bytes were frames would depend on how they
        // are cut into segments.
        for body in [
            "Content-Length: 15\r\n\r\n4smuggled-frame",
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let resp = raw_request(
                addr,
                format!(
                    "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{body}"
                )
                .as_bytes(),
            )
            .await;
            resp.assert_engine_error(400, 3);
        }
        // RFC 6455 needs HTTP/1.1; an HTTP/1.0 handshake is a bad request, not a 101.
        let resp = raw_request(
            addr,
            format!(
                "GET {target} HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        resp.assert_engine_error(400, 3);
        // Odd extension and protocol headers are ignored, quickly (GHSA-5v72-xg48-5rpm,
        // CVE-2021-32640): the handshake succeeds and negotiates nothing.
        // As many spaces as the 16 KiB head allows.
        let spaces = format!("b{}x", " ".repeat(15_000));
        for extra in [
            ("Sec-WebSocket-Extensions", "hasOwnProperty, toString"),
            ("Sec-WebSocket-Extensions", "foo; constructor"),
            ("Sec-WebSocket-Protocol", spaces.as_str()),
        ] {
            let start = Instant::now();
            let (mut ws, resp) = RawWs::connect_response(addr, target, &[extra]).await;
            assert_eq!(resp.status, 101, "{}", extra.0);
            assert_eq!(resp.header("sec-websocket-extensions"), None);
            assert_eq!(resp.header("sec-websocket-protocol"), None);
            let open = ws.read_frame().await.expect("the open packet");
            assert!(open.text().starts_with("0{"));
            assert!(start.elapsed() < Duration::from_secs(1));
        }
    })
    .await;
}

#[tokio::test]
async fn a_origin_with_control_characters_is_refused() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for origin in [&b"http://a\x01b"[..], b"http://a\x7fb", b"http://a\x1bb"] {
            for target in [
                "/engine.io/?EIO=4&transport=polling",
                "/socket.io/?EIO=4&transport=polling",
            ] {
                let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nOrigin: ").into_bytes();
                req.extend_from_slice(origin);
                req.extend_from_slice(b"\r\n\r\n");
                let resp = raw_request(addr, &req).await;
                assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(origin));
                assert!(
                    !resp.text().starts_with("0{"),
                    "no session for a bad Origin"
                );
                if resp.header("content-type") == Some("application/json") {
                    resp.assert_engine_error(400, 3);
                }
            }
            // The WebSocket handshake as well.
            let mut req = b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
                Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: "
                .to_vec();
            req.extend_from_slice(origin);
            req.extend_from_slice(b"\r\n\r\n");
            let resp = raw_request(addr, &req).await;
            assert_eq!(resp.status, 400);
        }
    })
    .await;
}

#[tokio::test]
async fn a_foreign_paths_and_jsonp() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for target in [
            "/socket.iox/?EIO=4&transport=polling",
            "/socket.io/../engine.io/?EIO=4&transport=polling",
            "/%2Fsocket.io/?EIO=4&transport=polling",
        ] {
            assert_eq!(get(addr, target).await.status, 404, "{target}");
        }
        // The exact path without the trailing slash is served.
        let resp = get(addr, "/socket.io?EIO=4&transport=polling").await;
        assert!(resp.packets()[0].starts_with("0{"));
        // JSONP is not part of v4: the `j` parameter is ignored and the answer is a normal
        // polling payload, never a script.
        let resp = get(addr, "/socket.io/?EIO=4&transport=polling&j=0").await;
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; charset=UTF-8")
        );
        assert!(resp.packets()[0].starts_with("0{"));
    })
    .await;
}

#[tokio::test]
async fn a_more_than_100_headers_get_431() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let pads = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("X-Pad-{i}"), "a".to_owned()))
                .collect()
        };
        let send = |headers: Vec<(String, String)>| async move {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            request(
                addr,
                "GET",
                "/engine.io/?EIO=4&transport=polling",
                &refs,
                b"",
            )
            .await
        };
        // With Host that is 100 headers: fine. 101: refused.
        assert_eq!(send(pads(99)).await.status, 200);
        assert_eq!(send(pads(100)).await.status, 431);
        // CVE-2024-37890 shape: the upgrade headers come after 2000 others.
        let mut headers = pads(2000);
        for (n, v) in RawWs::handshake_headers() {
            headers.push((n.to_owned(), v.to_owned()));
        }
        let start = Instant::now();
        let resp = send(headers).await;
        assert_eq!(resp.status, 431);
        assert!(start.elapsed() < Duration::from_secs(1));
    })
    .await;
}

#[tokio::test]
async fn a_huge_header_line_gets_431_at_once() {
    // CVE-2023-43669 class: no quadratic re-parsing, no CPU spin.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let big = "A".repeat(500_000);
        let start = Instant::now();
        let mut conn = HttpConn::connect(addr).await;
        let mut req =
            b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend_from_slice(big.as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        // The server may stop reading once the head is too large.
        let _ = conn.send_raw(&req).await;
        let resp = tokio::time::timeout(STEP, conn.read_response(false))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert_eq!(resp.status, 431);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // The same in one byte-sized trickle of large writes does not spin either.
        let mut conn = HttpConn::connect(addr).await;
        let _ = conn
            .send_raw(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nX-Big: ")
            .await;
        for _ in 0..50 {
            if conn.send_raw(&[b'A'; 10_000]).await.is_err() {
                break;
            }
        }
        assert!(conn.closed_within(Duration::from_secs(2)).await);
    })
    .await;
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431() {
    // What a session keeps of its opening request is bounded: Node's limit, 16 KiB a head.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let head = |pad: usize, target: &str, extra: &str| {
            format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\n{extra}X-Pad: {}\r\n\r\n",
                "a".repeat(pad)
            )
        };
        let polling = "/engine.io/?EIO=4&transport=polling";
        let ok = raw_request(addr, head(15_000, polling, "").as_bytes()).await;
        assert_eq!(ok.status, 200, "15 KB of headers");
        let big = raw_request(addr, head(17_000, polling, "").as_bytes()).await;
        assert_eq!(big.status, 431, "17 KB of headers");
        // A WebSocket handshake too: no 101, no session.
        let upgrade: String = RawWs::handshake_headers()
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let target = "/engine.io/?EIO=4&transport=websocket";
        let big = raw_request(addr, head(17_000, target, &upgrade).as_bytes()).await;
        assert_eq!(big.status, 431, "17 KB of headers on a WebSocket handshake");
    })
    .await;
}

#[tokio::test]
async fn a_stalled_post_body_does_not_hold_up_anyone() {
    // A POST announcing 1,000,000 bytes that sends 10 and falls silent.
    let addr = spawn_conformance_server().await;
    let p = Polling::open(addr, E).await;
    let mut stalled = HttpConn::connect(addr).await;
    with_bystanders(addr, || async {
        let mut req = request_head(
            "POST",
            &p.target(),
            &[("Content-Type", "text/plain;charset=UTF-8")],
            1_000_000,
        );
        req.extend_from_slice(b"4aaaaaaaaa");
        stalled.send_raw(&req).await.expect("write");
        // While it hangs, other sessions are served as usual.
        for _ in 0..3 {
            let other = Polling::open(addr, E).await;
            other.post_ok(b"4served").await;
            assert_eq!(other.get_answering_pings().await, ["4served"]);
        }
    })
    .await;
    drop(stalled);
}

#[tokio::test]
async fn a_client_that_reads_none_of_its_answer_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ANSWER: usize = 32 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = HttpConfig {
        write_stall_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let answer = bytes::Bytes::from(vec![b'x'; ANSWER]);
    tokio::spawn(socketio_server::server::serve(
        listener,
        config,
        move |_req| {
            let answer = answer.clone();
            async move { hyper::Response::new(http_body_util::Full::new(answer)) }
        },
        std::future::pending(),
    ));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What the sockets' buffers held, then the end: far from the whole answer.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {} bytes",
        got.len()
    );
    assert!(got.len() < ANSWER, "{} bytes", got.len());
}

/// Sends `first`, a moment later `rest` and the end of the stream (as a client in another
/// process does), and reads the answer.
async fn half_closed_request(
    addr: SocketAddr,
    first: &[u8],
    rest: &[u8],
    what: &str,
) -> HttpResponse {
    let mut conn = HttpConn::connect(addr).await;
    conn.send_raw(first).await.expect("write");
    tokio::time::sleep(Duration::from_millis(5)).await;
    conn.send_raw(rest).await.expect("write");
    conn.shutdown_write().await;
    tokio::time::timeout(STEP, conn.read_response(false))
        .await
        .unwrap_or_else(|_| panic!("{what} is answered"))
        .unwrap_or_else(|e| panic!("{what} is answered: {e}"))
}

#[tokio::test]
async fn a_client_that_shuts_its_side_after_its_request_still_gets_the_answer() {
    // hyper drops a request when it reads the end of the stream before the answer is out,
    // which happened to a quarter or more of such requests.
    let addr = spawn_engine_echo(EngineConfig::default(), HttpConfig::default()).await;
    let p = Polling::open(addr, E).await;
    let text = [("Content-Type", "text/plain;charset=UTF-8")];
    let post = request_head("POST", &p.target(), &text, 1);
    let handshake = request_head("GET", &format!("{E}?EIO=4&transport=polling"), &[], 0);
    let (handshake_start, handshake_end) = handshake.split_at(handshake.len() - 2);
    for i in 0..40 {
        let resp = half_closed_request(addr, &post, b"6", &format!("POST {i}")).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "ok"), "POST {i}");
        let what = format!("handshake {i}");
        let resp = half_closed_request(addr, handshake_start, handshake_end, &what).await;
        assert_eq!(resp.status, 200, "{what}");
        parse_open(&resp.packets()[0]);
    }
}

#[tokio::test]
async fn a_polling_request_whose_client_went_away_ends_its_session_and_no_other() {
    let addr = spawn_engine_echo(EngineConfig::default(), HttpConfig::default()).await;
    let bystander = Polling::open(addr, E).await;
    for i in 0..8 {
        let p = Polling::open(addr, E).await;
        // A GET waiting for packets, or a POST waiting for the rest of its body; its client
        // gone altogether, or only its side shut. Either way the request ends unanswered (or
        // refused) and the session with it, as the reference server has it.
        let get = i % 4 < 2;
        let mut gone = HttpConn::connect(addr).await;
        if get {
            gone.write_request("GET", &p.target(), &[], b"")
                .await
                .expect("write");
        } else {
            let mut req = request_head("POST", &p.target(), &[], 1_000);
            req.extend_from_slice(b"4aaaaaaaaa");
            gone.send_raw(&req).await.expect("write");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let what = format!("{} {i}", if get { "GET" } else { "POST" });
        if i % 2 == 0 {
            drop(gone);
        } else {
            gone.shutdown_write().await;
            assert!(gone.closed_within(STEP).await, "a half-closed {what} ends");
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let resp = p.post(b"4anyone?").await;
            if resp.status == 400 {
                resp.assert_engine_error(400, 1);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the session outlived its {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let message = format!("4m{i}");
        bystander.post_ok(message.as_bytes()).await;
        assert_eq!(
            bystander.get_packets().await,
            [message],
            "the bystander, after {what}"
        );
    }
}

#[tokio::test]
async fn a_stalled_post_body_times_out_and_closes_the_session() {
    let addr = spawn_engine_echo(
        EngineConfig {
            body_read_timeout: Duration::from_millis(300),
            ..EngineConfig::default()
        },
        HttpConfig::default(),
    )
    .await;
    with_engine_bystander(addr, || async {
        let p = Polling::open(addr, E).await;
        let mut conn = HttpConn::connect(addr).await;
        let mut req = request_head("POST", &p.target(), &[], 1_000_000);
        req.extend_from_slice(b"4aaaaaaaaa");
        conn.send_raw(&req).await.expect("write");
        let start = Instant::now();
        let resp = tokio::time::timeout(STEP, conn.read_response(false))
            .await
            .expect("the stalled POST is answered")
            .expect("an answer");
        assert_eq!(resp.status, 400);
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_closed_session(&p.get().await);
    })
    .await;
}

#[tokio::test]
async fn a_declared_oversized_post_is_refused_before_its_body() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // 413 on the header alone: the 2 MB body is never sent.
        let p = Polling::open(addr, E).await;
        let mut conn = HttpConn::connect(addr).await;
        let mut req = request_head("POST", &p.target(), &[], 2_000_000);
        req.extend_from_slice(b"4abc");
        conn.send_raw(&req).await.expect("write");
        let resp = tokio::time::timeout(STEP, conn.read_response(false))
            .await
            .expect("answered without the body")
            .expect("an answer");
        assert_eq!(resp.status, 413);
        assert_closed_session(&p.get().await);
        // A length that does not even fit in 64 bits.
        let p = Polling::open(addr, E).await;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n4abc",
            p.target()
        );
        let resp = raw_request(addr, req.as_bytes()).await;
        assert!(resp.status == 400 || resp.status == 413, "{}", resp.status);
    })
    .await;
}

#[tokio::test]
async fn a_tcp_resets_at_any_point_are_absorbed() {
    // CVE-2022-41940 class: a reset mid-headers, mid-body, during a pending poll, during a
    // WebSocket handshake, mid-frame and during an upgrade only end that connection.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        async fn reset(conn: HttpConn) {
            let (stream, _) = conn.into_parts();
            stream.set_zero_linger().expect("SO_LINGER 0");
            drop(stream);
        }
        // Mid-headers.
        let mut conn = HttpConn::connect(addr).await;
        conn.send_raw(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost:")
            .await
            .expect("write");
        reset(conn).await;
        // Mid-body.
        let p = Polling::open(addr, E).await;
        let mut conn = HttpConn::connect(addr).await;
        let mut req = request_head("POST", &p.target(), &[], 100);
        req.extend_from_slice(b"4abc");
        conn.send_raw(&req).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        reset(conn).await;
        // During a pending GET: the next request of the session is answered promptly (the
        // session goes on, or it was closed as a transport error).
        let p = Polling::open(addr, E).await;
        let mut conn = HttpConn::connect(addr).await;
        conn.write_request("GET", &p.target(), &[], b"")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        reset(conn).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let resp = post(addr, &p.target(), b"4after reset").await;
        assert!(resp.status == 200 || resp.status == 400, "{}", resp.status);
        // During a WebSocket handshake, before the answer is read.
        let mut conn = HttpConn::connect(addr).await;
        conn.write_request(
            "GET",
            "/engine.io/?EIO=4&transport=websocket",
            &RawWs::handshake_headers(),
            b"",
        )
        .await
        .expect("write");
        reset(conn).await;
        // Mid-frame.
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let frame = masked(op::FIN | op::TEXT, b"4half a frame");
        ws.send_raw(&frame[..8]).await.expect("write");
        ws.stream().set_zero_linger().expect("SO_LINGER 0");
        drop(ws);
        // During an upgrade: the polling session goes on.
        let p = Polling::open(addr, E).await;
        let (mut ws, resp) = RawWs::connect_response(addr, &p.websocket_target(), &[]).await;
        assert_eq!(resp.status, 101);
        ws.send_text("2probe").await.expect("write");
        assert_eq!(ws.read_frame().await.expect("3probe").text(), "3probe");
        ws.stream().set_zero_linger().expect("SO_LINGER 0");
        drop(ws);
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.post_ok(b"4still polling").await;
        let got = p.get_answering_pings().await;
        assert!(
            got == ["4still polling"] || got == ["6", "4still polling"] || got == ["6"],
            "{got:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_h2c_upgrade_requests_are_not_followed() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let h2c = b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
        // Then a reset, before reading anything.
        let mut conn = HttpConn::connect(addr).await;
        conn.send_raw(h2c).await.expect("write");
        let (stream, _) = conn.into_parts();
        stream.set_zero_linger().expect("SO_LINGER 0");
        drop(stream);
        // Without the reset: a plain HTTP/1.1 answer, never 101.
        let mut conn = HttpConn::connect(addr).await;
        conn.send_raw(h2c).await.expect("write");
        let resp = tokio::time::timeout(STEP, conn.read_response(true))
            .await
            .expect("an answer")
            .expect("an answer");
        assert_eq!(resp.status, 404);
        // On the Engine.IO path it is a normal request that does not switch protocols.
        let resp = request(
            addr,
            "GET",
            "/engine.io/?EIO=4&transport=polling",
            &[
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", "h2c"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
            b"",
        )
        .await;
        assert_ne!(resp.status, 101);
        assert!(resp.status == 200 || resp.status == 400, "{}", resp.status);
    })
    .await;
}

#[tokio::test]
async fn a_websocket_upgrade_to_a_foreign_path_is_refused_and_closed() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for target in ["/foo", "/", "/engine.iox/?EIO=4&transport=websocket"] {
            let (mut ws, resp) = RawWs::connect_response(addr, target, &[]).await;
            assert_eq!(resp.status, 404, "{target}");
            // The socket does not linger, even if the client says nothing more.
            assert!(
                ws.closed_within(Duration::from_millis(1500)).await,
                "{target}: the connection lingers"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_websocket_handshake_followed_by_garbage_fails_only_that_connection() {
    // CVE-2022-21676: the bytes `test` right after the handshake are a frame with RSV bits set.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let mut conn = HttpConn::connect(addr).await;
        let mut req = request_head(
            "GET",
            "/engine.io/?EIO=4&transport=websocket",
            &RawWs::handshake_headers(),
            0,
        );
        req.extend_from_slice(b"test");
        conn.send_raw(&req).await.expect("write");
        assert!(conn.closed_within(Duration::from_secs(2)).await);
        // The same during an upgrade: the polling session survives.
        let p = Polling::open(addr, E).await;
        let mut conn = HttpConn::connect(addr).await;
        let mut req = request_head("GET", &p.websocket_target(), &RawWs::handshake_headers(), 0);
        req.extend_from_slice(b"test");
        conn.send_raw(&req).await.expect("write");
        assert!(conn.closed_within(Duration::from_secs(2)).await);
        p.post_ok(b"4alive").await;
        assert_eq!(p.get_answering_pings().await, ["4alive"]);
    })
    .await;
}

#[tokio::test]
async fn a_binary_post_body_is_400_and_closes_the_session() {
    // CVE-2026-59725: every error path completes the HTTP response.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for path in [E, S] {
            let p = Polling::open(addr, path).await;
            let resp = tokio::time::timeout(STEP, async {
                let mut conn = HttpConn::connect(addr).await;
                conn.request(
                    "POST",
                    &p.target(),
                    &[("Content-Type", "application/octet-stream")],
                    &[1, 2, 3],
                )
                .await
            })
            .await
            .expect("the binary POST is answered")
            .expect("an answer");
            assert_eq!(resp.status, 400);
            assert_closed_session(&p.get().await);
        }
    })
    .await;
}

#[tokio::test]
async fn a_overlapping_posts_are_400_and_close_the_session() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let p = Polling::open(addr, E).await;
        // The first POST is in flight: its body is not complete yet.
        let mut first = HttpConn::connect(addr).await;
        let mut req = request_head("POST", &p.target(), &[], 12);
        req.extend_from_slice(b"4first");
        first.send_raw(&req).await.expect("write");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let second = p.post(b"4second").await;
        assert_eq!(second.status, 400, "{}", second.text());
        if second.header("content-type") == Some("application/json") {
            second.assert_engine_error(400, 3);
        }
        // The first one is still answered once its body is complete.
        first.send_raw(b" body!").await.expect("write");
        let resp = tokio::time::timeout(STEP, first.read_response(false))
            .await
            .expect("the first POST is answered")
            .expect("an answer");
        assert!(resp.status == 200 || resp.status == 400, "{}", resp.status);
        assert_closed_session(&p.get().await);
    })
    .await;
}

#[tokio::test]
async fn a_bad_polling_payloads_are_400_and_close_the_session() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let too_many = vec!["6"; 16_385].join("\u{1e}");
        let bodies: Vec<&[u8]> = vec![
            b"",
            b"a123",
            b"7",
            b"0{}",
            b"4ok\x1e",
            b"\x1e4x",
            b"4\xff\xfe",
            b"b!!!",
            b"{",
            b"[\"a123\",\"a456\"]",
            too_many.as_bytes(),
        ];
        for body in bodies {
            let p = Polling::open(addr, E).await;
            let resp = p.post(body).await;
            assert_eq!(
                resp.status,
                400,
                "{:?}: {}",
                String::from_utf8_lossy(body),
                resp.text()
            );
            assert_closed_session(&p.get().await);
        }
        // 2,000 packets in one POST are still fine (a client's burst of emits).
        let p = Polling::open(addr, E).await;
        p.post_ok(vec!["4x"; 2000].join("\u{1e}").as_bytes()).await;
        let mut got = 0;
        while got < 2000 {
            got += p.get_answering_pings().await.len();
        }
        assert_eq!(got, 2000);
    })
    .await;
}

#[tokio::test]
async fn a_socket_id_does_not_open_the_engine_session() {
    // Item 109: a socket id seen by other clients never authorises polling requests.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let p = Polling::open(addr, S).await;
        p.post_ok(b"40").await;
        let packets = p.get_answering_pings().await;
        let socket_id = packets[0]
            .strip_prefix("40{\"sid\":\"")
            .and_then(|s| s.strip_suffix("\"}"))
            .expect("a CONNECT reply")
            .to_owned();
        let target = format!("{S}?EIO=4&transport=polling&sid={socket_id}");
        get(addr, &target).await.assert_engine_error(400, 1);
        post(addr, &target, br#"42["message","x"]"#)
            .await
            .assert_engine_error(400, 1);
        // The victim's session is unaffected.
        p.post_ok(br#"42["message","mine"]"#).await;
        let mut got = Vec::new();
        while !got.iter().any(|m: &String| m.contains("message-back")) {
            got.extend(p.get_answering_pings().await);
        }
        assert!(
            got.contains(&r#"42["message-back","mine"]"#.to_owned()),
            "{got:?}"
        );
    })
    .await;
}

// =============================================================================================
// C. WebSocket frames
// =============================================================================================

#[tokio::test]
async fn c_reserved_bits_fail_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for first in [0xA1u8, 0xC1, 0x91, 0xF1, 0xC2] {
            let end = ws_attack(addr, &masked(first, b"")).await;
            assert_failed(&end, &[1002], &format!("first byte {first:#04x}"));
        }
    })
    .await;
}

/// RFC 6455 makes these headers a failure of the connection whatever their payload, so they
/// fail as soon as they are read: a header alone, announcing a long payload that never comes,
/// is not left waiting for it (taking the client's next bytes for it) until a ping times out.
/// What the client sent before it is still answered.
#[tokio::test]
async fn c_headers_that_break_the_rules_fail_without_their_payload() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // Second byte 0xFE: masked, a 16-bit length (60,000) follows; the mask key too.
        let masked_long = |first: u8| vec![first, 0xFE, 0xEA, 0x60, 1, 2, 3, 4];
        for (header, what) in [
            (
                vec![0x89, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4],
                "ping of 65,535 bytes",
            ),
            (
                vec![0x89, 0xFF, 0, 0, 0, 0, 0, 0x0F, 0x42, 0x40, 1, 2, 3, 4],
                "ping of 1,000,000 bytes",
            ),
            (masked_long(0xC1), "RSV1"),
            (vec![0x81, 0x7E, 0xEA, 0x60], "unmasked"),
            (masked_long(0x09), "fragmented ping"),
            (masked_long(0x80), "continuation without start"),
            (masked_long(0x88), "close of 60,000 bytes"),
        ] {
            let (mut ws, _) = RawWs::open_engine(addr, E).await;
            let mut bytes = masked(op::FIN | op::TEXT, b"4before");
            bytes.extend(&header);
            ws.send_raw(&bytes).await.expect("write");
            let echo = ws.read_app_frame().await.expect("the echo");
            assert_eq!(echo.payload, b"4before", "{what}");
            let end = ws.expect_failure(Duration::from_secs(2)).await;
            assert_failed(&end, &[1002], what);
        }
    })
    .await;
}

#[tokio::test]
async fn c_unmasked_frames_fail_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let end = ws_attack(addr, &[0x81, 0x02, 0x34, 0x78]).await;
        assert_failed(&end, &[1002], "unmasked text");
        let end = ws_attack(addr, &frame(op::FIN | op::BINARY, &[1, 2], None)).await;
        assert_failed(&end, &[1002], "unmasked binary");
    })
    .await;
}

#[tokio::test]
async fn c_huge_frame_lengths_fail_at_once() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for header in [
            [
                0x82u8, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
            ],
            [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0x81, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let start = Instant::now();
            let end = ws_attack(addr, &header).await;
            assert_failed(&end, &[1009, 1002], "huge length");
            assert!(start.elapsed() < Duration::from_secs(1));
        }
    })
    .await;
}

#[tokio::test]
async fn c_fragmented_message_over_max_payload_closes_with_1009() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let mut first = vec![b'a'; 600_000];
        first[0] = b'4';
        let mut bytes = masked(op::TEXT, &first);
        bytes.extend(masked(op::FIN | op::CONT, &vec![b'b'; 600_000]));
        let end = ws_attack(addr, &bytes).await;
        assert_failed(&end, &[1009], "1.2 MB in two fragments");
        // Fragments adding up to exactly maxPayload are fine.
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::TEXT, &first);
        bytes.extend(masked(op::FIN | op::CONT, &vec![b'b'; 400_000]));
        ws.send_raw(&bytes).await.expect("write");
        let echo = ws.read_app_frame().await.expect("the echo");
        assert_eq!(echo.payload.len(), 1_000_000);
    })
    .await;
}

#[tokio::test]
async fn c_bad_control_frames_fail_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // A ping longer than 125 bytes.
        let end = ws_attack(addr, &masked(op::FIN | op::PING, &[b'p'; 126])).await;
        assert_failed(&end, &[1002], "ping > 125");
        // A fragmented ping.
        let end = ws_attack(addr, &masked(op::PING, b"")).await;
        assert_failed(&end, &[1002], "fragmented ping");
        // A fragmented close.
        let end = ws_attack(addr, &masked(op::CLOSE, &[3, 232])).await;
        assert_failed(&end, &[1002], "fragmented close");
    })
    .await;
}

#[tokio::test]
async fn c_bad_fragment_sequences_fail_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // A continuation with nothing to continue.
        let end = ws_attack(addr, &masked(op::FIN | op::CONT, b"x")).await;
        assert_failed(&end, &[1002], "continuation without start");
        // A new text message in the middle of a fragmented one.
        let mut bytes = masked(op::TEXT, b"4a");
        bytes.extend(masked(op::FIN | op::TEXT, b"4b"));
        let end = ws_attack(addr, &bytes).await;
        assert_failed(&end, &[1002], "text inside a fragmented message");
        // A control frame in the middle of a fragmented message is allowed.
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::TEXT, b"4frag");
        bytes.extend(masked(op::FIN | op::PING, b"mid"));
        bytes.extend(masked(op::FIN | op::CONT, b"mented"));
        ws.send_raw(&bytes).await.expect("write");
        let pong = ws.read_app_frame().await.expect("a pong");
        assert_eq!(
            (pong.opcode(), pong.payload.as_slice()),
            (op::PONG, &b"mid"[..])
        );
        let echo = ws.read_app_frame().await.expect("the echo");
        assert_eq!(echo.text(), "4fragmented");
    })
    .await;
}

#[tokio::test]
async fn c_invalid_utf8_text_fails_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let end = ws_attack(addr, &masked(op::FIN | op::TEXT, &[0x34, 0xC3, 0x28])).await;
        assert_failed(&end, &[1007], "invalid UTF-8");
        // Split inside a code point across fragments is still valid.
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::TEXT, &[0x34, 0xC3]);
        bytes.extend(masked(op::FIN | op::CONT, &[0xA9]));
        ws.send_raw(&bytes).await.expect("write");
        assert_eq!(ws.read_app_frame().await.expect("echo").text(), "4é");
        // Invalid UTF-8 in a fragmented message.
        let mut bytes = masked(op::TEXT, &[0x34, 0xC3]);
        bytes.extend(masked(op::FIN | op::CONT, &[0x28]));
        let end = ws_attack(addr, &bytes).await;
        assert_failed(&end, &[1007], "invalid UTF-8 across fragments");
    })
    .await;
}

#[tokio::test]
async fn c_reserved_opcodes_fail_the_connection() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for opcode in [0x3u8, 0x7, 0xB, 0xF] {
            let end = ws_attack(addr, &masked(op::FIN | opcode, b"")).await;
            assert_failed(&end, &[1002], &format!("opcode {opcode:#x}"));
        }
    })
    .await;
}

#[tokio::test]
async fn c_close_frames_good_and_bad() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // Codes a peer may not send get 1002.
        for code in [999u16, 1005, 1006, 1015, 5000] {
            let end = ws_attack(addr, &masked(op::FIN | op::CLOSE, &code.to_be_bytes())).await;
            assert_failed(&end, &[1002], &format!("close code {code}"));
            assert_ne!(end, RawEnd::Dropped, "close code {code} is answered");
        }
        // A one-byte close, and a reason that is not UTF-8.
        let end = ws_attack(addr, &masked(op::FIN | op::CLOSE, &[3])).await;
        assert_failed(&end, &[1002], "one-byte close");
        let end = ws_attack(addr, &masked(op::FIN | op::CLOSE, &[3, 232, 0xFF])).await;
        assert_failed(&end, &[1002, 1007], "close reason not UTF-8");
        // A normal close is answered in kind, and an empty one too.
        let end = ws_attack(addr, &masked(op::FIN | op::CLOSE, &[3, 232])).await;
        assert_eq!(end, RawEnd::Close(1000));
        let end = ws_attack(addr, &masked(op::FIN | op::CLOSE, b"")).await;
        assert!(matches!(end, RawEnd::Close(1000 | 1005)), "{end:?}");
    })
    .await;
}

#[tokio::test]
async fn c_frame_errors_while_upgrading_get_their_close_codes() {
    // The same answers as on an open WebSocket, before `2probe` and between `3probe` and `5`;
    // the session stays on polling.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let cases: [(&str, Vec<u8>, u16); 5] = [
            ("RSV1", masked(0xC1, b"2probe"), 1002),
            (
                "close code 999",
                masked(op::FIN | op::CLOSE, &999u16.to_be_bytes()),
                1002,
            ),
            ("one-byte close", masked(op::FIN | op::CLOSE, &[3]), 1002),
            (
                "text not UTF-8",
                masked(op::FIN | op::TEXT, &[0xC3, 0x28]),
                1007,
            ),
            (
                "over maxPayload",
                vec![0x81, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0],
                1009,
            ),
        ];
        for probed in [false, true] {
            for (what, bytes, code) in &cases {
                let p = Polling::open(addr, E).await;
                let mut ws = RawWs::connect(addr, &p.websocket_target()).await;
                if probed {
                    ws.send_text("2probe").await.expect("write");
                    let pong = ws.read_app_frame().await.expect("3probe");
                    assert_eq!(pong.text(), "3probe");
                }
                let _ = ws.send_raw(bytes).await;
                let end = ws.expect_failure(Duration::from_secs(2)).await;
                assert_eq!(end, RawEnd::Close(*code), "{what} (probed: {probed})");
                assert_eq!(p.get().await.status, 200, "{what}: polling goes on");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn c_websocket_ping_gets_a_pong() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        ws.send(op::FIN | op::PING, b"hi").await.expect("write");
        let pong = ws.read_app_frame().await.expect("a pong");
        assert_eq!(pong.first, op::FIN | op::PONG);
        assert!(!pong.masked, "server frames are not masked");
        assert_eq!(pong.payload, b"hi");
        // An unsolicited pong is ignored.
        ws.send(op::FIN | op::PONG, b"x").await.expect("write");
        ws.send_text("4after").await.expect("write");
        assert_eq!(ws.read_app_frame().await.expect("echo").text(), "4after");
    })
    .await;
}

#[tokio::test]
async fn c_many_empty_continuation_frames() {
    // CVE-2026-48779 class. A long ping interval keeps the heartbeat out of the way.
    let addr = spawn_quiet_engine_echo().await;
    with_engine_bystander(addr, || async {
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::TEXT, b"4");
        let empty = masked(op::CONT, b"");
        for _ in 0..100_000 {
            bytes.extend_from_slice(&empty);
        }
        bytes.extend(masked(op::FIN | op::CONT, b"x"));
        let _ = ws.send_raw(&bytes).await;
        match tokio::time::timeout(Duration::from_secs(10), ws.read_app_frame()).await {
            Ok(Some(f)) if f.opcode() == op::TEXT => assert_eq!(f.text(), "4x"),
            Ok(Some(f)) => assert_eq!(f.close_code(), Some(1008), "{f:?}"),
            Ok(None) => {}
            Err(_) => panic!("no answer to the fragmented message"),
        }
    })
    .await;
}

#[tokio::test]
async fn c_a_message_in_more_fragments_than_ws_allows_is_closed_with_1008() {
    // Node's ws closes past 128 Ki fragments of one message; so do we, rather than let a
    // stream of empty continuation frames run on unseen by the message rate limit.
    let addr = spawn_quiet_engine_echo().await;
    with_engine_bystander(addr, || async {
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::TEXT, b"4");
        let empty = masked(op::CONT, b"");
        for _ in 0..128 * 1024 {
            bytes.extend_from_slice(&empty);
        }
        let _ = ws.send_raw(&bytes).await;
        let end = ws.expect_failure(Duration::from_secs(10)).await;
        assert!(matches!(end, RawEnd::Close(1008)), "{end:?}");
    })
    .await;
}

#[tokio::test]
async fn c_frames_delivered_one_byte_per_write_are_reassembled() {
    // A long ping interval keeps the heartbeat out of the way of the slow writes.
    let addr = spawn_quiet_engine_echo().await;
    with_engine_bystander(addr, || async {
        let (mut ws, _) = RawWs::open_engine(addr, E).await;
        let mut bytes = masked(op::FIN | op::TEXT, b"4byte by byte");
        bytes.extend(masked(op::FIN | op::BINARY, &[0u8; 300]));
        for b in &bytes {
            ws.send_raw(std::slice::from_ref(b)).await.expect("write");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        assert_eq!(
            ws.read_app_frame().await.expect("echo").text(),
            "4byte by byte"
        );
        let bin = ws.read_app_frame().await.expect("echo");
        assert_eq!((bin.opcode(), bin.payload.len()), (op::BINARY, 300));
    })
    .await;
}

#[tokio::test]
async fn c_invalid_engineio_packets_over_websocket_close_the_session() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for bad in ["", "a123", "7", "0{}", "1x", "6noop", "2ping", "9"] {
            let end = ws_attack(addr, &masked(op::FIN | op::TEXT, bad.as_bytes())).await;
            // A close frame without a code, as the reference server's.
            assert_eq!(end, RawEnd::Close(1005), "{bad:?}");
        }
    })
    .await;
}

// =============================================================================================
// E. Socket.IO connect and namespaces
// =============================================================================================

/// A raw Socket.IO WebSocket session: sends `packets` (Engine.IO text frames) and returns how
/// the connection ended, with the Socket.IO answers seen before.
async fn sio_attack(addr: std::net::SocketAddr, packets: &[&str]) -> WsEnd {
    let (mut ws, _) = ws_open(addr, S).await;
    for p in packets {
        let _ =
            futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(*p))
                .await;
    }
    ws_expect_end_answering_pings(&mut ws, Duration::from_secs(2)).await
}

/// The text messages of `end`.
fn texts(end: &WsEnd) -> Vec<String> {
    end.messages
        .iter()
        .filter_map(|m| m.to_text().ok().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn e_connect_payloads() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // CONNECT data must be an object.
        for bad in [
            r#"40"invalid""#,
            "40[]",
            "40123",
            "40null",
            "40true",
            r#"40{"a":1"#,
        ] {
            let end = sio_attack(addr, &[bad]).await;
            assert!(texts(&end).is_empty(), "{bad}: {end:?}");
            assert!(end.after < Duration::from_millis(800), "{bad}: not at once");
        }
        // An auth object is accepted.
        let (mut ws, _) = ws_open(addr, S).await;
        ws_send(&mut ws, r#"40{"token":"123"}"#).await;
        assert!(ws_recv_app_text(&mut ws).await.starts_with("40{\"sid\":"));
        assert_eq!(
            ws_recv_app_text(&mut ws).await,
            r#"42["auth",{"token":"123"}]"#
        );
    })
    .await;
}

#[tokio::test]
async fn e_invalid_namespace_then_connect_timeout() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let start = Instant::now();
        let end = sio_attack(addr, &["40/random,"]).await;
        assert_eq!(
            texts(&end),
            [r#"44/random,{"message":"Invalid namespace"}"#]
        );
        assert!(start.elapsed() >= Duration::from_millis(850));
    })
    .await;
}

#[tokio::test]
async fn e_no_connect_at_all_is_closed_at_the_connect_timeout() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        // Over polling, too: the next poll carries the close packet.
        let p = Polling::open(addr, S).await;
        let start = Instant::now();
        let mut last = Vec::new();
        while !last.contains(&"1".to_owned()) {
            last = p.get_answering_pings().await;
            assert!(last.iter().all(|x| x == "1" || x == "6"), "{last:?}");
        }
        assert!(start.elapsed() >= Duration::from_millis(800));
        p.assert_unknown().await;
    })
    .await;
}

#[tokio::test]
async fn e_double_connect_and_events_before_connect_close() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let end = sio_attack(addr, &["40", "40"]).await;
        let got = texts(&end);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("40{\"sid\":"));
        let end = sio_attack(addr, &[r#"42["message","early"]"#]).await;
        assert!(texts(&end).is_empty(), "{end:?}");
        let end = sio_attack(addr, &["40", "4abc"]).await;
        assert_eq!(texts(&end).len(), 2);
        // Over polling: the session ends with the close packet.
        let p = Polling::open(addr, S).await;
        p.post_ok(b"40").await;
        p.post_ok(b"40").await;
        let mut got = Vec::new();
        loop {
            let resp = p.get().await;
            if resp.status != 200 {
                resp.assert_engine_error(400, 1);
                break;
            }
            let packets = resp.packets();
            got.extend(packets.into_iter().filter(|x| x != "2"));
            if got.last().map(String::as_str) == Some("1") {
                break;
            }
        }
        // What the first CONNECT produced, then the close packet (noops may come between).
        let got: Vec<&String> = got.iter().filter(|x| *x != "6").collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("40{\"sid\":"), "{got:?}");
        assert_eq!(got[1], r#"42["auth",{}]"#);
        assert_eq!(got[2], "1");
        p.assert_unknown().await;
    })
    .await;
}

#[tokio::test]
async fn e_disconnect_keeps_the_engine_session() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let (mut ws, _) = ws_open(addr, S).await;
        ws_send(&mut ws, "40").await;
        assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
        assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["auth",{}]"#);
        ws_send(&mut ws, "41").await;
        // The engine session is alive: it still pings, and `/` can be joined again.
        assert_eq!(ws_recv_text(&mut ws).await, "2");
        ws_send(&mut ws, "3").await;
        ws_send(&mut ws, "40").await;
        assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
        // A DISCONNECT for a namespace not joined closes.
        ws_send(&mut ws, "41/admin,").await;
        let end = ws_expect_end_answering_pings(&mut ws, Duration::from_secs(1)).await;
        assert_eq!(texts(&end), [r#"42["auth",{}]"#]);
    })
    .await;
}

#[tokio::test]
async fn e_client_connect_error_and_empty_packets_close() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for bad in [
            r#"44{"message":"x"}"#,
            r#"44["handle me please"]"#,
            "4",
            "47",
            "4 ",
        ] {
            let end = sio_attack(addr, &["40", bad]).await;
            assert_eq!(texts(&end).len(), 2, "{bad}: {end:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn e_parser_error_matrix_closes() {
    // socket.io-parser's "throw an error upon parsing error" inputs, and raw binary packets.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        for bad in [
            r#"442["some","data""#,
            r#"40/admin,"invalid""#,
            "40[]",
            "41/admin,{}",
            r#"42/admin,"invalid"#,
            "42/admin,{}",
            "4999",
            "45woooot",
            "45",
            r#"45999999-["x"]"#,
        ] {
            let end = sio_attack(addr, &["40", bad]).await;
            assert_eq!(texts(&end).len(), 2, "{bad}: {end:?}");
            assert!(end.after < Duration::from_millis(800), "{bad}: not at once");
        }
    })
    .await;
}

#[tokio::test]
async fn e_attachments_for_a_namespace_not_joined_are_refused_at_once() {
    // CVE-2026-48804 (python-socketio): attachments must not pile up for a namespace the
    // client has not joined.
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let header =
            r#"452-["my message","a",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#;
        // Before any CONNECT.
        let end = sio_attack(addr, &[header]).await;
        assert!(texts(&end).is_empty(), "{end:?}");
        assert!(end.after < Duration::from_millis(500), "not at once: {end:?}");
        // Connected to `/`, the header names `/custom`.
        let custom =
            r#"452-/custom,["my message",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#;
        let end = sio_attack(addr, &["40", custom]).await;
        assert_eq!(texts(&end).len(), 2, "{end:?}");
        assert!(end.after < Duration::from_millis(500), "not at once: {end:?}");
    })
    .await;
}

#[tokio::test]
async fn e_unknown_and_huge_event_names_are_ignored() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let (mut ws, _) = ws_open(addr, S).await;
        ws_send(&mut ws, "40").await;
        assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
        assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["auth",{}]"#);
        ws_send(&mut ws, r#"42["unknownEvent",1]"#).await;
        let huge = format!(r#"42["{}"]"#, "e".repeat(100_000));
        ws_send(&mut ws, &huge).await;
        ws_send(&mut ws, r#"4212["unknownEvent"]"#).await;
        ws_send(&mut ws, r#"42["message","ok"]"#).await;
        assert_eq!(
            ws_recv_app_text(&mut ws).await,
            r#"42["message-back","ok"]"#
        );
    })
    .await;
}

#[tokio::test]
async fn e_payloads_nested_100_deep_are_served() {
    // The packet's own array and 99 more levels, objects and arrays mixed.
    let addr = spawn_conformance_server().await;
    let (mut ws, _) = ws_open(addr, S).await;
    ws_send(&mut ws, "40").await;
    assert!(ws_recv_app_text(&mut ws).await.starts_with("40{"));
    assert_eq!(ws_recv_app_text(&mut ws).await, r#"42["auth",{}]"#);
    let nested = r#"{"a":["#.repeat(49) + r#"[1]"# + &"]}".repeat(49);
    ws_send(&mut ws, &format!(r#"42["message",{nested}]"#)).await;
    assert_eq!(
        ws_recv_app_text(&mut ws).await,
        format!(r#"42["message-back",{nested}]"#)
    );
    let deeper = format!("[{nested}]");
    ws_send(&mut ws, &format!(r#"42["message",{deeper}]"#)).await;
    let end = ws_expect_end(&mut ws, STEP).await;
    let answers: Vec<String> = texts(&end).into_iter().filter(|t| t != "2").collect();
    assert!(answers.is_empty(), "{answers:?}");
}

#[tokio::test]
async fn e_deeply_nested_payloads_close() {
    let addr = spawn_conformance_server().await;
    with_bystanders(addr, || async {
        let deep = format!(
            r#"42["message",{}{}]"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let end = sio_attack(addr, &["40", &deep]).await;
        assert_eq!(texts(&end).len(), 2, "{end:?}");
        let deep = format!(
            r#"40{}"#,
            r#"{"a":"#.repeat(5_000) + "1" + &"}".repeat(5_000)
        );
        let end = sio_attack(addr, &[&deep]).await;
        assert!(texts(&end).is_empty(), "{end:?}");
    })
    .await;
}
