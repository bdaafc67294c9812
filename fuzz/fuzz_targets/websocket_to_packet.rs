//! The WebSocket-to-packet path: WebSocket messages through the Engine.IO text decoder into
//! one connection's Socket.IO decoder, the way a WebSocket session feeds them.
//!
//! The first input byte picks the form of the rest: even, a sequence of already framed
//! messages; odd, raw bytes from a client read by a server-side WebSocket with the server's
//! settings (masked frames only, small message and frame caps), so fragmentation, control
//! frames and UTF-8 checks run too.
#![no_main]

mod common;

use std::io::{self, Read, Write};

use bytes::Bytes;
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use socketio_server::engineio::packet::{Message, Packet, decode_text};
use socketio_server::socketio::packet::DecoderLimits;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use common::Tracked;

#[derive(Arbitrary, Debug)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// One connection: the Engine.IO layer in front of the Socket.IO decoder.
struct Connection {
    sio: Tracked,
    closed: bool,
}

impl Connection {
    fn new() -> Self {
        Self {
            sio: Tracked::new(DecoderLimits::default()),
            closed: false,
        }
    }

    fn on_text(&mut self, text: Utf8Bytes) {
        let original = text.as_str().to_owned();
        match decode_text(text) {
            Ok(Packet::Message(Message::Text(body))) => {
                assert_eq!(format!("4{}", body.as_str()), original);
                if !self.sio.text(&body) {
                    self.closed = true;
                }
            }
            // `b` and base64: a binary message written as text (`forceBase64` clients); the
            // server hands it on like a binary frame.
            Ok(Packet::Message(Message::Binary(data))) => {
                assert!(original.starts_with('b'), "text {original:?} decoded to binary");
                self.on_binary(data);
            }
            Ok(_) => {}
            // The server closes the session on a bad packet.
            Err(_) => self.closed = true,
        }
    }

    fn on_binary(&mut self, data: Bytes) {
        if !self.sio.binary(data) {
            self.closed = true;
        }
    }
}

/// A client's byte stream; what the server writes back (pongs, close frames) is dropped.
struct Wire<'a> {
    input: &'a [u8],
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn framed(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut conn = Connection::new();
    let mut n = 0;
    while !conn.closed && !u.is_empty() && n < 256 {
        n += 1;
        let Ok(frame) = Frame::arbitrary(&mut u) else {
            break;
        };
        match frame {
            Frame::Text(text) => conn.on_text(Utf8Bytes::from(text)),
            Frame::Binary(data) => conn.on_binary(Bytes::from(data)),
        }
    }
}

fn raw(data: &[u8]) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 16)
        .max_message_size(Some(4096))
        .max_frame_size(Some(4096))
        .accept_unmasked_frames(false);
    let mut ws = WebSocket::from_raw_socket(Wire { input: data }, Role::Server, Some(config));
    let mut conn = Connection::new();
    for _ in 0..1024 {
        if conn.closed {
            break;
        }
        match ws.read() {
            Ok(WsMessage::Text(text)) => conn.on_text(text),
            Ok(WsMessage::Binary(data)) => conn.on_binary(data),
            Ok(WsMessage::Close(_)) => break,
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => {}
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        framed(rest);
    } else {
        raw(rest);
    }
});
