//! The Engine.IO v4 packet and payload codec: bytes in, packets out, no I/O.
//!
//! Outbound packets are kept in their wire form ([`Frame`]) from the moment they are queued, so a
//! broadcast is encoded once and every recipient's queue holds a cheap clone of the same bytes.
//! A text frame is the same string on both transports; only long-polling joins several of them
//! with the record separator and turns binary frames into `b` + base64.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::base64;
use super::error::PacketError;

/// Separates packets in a long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `1`: the client closes the session.
    Close,
    /// `2`, or `2probe` during an upgrade.
    Ping {
        /// `2probe`: a WebSocket testing the upgrade path.
        probe: bool,
    },
    /// `3`, the answer to our heartbeat (or `3probe`, which a server never expects).
    Pong {
        /// `3probe`.
        probe: bool,
    },
    /// `4…` or a binary message.
    Message(Message),
    /// `5`: the client completes the upgrade to WebSocket.
    Upgrade,
    /// `6`.
    Noop,
}

/// An application message: what the layer above sends and receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (without the `4` type prefix).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// A packet in its wire form, ready to be written to either transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The full text of a packet, type digit included (`4hello`, `2`, `0{...}`).
    Text(Utf8Bytes),
    /// The raw bytes of a binary message.
    Binary(Bytes),
}

impl Frame {
    /// `0` + the handshake JSON.
    pub fn open(json: &str) -> Frame {
        Frame::Text(Utf8Bytes::from(format!("0{json}")))
    }

    pub(crate) const CLOSE: Frame = Frame::Text(Utf8Bytes::from_static("1"));
    pub(crate) const PING: Frame = Frame::Text(Utf8Bytes::from_static("2"));
    pub(crate) const NOOP: Frame = Frame::Text(Utf8Bytes::from_static("6"));

    /// A text message: `4` + `text`, encoded once so it can be shared between recipients.
    pub fn message_text(text: &str) -> Frame {
        let mut s = String::with_capacity(text.len() + 1);
        s.push('4');
        s.push_str(text);
        Frame::Text(Utf8Bytes::from(s))
    }

    /// A binary message.
    pub fn message_binary(data: Bytes) -> Frame {
        Frame::Binary(data)
    }

    /// Bytes this frame occupies in a queue (and roughly on the wire).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the frame carries no bytes at all (never true for a valid packet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length of this frame inside a long-polling payload.
    fn payload_len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => 1 + base64::encoded_len(b.len()),
        }
    }
}

/// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
///
/// `b` and base64 is a binary message written as text: what polling always carries, and what
/// a client with `forceBase64` sends over WebSocket too.
pub fn decode_text(text: Utf8Bytes) -> Result<Packet, PacketError> {
    let bytes = text.as_bytes();
    let Some(&kind) = bytes.first() else {
        return Err(PacketError::Empty);
    };
    let rest = &bytes[1..];
    match (kind, rest) {
        (b'b', data) => decode_base64(data),
        (b'1', b"") => Ok(Packet::Close),
        (b'2', b"") => Ok(Packet::Ping { probe: false }),
        (b'2', b"probe") => Ok(Packet::Ping { probe: true }),
        (b'3', b"") => Ok(Packet::Pong { probe: false }),
        (b'3', b"probe") => Ok(Packet::Pong { probe: true }),
        (b'4', _) => {
            let body = Bytes::from(text).slice(1..);
            // The first byte is the ASCII digit `4`, so the rest is still valid UTF-8.
            let body = Utf8Bytes::try_from(body).map_err(|_| PacketError::InvalidUtf8)?;
            Ok(Packet::Message(Message::Text(body)))
        }
        (b'5', b"") => Ok(Packet::Upgrade),
        (b'6', b"") => Ok(Packet::Noop),
        (b'0', _) => Err(PacketError::UnexpectedOpen),
        (b'1'..=b'6', _) => Err(PacketError::UnexpectedData),
        _ => Err(PacketError::UnknownType),
    }
}

/// Decodes a long-polling POST body into its packets, at most `max_packets` of them.
///
/// Text records are taken as they are; a record starting with `b` is a base64 binary message.
pub fn decode_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, PacketError> {
    if body.is_empty() {
        return Err(PacketError::Empty);
    }
    let mut packets = Vec::new();
    let mut start = 0;
    let ends = memchr::memchr_iter(RECORD_SEPARATOR, &body).chain([body.len()]);
    for end in ends {
        if packets.len() == max_packets {
            return Err(PacketError::TooManyPackets);
        }
        packets.push(decode_record(body.slice(start..end))?);
        start = end + 1;
    }
    Ok(packets)
}

fn decode_record(record: Bytes) -> Result<Packet, PacketError> {
    if record.first() == Some(&b'b') {
        return decode_base64(&record[1..]);
    }
    let text = Utf8Bytes::try_from(record).map_err(|_| PacketError::InvalidUtf8)?;
    decode_text(text)
}

fn decode_base64(data: &[u8]) -> Result<Packet, PacketError> {
    let data = base64::decode(data).ok_or(PacketError::InvalidBase64)?;
    Ok(Packet::Message(Message::Binary(Bytes::from(data))))
}

/// Joins frames into one long-polling response body.
pub fn encode_payload(frames: &[Frame]) -> Bytes {
    let len = frames.iter().map(Frame::payload_len).sum::<usize>() + frames.len();
    let mut out = BytesMut::with_capacity(len);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.put_u8(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(t) => out.put_slice(t.as_bytes()),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                base64::encode_into(b, &mut out);
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s)
    }

    #[test]
    fn decodes_every_packet_type() {
        assert_eq!(decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(decode_text(text("2")), Ok(Packet::Ping { probe: false }));
        assert_eq!(
            decode_text(text("2probe")),
            Ok(Packet::Ping { probe: true })
        );
        assert_eq!(decode_text(text("3")), Ok(Packet::Pong { probe: false }));
        assert_eq!(
            decode_text(text("3probe")),
            Ok(Packet::Pong { probe: true })
        );
        assert_eq!(decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(text("6")), Ok(Packet::Noop));
        assert_eq!(
            decode_text(text("4héllo")),
            Ok(Packet::Message(Message::Text(text("héllo"))))
        );
        assert_eq!(
            decode_text(text("4")),
            Ok(Packet::Message(Message::Text(text(""))))
        );
        // A binary message as base64 text, as `forceBase64` clients send it over WebSocket.
        assert_eq!(
            decode_text(text("bAQID")),
            Ok(Packet::Message(Message::Binary(Bytes::from_static(&[
                1, 2, 3
            ]))))
        );
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(decode_text(text("")), Err(PacketError::Empty));
        assert_eq!(decode_text(text("abc")), Err(PacketError::UnknownType));
        assert_eq!(decode_text(text("a123")), Err(PacketError::UnknownType));
        assert_eq!(decode_text(text("7")), Err(PacketError::UnknownType));
        assert_eq!(decode_text(text("0{}")), Err(PacketError::UnexpectedOpen));
        assert_eq!(decode_text(text("1x")), Err(PacketError::UnexpectedData));
        assert_eq!(
            decode_text(text("2probex")),
            Err(PacketError::UnexpectedData)
        );
        assert_eq!(decode_text(text("5 ")), Err(PacketError::UnexpectedData));
        assert_eq!(decode_text(text("b!!!")), Err(PacketError::InvalidBase64));
    }

    #[test]
    fn decodes_payloads_with_text_and_binary() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e3"), 16).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Message::Text(text("hello"))),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Packet::Pong { probe: false },
            ]
        );
    }

    #[test]
    fn takes_base64_with_line_breaks() {
        // Java's engine.io-client ends each binary record with a newline, before the separator.
        let packets = decode_payload(Bytes::from_static(b"bAQID\n\x1e4a\x1ebAQ\r\nIDBA==\n"), 16);
        assert_eq!(
            packets.unwrap(),
            vec![
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3]))),
                Packet::Message(Message::Text(text("a"))),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
            ]
        );
        assert_eq!(
            decode_text(text("bAQID\n")),
            Ok(Packet::Message(Message::Binary(Bytes::from_static(&[
                1, 2, 3
            ]))))
        );
        assert_eq!(
            decode_text(text("bAQ!D\n")),
            Err(PacketError::InvalidBase64)
        );
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(decode_payload(Bytes::new(), 16), Err(PacketError::Empty));
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e"), 16),
            Err(PacketError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"b!!!"), 16),
            Err(PacketError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff"), 16),
            Err(PacketError::InvalidUtf8)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e4b\x1e4c"), 2),
            Err(PacketError::TooManyPackets)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"{}"), 16),
            Err(PacketError::UnknownType)
        );
    }

    #[test]
    fn encodes_payloads() {
        let body = encode_payload(&[
            Frame::message_text("hello"),
            Frame::message_binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::PING,
        ]);
        assert_eq!(&body[..], b"4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(&encode_payload(&[Frame::NOOP])[..], b"6");
    }

    #[test]
    fn payload_round_trip() {
        let frames = [
            Frame::message_text("plain"),
            Frame::message_binary(Bytes::from_static(b"\x00\xff\x1e")),
        ];
        let decoded = decode_payload(encode_payload(&frames), 16).unwrap();
        assert_eq!(
            decoded,
            vec![
                Packet::Message(Message::Text(text("plain"))),
                Packet::Message(Message::Binary(Bytes::from_static(b"\x00\xff\x1e"))),
            ]
        );
    }
}
