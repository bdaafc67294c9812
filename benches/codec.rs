//! Micro-benchmarks of the Engine.IO and Socket.IO codecs: encode and decode of each packet kind.
//!
//! `cargo bench --bench codec` runs them all; `cargo bench --bench codec -- event` only those
//! whose name contains `event`. Each case is timed in batches for about 300 ms after a short
//! warm-up, and the best batch's time per operation is printed (the least disturbed one), with
//! the mean. Run without `--bench` (as `cargo test --all-targets` does), each case runs once,
//! untimed, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use socketio_server::engineio::packet::{Frame, decode_payload, decode_text, encode_payload};
use socketio_server::socketio::packet::{Decoder, Packet};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Time spent measuring each case.
const BUDGET: Duration = Duration::from_millis(300);
/// Time spent warming each case up.
const WARMUP: Duration = Duration::from_millis(50);

struct Bench {
    filter: Vec<String>,
    ran: usize,
    /// Not under `cargo bench` (e.g. `cargo test --all-targets`): run each case once, untimed.
    smoke: bool,
}

impl Bench {
    fn run<R>(&mut self, name: &str, mut op: impl FnMut() -> R) {
        if !self.filter.is_empty() && !self.filter.iter().any(|f| name.contains(f.as_str())) {
            return;
        }
        self.ran += 1;
        if self.smoke {
            black_box(op());
            return;
        }
        // Find a batch size that takes about a millisecond, warming up on the way.
        let mut batch: u64 = 1;
        let warm_end = Instant::now() + WARMUP;
        loop {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(op());
            }
            let took = t.elapsed();
            if took < Duration::from_millis(1) && batch < (1 << 30) {
                batch *= 2;
            } else if Instant::now() >= warm_end {
                break;
            }
        }
        let end = Instant::now() + BUDGET;
        let mut best = f64::INFINITY;
        let mut total_ops: u64 = 0;
        let mut total_time = Duration::ZERO;
        while Instant::now() < end {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(op());
            }
            let took = t.elapsed();
            total_ops += batch;
            total_time += took;
            best = best.min(took.as_nanos() as f64 / batch as f64);
        }
        let mean = total_time.as_nanos() as f64 / total_ops.max(1) as f64;
        println!("{name:<44} {best:>10.1} ns/op  (mean {mean:.1}, {total_ops} ops)");
    }
}

fn text_of(len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push((b'a' + (s.len() % 26) as u8) as char);
    }
    s
}

fn engineio(b: &mut Bench) {
    let small = format!("4{}", "hello world");
    let kib = format!("4{}", text_of(1024));
    let cases: [(&str, &str); 9] = [
        ("close", "1"),
        ("ping", "2"),
        ("ping probe", "2probe"),
        ("pong", "3"),
        ("pong probe", "3probe"),
        ("message 11 B", &small),
        ("message 1 KiB", &kib),
        ("upgrade", "5"),
        ("noop", "6"),
    ];
    for (name, wire) in cases {
        let text = Utf8Bytes::from(wire.to_owned());
        b.run(&format!("eio decode_text {name}"), || {
            decode_text(black_box(text.clone()))
        });
    }

    // Long-polling bodies.
    let mixed = Bytes::from(format!("4hello\u{1e}2\u{1e}{kib}\u{1e}bAQIDBA==\u{1e}6"));
    b.run("eio decode_payload 5 packets (text+binary)", || {
        decode_payload(black_box(mixed.clone()), 256)
    });
    let one = Bytes::from_static(b"3");
    b.run("eio decode_payload 1 packet", || {
        decode_payload(black_box(one.clone()), 256)
    });
    let many: String = (0..64)
        .map(|i| format!("4m{i}"))
        .collect::<Vec<_>>()
        .join("\u{1e}");
    let many = Bytes::from(many);
    b.run("eio decode_payload 64 packets", || {
        decode_payload(black_box(many.clone()), 256)
    });
    // One large text message: the separator scan runs over all of it.
    let large = Bytes::from(format!("4{}", text_of(64 * 1024)));
    b.run("eio decode_payload 1 packet 64 KiB", || {
        decode_payload(black_box(large.clone()), 256)
    });

    // Frames, as the server queues them, and polling bodies made of them.
    b.run("eio Frame::message_text 11 B", || {
        Frame::message_text(black_box("hello world"))
    });
    let kib_body = text_of(1024);
    b.run("eio Frame::message_text 1 KiB", || {
        Frame::message_text(black_box(&kib_body))
    });
    let handshake = r#"{"sid":"AAAAAAAAAAAAAAAAAAAA","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    b.run("eio Frame::open", || Frame::open(black_box(handshake)));
    let frames_one = vec![Frame::message_text("hello world")];
    b.run("eio encode_payload 1 text frame", || {
        encode_payload(black_box(&frames_one))
    });
    let frames_mixed = vec![
        Frame::message_text("hello world"),
        Frame::message_text(&kib_body),
        Frame::message_binary(Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])),
        Frame::message_binary(Bytes::from(vec![7u8; 1024])),
    ];
    b.run("eio encode_payload 4 frames (text+binary)", || {
        encode_payload(black_box(&frames_mixed))
    });
    let frames_many: Vec<Frame> = (0..64)
        .map(|i| Frame::message_text(&format!("m{i}")))
        .collect();
    b.run("eio encode_payload 64 text frames", || {
        encode_payload(black_box(&frames_many))
    });
}

/// Binary messages over long-polling: the base64 of `b` records, through the public entry points
/// (a record is `b` and base64, so these are base64 decode and encode plus one allocation).
fn base64(b: &mut Bench) {
    for (name, len) in [("64 KiB", 64 * 1024), ("1 MiB", 1024 * 1024)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let frames = vec![Frame::message_binary(Bytes::from(data))];
        let wire = encode_payload(&frames);
        let text = Utf8Bytes::try_from(wire).expect("base64 is ASCII");
        assert!(decode_text(text.clone()).is_ok());
        b.run(&format!("eio base64 decode {name}"), || {
            decode_text(black_box(text.clone()))
        });
        b.run(&format!("eio base64 encode {name}"), || {
            encode_payload(black_box(&frames))
        });
    }
}

fn socketio(b: &mut Bench) {
    let kib = text_of(1024);
    let user =
        json!({ "user": { "id": "AAAAAAAAAAAAAAAAAAAA", "name": "alice", "room": "lobby" } });
    let packets: Vec<(&str, Packet)> = vec![
        ("connect", Packet::connect("/", "AAAAAAAAAAAAAAAAAAAA")),
        (
            "connect /admin",
            Packet::connect("/admin", "AAAAAAAAAAAAAAAAAAAA"),
        ),
        (
            "connect_error",
            Packet::connect_error("/", "not authorized", Some(json!({ "code": 1 }))),
        ),
        ("disconnect", Packet::disconnect("/")),
        (
            "event 64 B",
            Packet::event("/", "msg", vec![Value::String(text_of(64))]),
        ),
        (
            "event 1 KiB",
            Packet::event("/", "msg", vec![Value::String(kib.clone())]),
        ),
        (
            "event object",
            Packet::event(
                "/",
                "roomMessage",
                vec![json!({ "message": text_of(64), "from": "alice" })],
            ),
        ),
        (
            "event with ack id",
            Packet::event(
                "/",
                "login",
                vec![json!({ "name": "alice", "room": "lobby" })],
            )
            .with_id(12),
        ),
        ("ack", Packet::ack("/", 12, vec![user.clone()])),
        (
            "binary event 1 attachment",
            Packet::event("/", "file", vec![json!({ "_placeholder": true, "num": 0 })])
                .with_attachments(vec![Bytes::from(vec![0u8; 1024])]),
        ),
        (
            "binary ack 2 attachments",
            Packet::ack(
                "/",
                3,
                vec![
                    json!({ "_placeholder": true, "num": 0 }),
                    json!({ "_placeholder": true, "num": 1 }),
                ],
            )
            .with_attachments(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]),
        ),
    ];
    for (name, packet) in &packets {
        b.run(&format!("sio encode {name}"), || black_box(packet).encode());
    }

    // Decoding what clients send: the text parts (and attachments) of each kind a client sends,
    // plus what a server sends, for clients built on this codec.
    let texts: Vec<(&str, String, Vec<Bytes>)> = vec![
        ("connect", "0".to_owned(), vec![]),
        (
            "connect with auth",
            r#"0{"room":"lobby","token":"abc"}"#.to_owned(),
            vec![],
        ),
        ("connect /admin", "0/admin,".to_owned(), vec![]),
        ("disconnect", "1".to_owned(), vec![]),
        (
            "event 64 B",
            format!(r#"2["msg","{}"]"#, text_of(64)),
            vec![],
        ),
        ("event 1 KiB", format!(r#"2["msg","{kib}"]"#), vec![]),
        (
            "event with ack id",
            r#"212["login",{"name":"alice","room":"lobby"}]"#.to_owned(),
            vec![],
        ),
        (
            "event /admin with ack id",
            r#"2/admin,7["ping"]"#.to_owned(),
            vec![],
        ),
        ("ack", format!("312[{user}]"), vec![]),
        (
            "binary event 1 attachment",
            r#"51-["file",{"_placeholder":true,"num":0}]"#.to_owned(),
            vec![Bytes::from(vec![0u8; 1024])],
        ),
        (
            "binary ack 2 attachments",
            r#"62-3[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#.to_owned(),
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
        ),
    ];
    let mut decoder = Decoder::new();
    for (name, text, attachments) in &texts {
        // Check once that the case is valid, so the loop measures real work.
        let mut check = Decoder::new();
        let mut done = check.decode_text(text).expect("valid packet");
        for a in attachments {
            done = check.decode_binary(a.clone()).expect("valid attachment");
        }
        assert!(done.is_some(), "{name}: incomplete");
        b.run(&format!("sio decode {name}"), || {
            let mut p = decoder.decode_text(black_box(text)).ok().flatten();
            for a in attachments {
                p = decoder.decode_binary(a.clone()).ok().flatten();
            }
            p
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else not starting with `-` filters by name.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let filter = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    let mut b = Bench {
        filter,
        ran: 0,
        smoke,
    };
    engineio(&mut b);
    base64(&mut b);
    socketio(&mut b);
    if b.ran == 0 {
        println!("no benchmark matches the filter");
    } else if smoke {
        println!(
            "codec: {} cases ran once (use `cargo bench` to time them)",
            b.ran
        );
    }
}
