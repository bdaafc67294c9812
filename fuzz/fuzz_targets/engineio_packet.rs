//! Engine.IO: one text packet, a long-polling payload, and payloads built from the input
//! encoded and decoded again.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use socketio_server::engineio::PacketError;
use socketio_server::engineio::packet::{
    Frame, Message, Packet, RECORD_SEPARATOR, decode_payload, decode_text, encode_payload,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One text packet: what comes back must be exactly what the text says.
fn check_text(text: &str) {
    let result = decode_text(Utf8Bytes::from(text.to_owned()));
    match &result {
        Ok(Packet::Message(Message::Text(body))) => {
            assert_eq!(format!("4{}", body.as_str()), text);
        }
        // `b` and base64 is a binary message written as text (`forceBase64` over WebSocket):
        // the same as that record in a payload, and our own encoding of the data reads back.
        Ok(Packet::Message(Message::Binary(data))) => {
            assert!(text.starts_with('b'), "{text:?} decoded to binary");
            assert_eq!(
                decode_payload(Bytes::copy_from_slice(text.as_bytes()), 1).as_deref(),
                Ok(std::slice::from_ref(result.as_ref().unwrap()))
            );
            let again = encode_payload(&[Frame::message_binary(data.clone())]);
            let again = std::str::from_utf8(&again).expect("base64 is ASCII");
            assert_eq!(decode_text(Utf8Bytes::from(again.to_owned())).as_ref(), result.as_ref());
        }
        Ok(Packet::Close) => assert_eq!(text, "1"),
        Ok(Packet::Ping { probe }) => assert_eq!(text, if *probe { "2probe" } else { "2" }),
        Ok(Packet::Pong { probe }) => assert_eq!(text, if *probe { "3probe" } else { "3" }),
        Ok(Packet::Upgrade) => assert_eq!(text, "5"),
        Ok(Packet::Noop) => assert_eq!(text, "6"),
        Err(e) => {
            let _ = e.to_string();
            let expected = match text.as_bytes().first() {
                None => PacketError::Empty,
                Some(b'0') => PacketError::UnexpectedOpen,
                Some(b'1'..=b'6') => PacketError::UnexpectedData,
                Some(b'b') => PacketError::InvalidBase64,
                Some(_) => PacketError::UnknownType,
            };
            assert_eq!(*e, expected, "{text:?}");
        }
    }
}

/// One long-polling body.
fn check_payload(body: &[u8], max_packets: usize) {
    let records: Vec<&[u8]> = body.split(|&b| b == RECORD_SEPARATOR).collect();
    match decode_payload(Bytes::copy_from_slice(body), max_packets) {
        Ok(packets) => {
            assert!(!body.is_empty());
            assert_eq!(packets.len(), records.len());
            assert!(packets.len() <= max_packets);
            for (packet, record) in packets.iter().zip(&records) {
                if record.first() == Some(&b'b') {
                    let Packet::Message(Message::Binary(data)) = packet else {
                        panic!("a `b` record decoded to {packet:?}");
                    };
                    // Our own encoding of the data decodes to the same data.
                    let again = decode_payload(
                        encode_payload(&[Frame::message_binary(data.clone())]),
                        1,
                    )
                    .expect("re-encoded binary record");
                    assert_eq!(again, vec![packet.clone()]);
                } else {
                    let text = std::str::from_utf8(record).expect("accepted a non-UTF-8 record");
                    assert_eq!(
                        decode_text(Utf8Bytes::from(text.to_owned())).as_ref(),
                        Ok(packet)
                    );
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if e == PacketError::TooManyPackets {
                assert!(records.len() > max_packets);
            }
        }
    }
}

/// Frames built from the input, separated by NUL: a chunk whose first byte is even is a
/// binary message of the rest, otherwise a text message of the rest (lossy UTF-8, without
/// record separators, which a text packet cannot carry in a payload).
fn check_roundtrip(data: &[u8]) {
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    for chunk in data.split(|&b| b == 0).take(64) {
        let Some((&tag, rest)) = chunk.split_first() else {
            continue;
        };
        if tag % 2 == 0 {
            let bytes = Bytes::copy_from_slice(rest);
            let frame = Frame::message_binary(bytes.clone());
            assert_eq!(frame.len(), bytes.len());
            frames.push(frame);
            expected.push(Packet::Message(Message::Binary(bytes)));
        } else {
            let text: String = String::from_utf8_lossy(rest)
                .chars()
                .filter(|&c| c != char::from(RECORD_SEPARATOR))
                .collect();
            let frame = Frame::message_text(&text);
            assert_eq!(frame.len(), text.len() + 1);
            assert!(!frame.is_empty());
            frames.push(frame);
            expected.push(Packet::Message(Message::Text(Utf8Bytes::from(text))));
        }
    }
    if frames.is_empty() {
        assert!(encode_payload(&frames).is_empty());
        return;
    }
    let body = encode_payload(&frames);
    let decoded = decode_payload(body.clone(), frames.len())
        .unwrap_or_else(|e| panic!("our own payload {body:?} rejected: {e}"));
    assert_eq!(decoded, expected);
    if frames.len() > 1 {
        assert_eq!(
            decode_payload(body, frames.len() - 1),
            Err(PacketError::TooManyPackets)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_text(text);
    }
    check_text(&String::from_utf8_lossy(data));
    let max = data.first().map_or(1, |&b| usize::from(b % 8) + 1);
    check_payload(data, max);
    check_payload(data, 64);
    check_roundtrip(data);
});
