//! What nodes say to each other through Redis, in the format of npm `@socket.io/redis-adapter`
//! (its classic pub/sub mode), so that our nodes and Node.js nodes serve one cluster together.
//! Pure: bytes in, messages out; no I/O.
//!
//! Per namespace `nsp` and key prefix `key` (default `socket.io`):
//! - broadcasts go to `key#nsp#` or, when they name exactly one room, `key#nsp#room#`, as the
//!   MessagePack array `[uid, packet, opts]`;
//! - requests go to `key-request#nsp#`, answers to `key-response#nsp#` (or the asking node's
//!   own `key-response#nsp#uid#`); both are JSON objects, or MessagePack maps when they carry a
//!   packet, with a numeric `type` ([`RequestType`]) and a `requestId`.
//!
//! Binary data is MessagePack `bin` on the wire and a placeholder plus attachment here, the way
//! the Socket.IO layer carries it.

use bytes::Bytes;
use serde_json::{Map, Number, Value, json};

use crate::socketio::adapter::{BroadcastFlags, BroadcastOptions, BroadcastTarget};
use crate::socketio::packet::{Packet, PacketKind, parse_json, placeholder, placeholder_num};

/// Nesting a message from another node may have: a packet's own (at most 127, the most a
/// client's can have) inside the adapter's envelope.
const MAX_DEPTH: usize = 160;

/// The default channel prefix, as in Node's adapter.
pub const DEFAULT_KEY: &str = "socket.io";

/// The kinds of request and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestType {
    /// Socket ids in rooms.
    Sockets = 0,
    /// Every room.
    AllRooms = 1,
    /// Sockets join rooms.
    RemoteJoin = 2,
    /// Sockets leave rooms.
    RemoteLeave = 3,
    /// Sockets are disconnected.
    RemoteDisconnect = 4,
    /// Sockets with their rooms, data and handshake.
    RemoteFetch = 5,
    /// An event between servers.
    ServerSideEmit = 6,
    /// A broadcast that wants acknowledgements.
    Broadcast = 7,
    /// How many clients a node sent such a broadcast to.
    BroadcastClientCount = 8,
    /// One client's acknowledgement of such a broadcast.
    BroadcastAck = 9,
}

impl RequestType {
    /// The type of a wire number.
    pub fn from_number(n: u64) -> Option<RequestType> {
        use RequestType::*;
        Some(match n {
            0 => Sockets,
            1 => AllRooms,
            2 => RemoteJoin,
            3 => RemoteLeave,
            4 => RemoteDisconnect,
            5 => RemoteFetch,
            6 => ServerSideEmit,
            7 => Broadcast,
            8 => BroadcastClientCount,
            9 => BroadcastAck,
            _ => return None,
        })
    }
}

/// Why a message from another node was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not valid MessagePack (or JSON).
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// Decodable, but not shaped like the message it should be.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// The channels of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// `key#nsp#`: broadcasts to the whole namespace; room channels extend it.
    pub broadcast: String,
    /// `key-request#nsp#`.
    pub request: String,
    /// `key-response#nsp#`.
    pub response: String,
    /// `key-response#nsp#uid#`: answers meant for this node only.
    pub own_response: String,
    /// The pattern that takes every broadcast of the namespace (the name escaped: a
    /// namespace named `/room-*` takes its own broadcasts, not every `/room-` one's).
    pub broadcast_pattern: String,
}

impl Channels {
    /// The channels of namespace `nsp` for the node `uid`.
    pub fn new(key: &str, nsp: &str, uid: &str) -> Channels {
        Channels {
            broadcast: format!("{key}#{nsp}#"),
            request: format!("{key}-request#{nsp}#"),
            response: format!("{key}-response#{nsp}#"),
            own_response: format!("{key}-response#{nsp}#{uid}#"),
            broadcast_pattern: format!("{}*", super::glob_escape(&format!("{key}#{nsp}#"))),
        }
    }

    /// Where a broadcast to these rooms goes: a room's own channel when there is one room.
    pub fn broadcast_channel(&self, target: &BroadcastTarget) -> String {
        match target.rooms.as_slice() {
            [room] => format!("{}{room}#", self.broadcast),
            _ => self.broadcast.clone(),
        }
    }

    /// The room a broadcast channel names (`""` for the whole namespace), or `None` when the
    /// channel is not one of this namespace's broadcast channels.
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.broadcast.as_str())?;
        if rest.is_empty() {
            return Some("");
        }
        rest.strip_suffix('#')
    }

    /// The answer channel for a request from node `uid`.
    pub fn response_to(&self, uid: &str, specific: bool) -> String {
        if specific {
            format!("{}{uid}#", self.response)
        } else {
            self.response.clone()
        }
    }
}

/// A message decoded into JSON, with its binary parts as attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// The message, binary parts replaced by placeholders.
    pub value: Value,
    /// The binary parts, in placeholder order.
    pub attachments: Vec<Bytes>,
}

/// Decodes a request or answer: JSON when it starts with `{`, MessagePack otherwise. JSON is
/// read as `JSON.parse` reads what a Node node's `JSON.stringify` wrote: a lone surrogate (a
/// string cut through an emoji, in a socket's data) does not make the whole answer unreadable.
pub fn decode_body(bytes: &[u8]) -> Result<Body, WireError> {
    if bytes.first() == Some(&b'{') {
        let text = std::str::from_utf8(bytes).map_err(|e| WireError::Undecodable(e.to_string()))?;
        let value = parse_json(text).map_err(|e| WireError::Undecodable(e.to_string()))?;
        return Ok(Body {
            value,
            attachments: Vec::new(),
        });
    }
    decode_msgpack(bytes)
}

/// Decodes MessagePack.
pub fn decode_msgpack(mut bytes: &[u8]) -> Result<Body, WireError> {
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, MAX_DEPTH)
        .map_err(|e| WireError::Undecodable(e.to_string()))?;
    let mut attachments = Vec::new();
    let value = from_msgpack(value, &mut attachments);
    Ok(Body { value, attachments })
}

/// Encodes a value as MessagePack, placeholders that point at an attachment as `bin`.
pub fn encode_msgpack(value: &Value, attachments: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &to_msgpack(value, attachments));
    out
}

fn from_msgpack(value: rmpv::Value, attachments: &mut Vec<Bytes>) -> Value {
    use rmpv::Value as M;
    match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (_, Some(s)) => Value::from(s),
            _ => Value::Null,
        },
        M::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        M::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        M::String(s) => Value::String(s.into_str().unwrap_or_default()),
        M::Binary(b) => {
            attachments.push(Bytes::from(b));
            placeholder(attachments.len() - 1)
        }
        M::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| from_msgpack(v, attachments))
                .collect(),
        ),
        M::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    M::String(s) => s.into_str().unwrap_or_default(),
                    M::Integer(i) => i.to_string(),
                    other => other.to_string(),
                };
                map.insert(key, from_msgpack(v, attachments));
            }
            Value::Object(map)
        }
        M::Ext(kind, data) => from_extension(kind, &data),
    }
}

/// A MessagePack extension as a Node node reads it and its clients then get it: notepack
/// writes a `Date` as a timestamp (type -1), which goes to clients as `toISOString()` writes
/// it. Other extensions (older notepacks wrote `undefined` as one) have no JSON form.
fn from_extension(kind: i8, data: &[u8]) -> Value {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    // Milliseconds as notepack computes them (seconds and nanoseconds, in doubles).
    let ms = match (kind, data.len()) {
        (-1, 4) => f64::from(be32(data)) * 1e3,
        (-1, 8) => {
            let (hi, lo) = (be32(data), be32(&data[4..]));
            let secs = f64::from(hi & 0x3) * 4_294_967_296.0 + f64::from(lo);
            secs * 1e3 + f64::from(hi >> 2) / 1e6
        }
        (-1, 12) => {
            let nanos = be32(data);
            let secs = i64::from_be_bytes([
                data[4], data[5], data[6], data[7], data[8], data[9], data[10], data[11],
            ]);
            secs as f64 * 1e3 + f64::from(nanos) / 1e6
        }
        _ => return Value::Null,
    };
    crate::js_date::to_iso_string(ms).map_or(Value::Null, Value::String)
}

fn to_msgpack(value: &Value, attachments: &[Bytes]) -> rmpv::Value {
    use rmpv::Value as M;
    match value {
        Value::Null => M::Nil,
        Value::Bool(b) => M::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                M::from(u)
            } else if let Some(i) = n.as_i64() {
                M::from(i)
            } else {
                M::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => M::from(s.as_str()),
        Value::Array(items) => M::Array(items.iter().map(|v| to_msgpack(v, attachments)).collect()),
        Value::Object(map) => {
            if let Some(bin) = placeholder_num(map)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| attachments.get(n))
            {
                return M::Binary(bin.to_vec());
            }
            M::Map(
                map.iter()
                    .map(|(k, v)| (M::from(k.as_str()), to_msgpack(v, attachments)))
                    .collect(),
            )
        }
    }
}

/// A broadcast from another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The sending node.
    pub uid: String,
    /// The packet to deliver.
    pub packet: Packet,
    /// Rooms, exceptions and flags.
    pub opts: BroadcastOptions,
}

/// The `[uid, packet, opts]` of a broadcast.
pub fn encode_broadcast(uid: &str, packet: &Packet, opts: &BroadcastOptions) -> Vec<u8> {
    let message = json!([uid, packet_to_value(packet), opts_to_value(opts, true)]);
    encode_msgpack(&message, &packet.attachments)
}

/// Reads a broadcast.
pub fn decode_broadcast(bytes: &[u8]) -> Result<Broadcast, WireError> {
    let Body { value, attachments } = decode_msgpack(bytes)?;
    let Value::Array(mut parts) = value else {
        return Err(WireError::Malformed("broadcast is not an array"));
    };
    if parts.len() < 3 {
        return Err(WireError::Malformed("broadcast has fewer than 3 parts"));
    }
    let opts = opts_from_value(&parts[2]);
    let packet = packet_from_value(parts[1].take(), attachments)?;
    let Value::String(uid) = parts[0].take() else {
        return Err(WireError::Malformed("broadcast uid is not a string"));
    };
    Ok(Broadcast { uid, packet, opts })
}

/// A packet as Node's adapter carries it: `{type, data, nsp, id?}`. An event with binary
/// arguments keeps type 2 (EVENT): the receiving encoder finds the binary itself.
pub fn packet_to_value(packet: &Packet) -> Value {
    let kind = match packet.kind {
        PacketKind::BinaryEvent => PacketKind::Event,
        PacketKind::BinaryAck => PacketKind::Ack,
        other => other,
    };
    let mut map = Map::new();
    map.insert("type".into(), Value::from(kind.as_byte() - b'0'));
    map.insert("data".into(), packet.data.clone().unwrap_or(Value::Null));
    map.insert("nsp".into(), Value::String(packet.nsp.clone()));
    if let Some(id) = packet.id {
        map.insert("id".into(), Value::from(id));
    }
    Value::Object(map)
}

/// Reads an EVENT packet (binary or not) carried by another node.
pub fn packet_from_value(value: Value, attachments: Vec<Bytes>) -> Result<Packet, WireError> {
    let Value::Object(mut map) = value else {
        return Err(WireError::Malformed("packet is not an object"));
    };
    let kind = match map.get("type").and_then(Value::as_u64) {
        Some(2) | Some(5) => PacketKind::Event,
        _ => return Err(WireError::Malformed("packet is not an event")),
    };
    let nsp = match map.get("nsp") {
        Some(Value::String(nsp)) => nsp.clone(),
        // Node's adapter reads a missing namespace as the main one.
        None | Some(Value::Null) => "/".to_owned(),
        Some(_) => return Err(WireError::Malformed("packet namespace is not a string")),
    };
    let data = map.remove("data").unwrap_or(Value::Null);
    match data.as_array().and_then(|a| a.first()) {
        Some(Value::String(_)) => {}
        _ => return Err(WireError::Malformed("event has no name")),
    }
    let mut packet = Packet::new(kind, &nsp);
    packet.data = Some(data);
    Ok(packet.with_attachments(attachments))
}

/// `{rooms, except, flags}`; `flags` only on broadcasts.
pub fn opts_to_value(opts: &BroadcastOptions, with_flags: bool) -> Value {
    let mut map = Map::new();
    map.insert("rooms".into(), json!(opts.target.rooms));
    map.insert("except".into(), json!(opts.target.except));
    if with_flags {
        let mut flags = Map::new();
        if opts.flags.volatile {
            flags.insert("volatile".into(), Value::Bool(true));
        }
        if let Some(timeout) = opts.flags.timeout {
            flags.insert(
                "timeout".into(),
                Value::from(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            );
        }
        map.insert("flags".into(), Value::Object(flags));
    }
    Value::Object(map)
}

/// A number's text as JavaScript's `String(n)` gives it; integers exactly as they are.
fn number_string(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => crate::js_number::f64_text(f).as_str().to_owned(),
        _ => n.to_string(),
    }
}

/// A room's name as another node sends it: a string, or a number (Node's rooms may be
/// numbers, and go out as they are), read as its decimal text.
pub fn room_name(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_string(n)),
        _ => None,
    }
}

/// Reads `{rooms, except, flags}`; what is missing or of the wrong type reads as empty.
/// Node's rooms may be numbers; they read as their decimal text.
pub fn opts_from_value(value: &Value) -> BroadcastOptions {
    let strings = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(room_name).collect())
            .unwrap_or_default()
    };
    let flags = value.get("flags");
    let flag = |key: &str| flags.and_then(|f| f.get(key));
    BroadcastOptions {
        target: BroadcastTarget {
            rooms: strings("rooms"),
            except: strings("except"),
        },
        flags: BroadcastFlags {
            volatile: flag("volatile").and_then(Value::as_bool).unwrap_or(false),
            local: false,
            timeout: flag("timeout")
                .and_then(Value::as_f64)
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| std::time::Duration::from_millis(ms.min(86_400_000.0) as u64)),
        },
    }
}

/// A request or answer, by its common fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its kind, when it says one (answers to fetches do not).
    pub kind: Option<RequestType>,
    /// The sending node (requests only).
    pub uid: Option<String>,
    /// The request it belongs to.
    pub request_id: Option<String>,
    /// The whole body.
    pub body: Body,
}

/// Reads a request or answer.
pub fn decode_message(bytes: &[u8]) -> Result<Message, WireError> {
    let body = decode_body(bytes)?;
    if !body.value.is_object() {
        return Err(WireError::Malformed("request is not an object"));
    }
    let text = |key: &str| -> Option<String> {
        match body.value.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(number_string(n)),
            _ => None,
        }
    };
    Ok(Message {
        kind: body
            .value
            .get("type")
            .and_then(Value::as_u64)
            .and_then(RequestType::from_number),
        uid: text("uid"),
        request_id: text("requestId"),
        body: body.clone(),
    })
}

/// A request or answer without binary data, as JSON (what Node's adapter sends them as).
pub fn encode_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numeric_rooms_are_named_as_javascript_names_them() {
        use serde_json::json;
        assert_eq!(room_name(&json!(7)).as_deref(), Some("7"));
        assert_eq!(room_name(&json!(2.0)).as_deref(), Some("2"));
        assert_eq!(room_name(&json!(0.000001)).as_deref(), Some("0.000001"));
        assert_eq!(room_name(&json!("r")).as_deref(), Some("r"));
        assert_eq!(room_name(&json!(null)), None);
    }

    #[test]
    fn node_dates_read_as_their_iso_strings() {
        // ["t", Date(0)] as notepack writes it: a 32-bit timestamp.
        let body = decode_msgpack(&[0x92, 0xa1, b't', 0xd6, 0xff, 0, 0, 0, 0]).unwrap();
        assert_eq!(body.value, json!(["t", "1970-01-01T00:00:00.000Z"]));
        // 64-bit: nanoseconds in the top 30 bits, below the millisecond cut off.
        let (secs, nanos) = (1_700_000_000u64, 123_456_789u64);
        let ts64 = ((nanos << 34) | secs).to_be_bytes();
        assert_eq!(from_extension(-1, &ts64), "2023-11-14T22:13:20.123Z");
        // 96-bit: before the epoch, and years beyond four digits.
        let ts96 =
            |nanos: u32, secs: i64| [nanos.to_be_bytes().as_slice(), &secs.to_be_bytes()].concat();
        for (nanos, secs, iso) in [
            (0, -1, "1969-12-31T23:59:59.000Z"),
            (500_000_000, -1, "1969-12-31T23:59:59.500Z"),
            (0, 253_402_300_800, "+010000-01-01T00:00:00.000Z"),
            (0, -62_198_755_200, "-000001-01-01T00:00:00.000Z"),
            (0, 951_782_400, "2000-02-29T00:00:00.000Z"),
        ] {
            assert_eq!(
                from_extension(-1, &ts96(nanos, secs)),
                iso,
                "{secs} s {nanos} ns"
            );
        }
        // Beyond a Date's range, and other extensions: null, as JSON.stringify writes them.
        assert_eq!(from_extension(-1, &ts96(0, 1 << 50)), Value::Null);
        assert_eq!(from_extension(5, &[1, 2, 3, 4]), Value::Null);
        assert_eq!(from_extension(-1, &[1, 2, 3]), Value::Null);
    }

    #[test]
    fn a_lone_surrogate_in_a_node_answer_does_not_lose_the_answer() {
        let body = decode_body(
            br#"{"requestId":"r","sockets":[{"id":"x","rooms":[],"data":{"n":"\ud83d"}}]}"#,
        )
        .unwrap();
        assert_eq!(body.value["sockets"][0]["data"]["n"], "\u{FFFD}");
        assert_eq!(body.value["requestId"], "r");
    }

    #[test]
    fn channel_names_follow_the_node_adapter() {
        let c = Channels::new("socket.io", "/", "abc");
        assert_eq!(c.broadcast, "socket.io#/#");
        assert_eq!(c.request, "socket.io-request#/#");
        assert_eq!(c.response, "socket.io-response#/#");
        assert_eq!(c.own_response, "socket.io-response#/#abc#");
        assert_eq!(c.broadcast_pattern, "socket.io#/#*");
        let one = BroadcastTarget {
            rooms: vec!["r1".into()],
            except: vec![],
        };
        assert_eq!(c.broadcast_channel(&one), "socket.io#/#r1#");
        let two = BroadcastTarget {
            rooms: vec!["r1".into(), "r2".into()],
            except: vec![],
        };
        assert_eq!(c.broadcast_channel(&two), "socket.io#/#");
        assert_eq!(c.room_of("socket.io#/#"), Some(""));
        assert_eq!(c.room_of("socket.io#/#r1#"), Some("r1"));
        assert_eq!(c.room_of("socket.io#/#a#b#"), Some("a#b"));
        assert_eq!(c.room_of("socket.io#/admin#"), None);
        assert_eq!(c.response_to("xyz", true), "socket.io-response#/#xyz#");
    }

    #[test]
    fn broadcast_round_trips_with_binary() {
        let packet = Packet::event(
            "/",
            "msg",
            vec![json!({"a": 1, "bin": placeholder(0)}), json!(-2.5)],
        )
        .with_attachments(vec![Bytes::from_static(b"\x00\x01")]);
        let opts = BroadcastOptions {
            target: BroadcastTarget {
                rooms: vec!["r".into()],
                except: vec!["x".into()],
            },
            flags: BroadcastFlags {
                volatile: true,
                local: false,
                timeout: Some(Duration::from_millis(1500)),
            },
        };
        let bytes = encode_broadcast("node1", &packet, &opts);
        let back = decode_broadcast(&bytes).unwrap();
        assert_eq!(back.uid, "node1");
        assert_eq!(back.opts, opts);
        assert_eq!(back.packet.data, packet.data);
        assert_eq!(back.packet.attachments, packet.attachments);
        assert_eq!(back.packet.nsp, "/");
        // On the wire the binary is a MessagePack bin, not a placeholder object.
        let raw = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let data = &raw[1]["data"];
        assert!(matches!(&data[1]["bin"], rmpv::Value::Binary(b) if b == b"\x00\x01"));
        assert_eq!(raw[1]["type"].as_u64(), Some(2));
    }

    #[test]
    fn reads_what_notepack_writes() {
        // [ "uid", {type: 2, data: ["ev", <bin 01>, undefined], nsp: "/"}, {rooms: [], except: []} ]
        let mut bytes = vec![0x93, 0xa3, b'u', b'i', b'd', 0x83];
        bytes.extend([0xa4, b't', b'y', b'p', b'e', 0x02]);
        bytes.extend([
            0xa4, b'd', b'a', b't', b'a', 0x93, 0xa2, b'e', b'v', 0xc4, 0x01, 0x01,
        ]);
        bytes.extend([0xd4, 0x00, 0x00]);
        bytes.extend([0xa3, b'n', b's', b'p', 0xa1, b'/']);
        bytes.extend([0x82, 0xa5, b'r', b'o', b'o', b'm', b's', 0x90]);
        bytes.extend([0xa6, b'e', b'x', b'c', b'e', b'p', b't', 0x90]);
        let b = decode_broadcast(&bytes).unwrap();
        assert_eq!(b.uid, "uid");
        assert_eq!(b.packet.data, Some(json!(["ev", placeholder(0), null])));
        assert_eq!(b.packet.attachments, vec![Bytes::from_static(&[1])]);
        assert_eq!(b.opts, BroadcastOptions::default());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(decode_broadcast(b"").is_err());
        assert!(decode_broadcast(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_broadcast(&[0x91, 0x01]).is_err());
        assert!(decode_message(b"{not json").is_err());
        assert!(decode_message(&[0x92, 0x01, 0x02]).is_err());
        // Deep nesting stops at the limit.
        let deep = vec![0x91; 10_000];
        assert!(decode_msgpack(&deep).is_err());
    }

    #[test]
    fn requests_read_from_json_and_msgpack() {
        let m = decode_message(
            br#"{"uid":"n2","requestId":"r1","type":5,"opts":{"rooms":["a"],"except":[]}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, Some(RequestType::RemoteFetch));
        assert_eq!(m.uid.as_deref(), Some("n2"));
        assert_eq!(m.request_id.as_deref(), Some("r1"));
        let opts = opts_from_value(&m.body.value["opts"]);
        assert_eq!(opts.target.rooms, vec!["a".to_owned()]);

        let v = json!({"type": 9, "requestId": "q", "packet": {"bin": placeholder(0)}});
        let bytes = encode_msgpack(&v, &[Bytes::from_static(b"xyz")]);
        let m = decode_message(&bytes).unwrap();
        assert_eq!(m.kind, Some(RequestType::BroadcastAck));
        assert_eq!(m.body.value["packet"]["bin"], placeholder(0));
        assert_eq!(m.body.attachments, vec![Bytes::from_static(b"xyz")]);
    }
}
