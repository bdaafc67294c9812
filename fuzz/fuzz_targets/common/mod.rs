//! Checks shared by the fuzz targets that produce Socket.IO packets.
#![allow(dead_code)]

use bytes::Bytes;
use serde_json::Value;
use socketio_server::socketio::packet::{
    Decoder, DecoderLimits, MAX_ACK_ID, Packet, PacketKind, RESERVED_EVENTS, placeholder_num,
};

/// Most units in the last place two floats may differ by and still count as equal.
///
/// 0: the crate turns on serde_json's `float_roundtrip`, so a float printed and parsed again
/// must come back bit for bit. Without that feature serde_json parses floats on a fast path
/// that is not always correctly rounded (`9.539007199254761e+114` read back as
/// `9.539007199254759e+114`, 2 ulps off); raise this if the feature is ever dropped.
pub const FLOAT_ULPS: u64 = 0;

/// JSON equality, with floats allowed to differ by at most [`FLOAT_ULPS`].
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.is_f64() && y.is_f64(), x.as_f64(), y.as_f64()) {
                (true, Some(f), Some(g)) => {
                    f.is_finite()
                        && g.is_finite()
                        && f.is_sign_negative() == g.is_sign_negative()
                        && f.to_bits().abs_diff(g.to_bits()) <= FLOAT_ULPS
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Packet equality with [`json_eq`] for the payload.
pub fn packet_eq(a: &Packet, b: &Packet) -> bool {
    a.kind == b.kind
        && a.nsp == b.nsp
        && a.id == b.id
        && a.attachments == b.attachments
        && match (&a.data, &b.data) {
            (None, None) => true,
            (Some(x), Some(y)) => json_eq(x, y),
            _ => false,
        }
}

fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Collects the attachment index of every placeholder (an object whose `_placeholder` is
/// `true`; any other value of the key is data); panics on a malformed one.
fn placeholder_nums(value: &Value, out: &mut Vec<u64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| placeholder_nums(v, out)),
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
            let num = placeholder_num(map)
                .unwrap_or_else(|| panic!("accepted a malformed placeholder: {value}"));
            out.push(num);
        }
        Value::Object(map) => map.values().for_each(|v| placeholder_nums(v, out)),
        _ => {}
    }
}

/// Whatever a decoder hands out must satisfy these, whatever the input.
pub fn check_decoded(packet: &Packet, limits: DecoderLimits) {
    assert!(packet.nsp.starts_with('/'), "namespace {:?}", packet.nsp);
    assert_ne!(packet.kind, PacketKind::ConnectError, "CONNECT_ERROR from a client");
    assert_eq!(packet.wire_kind(), packet.kind, "kind and attachments disagree");
    assert_eq!(packet.is_binary(), !packet.attachments.is_empty());
    if let Some(id) = packet.id {
        assert!(id <= MAX_ACK_ID, "ack id {id}");
    }
    if let Some(data) = &packet.data {
        assert!(nesting(data) <= limits.max_depth, "nesting over the limit: {data}");
    }
    match packet.kind {
        PacketKind::Connect => {
            assert!(packet.id.is_none());
            assert!(matches!(packet.data, None | Some(Value::Object(_))));
        }
        PacketKind::Disconnect => {
            assert!(packet.id.is_none());
            assert!(packet.data.is_none());
        }
        PacketKind::Event | PacketKind::BinaryEvent => {
            let name = packet.event_name().expect("an event without a name");
            assert!(!RESERVED_EVENTS.contains(&name), "reserved event {name:?}");
            let (event, args, atts) = packet.clone().into_event().expect("into_event");
            assert_eq!(event, name);
            assert_eq!(atts, packet.attachments);
            if let Some(Value::Array(items)) = &packet.data {
                assert_eq!(args.len() + 1, items.len());
            }
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            // The arguments are always an array (`3<id>` with no payload decodes as `[]`).
            let Some(Value::Array(items)) = &packet.data else {
                panic!("ack arguments not an array: {:?}", packet.data);
            };
            match packet.id {
                // An ack without an id is well formed but acknowledges nothing.
                None => assert_eq!(packet.clone().into_ack(), None, "into_ack without an id"),
                Some(expected) => {
                    let (id, args, atts) = packet.clone().into_ack().expect("into_ack");
                    assert_eq!(id, expected);
                    assert_eq!(&args, items);
                    assert_eq!(atts, packet.attachments);
                }
            }
        }
        PacketKind::ConnectError => unreachable!(),
    }
    if packet.kind.is_binary() {
        assert!(packet.attachments.len() <= limits.max_attachments);
        let mut nums = Vec::new();
        if let Some(data) = &packet.data {
            placeholder_nums(data, &mut nums);
        }
        let count = packet.attachments.len() as u64;
        for &num in &nums {
            assert!(num < count, "placeholder {num} with {count} attachment(s)");
        }
        for i in 0..count {
            assert!(nums.contains(&i), "attachment {i} is never referenced");
        }
    }
    roundtrip(packet, limits);
}

/// Encodes `packet` and decodes it with a fresh decoder: the same packet must come back.
pub fn roundtrip(packet: &Packet, limits: DecoderLimits) {
    let text = packet.encode();
    let mut buf = Vec::new();
    packet.encode_into(&mut buf);
    assert_eq!(text.as_bytes(), &buf[..], "encode and encode_into differ");
    let mut decoder = Decoder::with_limits(limits);
    let mut out = decoder
        .decode_text(&text)
        .unwrap_or_else(|e| panic!("re-encoded packet {text:?} rejected: {e}"));
    for (i, att) in packet.attachments.iter().enumerate() {
        assert!(out.is_none(), "{text:?} complete after {i} attachment(s)");
        assert!(decoder.is_reconstructing());
        out = decoder
            .decode_binary(att.clone())
            .unwrap_or_else(|e| panic!("attachment {i} of {text:?} rejected: {e}"));
    }
    let again = out.unwrap_or_else(|| panic!("{text:?} incomplete after its attachments"));
    assert!(!decoder.is_reconstructing());
    assert!(
        packet_eq(&again, packet),
        "round trip changed the packet:\n  {packet:?}\n  {text:?}\n  {again:?}"
    );
}

/// The attachment count a binary packet's text declares, read independently of the decoder.
pub fn declared_attachments(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !matches!(bytes.first(), Some(b'5' | b'6')) {
        return None;
    }
    let digits: Vec<u8> = bytes[1..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Feeds one frame's worth of attachment data, with the checks of the reassembly state.
pub struct Tracked {
    pub decoder: Decoder,
    pub limits: DecoderLimits,
    /// Declared count and the attachments fed so far, while reconstructing.
    pending: Option<(usize, Vec<Bytes>)>,
}

impl Tracked {
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            decoder: Decoder::with_limits(limits),
            limits,
            pending: None,
        }
    }

    fn check_state(&self) {
        assert_eq!(self.decoder.is_reconstructing(), self.pending.is_some());
        assert_eq!(self.decoder.pending_nsp().is_some(), self.pending.is_some());
        if let Some(nsp) = self.decoder.pending_nsp() {
            assert!(nsp.starts_with('/'), "pending namespace {nsp:?}");
        }
        assert_eq!(self.decoder.limits(), self.limits);
    }

    /// A text frame. Returns whether the decoder accepted it.
    pub fn text(&mut self, text: &str) -> bool {
        let was_pending = self.pending.take().is_some();
        let result = self.decoder.decode_text(text);
        let ok = result.is_ok();
        match result {
            Err(e) => {
                let _ = e.to_string();
                if was_pending {
                    assert!(
                        matches!(e, socketio_server::socketio::packet::ParseError::UnexpectedText),
                        "text while reconstructing gave {e:?}"
                    );
                } else {
                    // Not reconstructing: the answer depends on the text alone.
                    let fresh = Decoder::with_limits(self.limits).decode_text(text);
                    assert_eq!(
                        fresh.map_err(|e| e.to_string()).err(),
                        Some(e.to_string())
                    );
                }
            }
            Ok(Some(packet)) => {
                assert!(!was_pending);
                assert!(packet.attachments.is_empty() && !packet.kind.is_binary());
                check_decoded(&packet, self.limits);
            }
            Ok(None) => {
                assert!(!was_pending);
                let declared = declared_attachments(text)
                    .unwrap_or_else(|| panic!("{text:?} pending without a count"));
                assert!(declared >= 1 && declared <= self.limits.max_attachments);
                self.pending = Some((declared, Vec::new()));
            }
        }
        self.check_state();
        ok
    }

    /// A binary frame. Returns whether the decoder accepted it.
    pub fn binary(&mut self, data: Bytes) -> bool {
        let result = self.decoder.decode_binary(data.clone());
        let ok = result.is_ok();
        match (result, self.pending.take()) {
            (Err(e), None) => {
                assert!(
                    matches!(e, socketio_server::socketio::packet::ParseError::UnexpectedBinary),
                    "binary while idle gave {e:?}"
                );
            }
            (Err(e), Some(_)) => panic!("attachment rejected while reconstructing: {e:?}"),
            (Ok(_), None) => panic!("binary frame accepted while idle"),
            (Ok(out), Some((declared, mut fed))) => {
                fed.push(data);
                match out {
                    None => {
                        assert!(fed.len() < declared, "still pending after {} of {declared}", fed.len());
                        self.pending = Some((declared, fed));
                    }
                    Some(packet) => {
                        assert_eq!(fed.len(), declared, "complete after {} of {declared}", fed.len());
                        assert_eq!(packet.attachments, fed, "attachments out of order");
                        check_decoded(&packet, self.limits);
                    }
                }
            }
        }
        self.check_state();
        ok
    }

    pub fn reset(&mut self) {
        self.decoder.reset();
        self.pending = None;
        self.check_state();
    }
}
