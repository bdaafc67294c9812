//! Socket.IO v5 packets and their text encoding.
//!
//! This is a pure codec: it turns [`Packet`]s into the text part of a Socket.IO
//! message (the binary attachments travel as separate binary frames) and parses
//! incoming frames back into packets. It does no I/O.
//!
//! Wire format of the text part:
//!
//! ```text
//! <type>[<attachment count>-][<namespace>,][<ack id>][<JSON payload>]
//! ```
//!
//! Examples: `2["hello"]`, `2/admin,12["x"]`, `0{"sid":"abc"}`,
//! `451-["a",{"_placeholder":true,"num":0}]` (followed by one binary frame).
//!
//! Packets with binary data keep the placeholders in [`Packet::data`] and the
//! buffers, in order, in [`Packet::attachments`]; the
//! [`binary`](super::binary) module converts between typed values and this form.

use std::fmt;

use bytes::Bytes;
use serde_json::{Map, Value};

/// Largest acknowledgement id accepted (`Number.MAX_SAFE_INTEGER`, 2^53 − 1).
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// Event names a peer may not use: they have a special meaning to Socket.IO
/// implementations.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Most digits scanned for an acknowledgement id (2^53 − 1 has 16 digits).
const MAX_ACK_ID_DIGITS: usize = 16;
/// Most digits scanned for an attachment count.
const MAX_COUNT_DIGITS: usize = 10;
/// Key marking a binary placeholder object.
pub(crate) const PLACEHOLDER_KEY: &str = "_placeholder";
/// Key holding a placeholder's attachment index.
pub(crate) const PLACEHOLDER_NUM: &str = "num";

/// The type of a Socket.IO packet (the first character of its text part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketKind {
    /// Connection to a namespace (request from the client, reply from the server).
    Connect = 0,
    /// Disconnection from a namespace.
    Disconnect = 1,
    /// An event without binary data.
    Event = 2,
    /// An acknowledgement without binary data.
    Ack = 3,
    /// Refusal of a namespace connection (server to client only).
    ConnectError = 4,
    /// An event with binary attachments.
    BinaryEvent = 5,
    /// An acknowledgement with binary attachments.
    BinaryAck = 6,
}

impl PacketKind {
    /// The kind encoded by an ASCII digit, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The ASCII digit encoding this kind.
    pub fn as_byte(self) -> u8 {
        b'0' + self as u8
    }

    /// Whether this kind is followed by binary attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }

    /// The event/ack kind matching the presence of attachments; other kinds
    /// are returned unchanged.
    pub fn with_binary(self, binary: bool) -> Self {
        match (self, binary) {
            (Self::Event | Self::BinaryEvent, true) => Self::BinaryEvent,
            (Self::Event | Self::BinaryEvent, false) => Self::Event,
            (Self::Ack | Self::BinaryAck, true) => Self::BinaryAck,
            (Self::Ack | Self::BinaryAck, false) => Self::Ack,
            (other, _) => other,
        }
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Connect => "CONNECT",
            Self::Disconnect => "DISCONNECT",
            Self::Event => "EVENT",
            Self::Ack => "ACK",
            Self::ConnectError => "CONNECT_ERROR",
            Self::BinaryEvent => "BINARY_EVENT",
            Self::BinaryAck => "BINARY_ACK",
        };
        f.write_str(name)
    }
}

/// One Socket.IO packet.
///
/// `nsp` always starts with `/`; `/` is the main namespace. For binary kinds
/// `data` holds `{"_placeholder":true,"num":N}` objects where the buffers
/// stood, and `attachments` holds the buffers in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Packet type.
    pub kind: PacketKind,
    /// Namespace, starting with `/`.
    pub nsp: String,
    /// Acknowledgement id.
    pub id: Option<u64>,
    /// JSON payload (with placeholders for binary data).
    pub data: Option<Value>,
    /// Binary attachments referenced by the placeholders in `data`.
    pub attachments: Vec<Bytes>,
}

impl Packet {
    /// A packet of `kind` on `nsp` with no id, payload or attachments.
    pub fn new(kind: PacketKind, nsp: &str) -> Self {
        Self {
            kind,
            nsp: normalize_nsp(nsp),
            id: None,
            data: None,
            attachments: Vec::new(),
        }
    }

    /// The server's reply accepting a namespace connection: `0/nsp,{"sid":"…"}`.
    pub fn connect(nsp: &str, sid: &str) -> Self {
        let mut data = Map::new();
        data.insert("sid".to_owned(), Value::String(sid.to_owned()));
        Self::connect_with_data(nsp, Some(Value::Object(data)))
    }

    /// A CONNECT packet with an arbitrary payload (a client's auth object, for
    /// instance).
    pub fn connect_with_data(nsp: &str, data: Option<Value>) -> Self {
        Self {
            data,
            ..Self::new(PacketKind::Connect, nsp)
        }
    }

    /// The server's refusal of a namespace connection:
    /// `4/nsp,{"message":"…","data":…}` (`data` omitted when `None`).
    pub fn connect_error(nsp: &str, message: &str, data: Option<Value>) -> Self {
        let mut payload = Map::new();
        payload.insert("message".to_owned(), Value::String(message.to_owned()));
        if let Some(data) = data {
            payload.insert("data".to_owned(), data);
        }
        Self {
            data: Some(Value::Object(payload)),
            ..Self::new(PacketKind::ConnectError, nsp)
        }
    }

    /// An EVENT packet: `[event, ...args]`. Use [`Packet::with_attachments`]
    /// when `args` hold placeholders, and [`Packet::with_id`] to request an
    /// acknowledgement.
    pub fn event(nsp: &str, event: &str, args: Vec<Value>) -> Self {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::String(event.to_owned()));
        data.extend(args);
        Self {
            data: Some(Value::Array(data)),
            ..Self::new(PacketKind::Event, nsp)
        }
    }

    /// An ACK packet answering the event with id `id`.
    pub fn ack(nsp: &str, id: u64, args: Vec<Value>) -> Self {
        Self {
            id: Some(id),
            data: Some(Value::Array(args)),
            ..Self::new(PacketKind::Ack, nsp)
        }
    }

    /// A DISCONNECT packet.
    pub fn disconnect(nsp: &str) -> Self {
        Self::new(PacketKind::Disconnect, nsp)
    }

    /// Sets the acknowledgement id.
    #[must_use]
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the binary attachments; an event or ack becomes a binary event or
    /// binary ack when `attachments` is not empty, and a plain one otherwise.
    #[must_use]
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Self {
        self.kind = self.kind.with_binary(!attachments.is_empty());
        self.attachments = attachments;
        self
    }

    /// Whether the packet is sent with binary attachments.
    pub fn is_binary(&self) -> bool {
        self.wire_kind().is_binary()
    }

    /// The event name of an EVENT or BINARY_EVENT packet.
    pub fn event_name(&self) -> Option<&str> {
        match (self.kind, &self.data) {
            (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => {
                items.first().and_then(Value::as_str)
            }
            _ => None,
        }
    }

    /// Splits an EVENT or BINARY_EVENT packet into its event name, arguments
    /// and attachments. Returns `None` for other packets.
    pub fn into_event(self) -> Option<(String, Vec<Value>, Vec<Bytes>)> {
        if !matches!(self.kind, PacketKind::Event | PacketKind::BinaryEvent) {
            return None;
        }
        let Some(Value::Array(mut items)) = self.data else {
            return None;
        };
        if !matches!(items.first(), Some(Value::String(_))) {
            return None;
        }
        match items.remove(0) {
            Value::String(name) => Some((name, items, self.attachments)),
            _ => None,
        }
    }

    /// Splits an ACK or BINARY_ACK packet into its id, arguments and
    /// attachments. Returns `None` for other packets.
    pub fn into_ack(self) -> Option<(u64, Vec<Value>, Vec<Bytes>)> {
        if !matches!(self.kind, PacketKind::Ack | PacketKind::BinaryAck) {
            return None;
        }
        match (self.id, self.data) {
            (Some(id), Some(Value::Array(items))) => Some((id, items, self.attachments)),
            _ => None,
        }
    }

    /// The kind written on the wire: events and acks are binary exactly when
    /// they carry attachments.
    pub fn wire_kind(&self) -> PacketKind {
        self.kind.with_binary(!self.attachments.is_empty())
    }

    /// Encodes the text part of the packet. The binary parts to send after it
    /// are `self.attachments`, in order.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.size_hint());
        self.encode_into(&mut out);
        // Everything written is UTF-8: ASCII digits and punctuation, the
        // namespace (a `str`) and serde_json output.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Appends the encoded text part of the packet to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_head(
            out,
            self.wire_kind(),
            self.attachments.len(),
            &self.nsp,
            self.id,
        );
        if let Some(data) = &self.data {
            write_json(out, data);
        }
    }

    /// A cheap guess of the encoded length, to size the output buffer: growing it by doubling
    /// for a large payload costs a copy per step, and past the allocator's threshold for
    /// mapping memory, fresh pages each time.
    pub(crate) fn size_hint(&self) -> usize {
        let data = self
            .data
            .as_ref()
            .map_or(0, |data| value_size_hint(data, 3));
        // type + count + '-' + namespace + ',' + id
        1 + 11 + self.nsp.len() + 1 + 16 + data
    }
}

/// Writes `value` as serde_json does, byte for byte, except that a string with nothing to
/// escape (almost every string) is copied whole: serde_json looks up every byte of every
/// string in a table, which was the largest cost of an event carrying a long text.
fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
        // Integers as they came (exactly, even beyond 2^53); others as JavaScript writes them.
        Value::Number(n) if n.is_f64() => {
            out.extend_from_slice(
                crate::js_number::f64_text(n.as_f64().unwrap_or_default()).as_bytes(),
            );
        }
        // Writing into a `Vec` cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Writes an object's members in the order a JavaScript object lists them: its array indices
/// (`"0"`, `"7"`, below 2^32 - 1) first, ascending, then the other keys as they came.
fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, key: &str, item: &Value| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_json_str(out, key);
        out.push(b':');
        write_json(out, item);
    };
    out.push(b'{');
    if map.keys().any(|key| array_index(key).is_some()) {
        let mut indices: Vec<(u32, &String, &Value)> = map
            .iter()
            .filter_map(|(key, item)| Some((array_index(key)?, key, item)))
            .collect();
        indices.sort_unstable_by_key(|&(index, ..)| index);
        for (_, key, item) in indices {
            member(out, key, item);
        }
        for (key, item) in map.iter().filter(|(key, _)| array_index(key).is_none()) {
            member(out, key, item);
        }
    } else {
        for (key, item) in map {
            member(out, key, item);
        }
    }
    out.push(b'}');
}

/// The key as an array index: the decimal text of an integer below 2^32 - 1, without
/// leading zeros.
fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    let canonical = match bytes {
        [] => false,
        [b'0', _, ..] => false,
        _ => bytes.len() <= 10 && bytes.iter().all(u8::is_ascii_digit),
    };
    canonical
        .then(|| key.parse::<u32>().ok())
        .flatten()
        .filter(|&index| index < u32::MAX)
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // What JSON requires escaped; serde_json escapes nothing else.
    let needs_escape = |chunk: &[u8]| {
        chunk.iter().fold(false, |hit, &b| {
            hit | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    };
    // In blocks whose bytes are all looked at (a loop the compiler vectorises), stopping at
    // the first block that has one.
    if s.as_bytes().chunks(32).any(needs_escape) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A guess of the length of `value` as JSON: strings (where the bytes of a large payload are)
/// are counted `levels` deep, anything deeper at a flat rate.
fn value_size_hint(value: &Value, levels: u8) -> usize {
    const FLAT: usize = 24;
    match value {
        Value::String(s) => s.len() + 2,
        Value::Array(items) if levels > 0 => {
            2 + items
                .iter()
                .map(|v| 1 + value_size_hint(v, levels - 1))
                .sum::<usize>()
        }
        Value::Object(map) if levels > 0 => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + value_size_hint(v, levels - 1))
                .sum::<usize>()
        }
        Value::Array(items) => 2 + items.len() * FLAT,
        Value::Object(map) => 2 + map.len() * FLAT,
        _ => FLAT,
    }
}

/// Appends what comes before a packet's payload: its kind, the attachment count of a binary
/// kind, the namespace unless it is the main one, and the acknowledgement id.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    kind: PacketKind,
    attachments: usize,
    nsp: &str,
    id: Option<u64>,
) {
    out.push(kind.as_byte());
    if kind.is_binary() {
        push_decimal(out, attachments as u64);
        out.push(b'-');
    }
    if !nsp.is_empty() && nsp != "/" {
        if !nsp.starts_with('/') {
            out.push(b'/');
        }
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        push_decimal(out, id);
    }
}

/// Returns `nsp` starting with `/` (`""` becomes `/`).
pub fn normalize_nsp(nsp: &str) -> String {
    if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        let mut s = String::with_capacity(nsp.len() + 1);
        s.push('/');
        s.push_str(nsp);
        s
    }
}

/// The placeholder object standing for attachment `num`:
/// `{"_placeholder":true,"num":num}`.
pub fn placeholder(num: usize) -> Value {
    let mut map = Map::new();
    map.insert(PLACEHOLDER_KEY.to_owned(), Value::Bool(true));
    map.insert(PLACEHOLDER_NUM.to_owned(), Value::from(num));
    Value::Object(map)
}

/// The attachment index of `map` if it is exactly a placeholder object
/// (`{"_placeholder":true,"num":<non-negative integer>}`).
pub fn placeholder_num(map: &Map<String, Value>) -> Option<u64> {
    if map.len() != 2 || map.get(PLACEHOLDER_KEY) != Some(&Value::Bool(true)) {
        return None;
    }
    map.get(PLACEHOLDER_NUM).and_then(Value::as_u64)
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Why an incoming frame was rejected. Any error should close the connection.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text frame was empty.
    #[error("invalid payload: empty packet")]
    Empty,
    /// The first character is not a packet type.
    #[error("unknown packet type {0}")]
    UnknownType(char),
    /// A client sent CONNECT_ERROR, which only servers send.
    #[error("invalid payload: CONNECT_ERROR packets are only sent by the server")]
    ConnectErrorFromClient,
    /// The attachment count of a binary packet is not `<digits>-`.
    #[error("Illegal attachments")]
    IllegalAttachments,
    /// A binary packet declared zero attachments.
    #[error("Illegal attachments: a binary packet must declare at least one attachment")]
    NoAttachments,
    /// More attachments were declared than allowed.
    #[error("Illegal attachments: {declared} declared, at most {max} allowed")]
    TooManyAttachments {
        /// Declared count.
        declared: u64,
        /// Configured limit.
        max: usize,
    },
    /// A non-binary packet carried an attachment count.
    #[error("Illegal attachments: a {0} packet cannot carry attachments")]
    AttachmentsOnNonBinary(PacketKind),
    /// The ack id is too long or larger than 2^53 − 1.
    #[error("invalid ack id")]
    InvalidAckId,
    /// A packet type that never carries an ack id had one.
    #[error("invalid ack id: a {0} packet cannot carry an ack id")]
    UnexpectedAckId(PacketKind),
    /// The payload nests deeper than allowed.
    #[error("invalid payload: nested deeper than {max} levels")]
    TooDeep {
        /// Configured limit.
        max: usize,
    },
    /// The payload is not valid JSON (or has trailing data).
    #[error("invalid payload: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A CONNECT payload that is not an object.
    #[error("invalid payload: CONNECT payload must be an object")]
    ConnectPayloadNotObject,
    /// A DISCONNECT packet with a payload.
    #[error("invalid payload: DISCONNECT packets have no payload")]
    DisconnectWithPayload,
    /// An EVENT/ACK (binary or not) packet without a payload.
    #[error("invalid payload: a {0} packet needs a payload")]
    MissingPayload(PacketKind),
    /// An EVENT/BINARY_EVENT payload that is not an array.
    #[error("invalid payload: an event payload must be an array")]
    EventNotArray,
    /// An EVENT/BINARY_EVENT payload that is an empty array.
    #[error("invalid payload: an event payload must not be empty")]
    EmptyEvent,
    /// An event whose first element is neither a string nor a number.
    #[error("invalid payload: the event name must be a string or a number")]
    EventNameNotString,
    /// An event using a reserved name.
    #[error("invalid payload: \"{0}\" is a reserved event name")]
    ReservedEventName(String),
    /// An ACK/BINARY_ACK payload that is not an array.
    #[error("invalid payload: an ack payload must be an array")]
    AckNotArray,
    /// In a binary packet, an object whose `_placeholder` is `true` that is not exactly
    /// `{"_placeholder":true,"num":<integer>}`.
    #[error("illegal attachments: malformed placeholder")]
    InvalidPlaceholder,
    /// A placeholder referring to an attachment beyond the declared count.
    #[error("illegal attachments: placeholder {num} but {count} attachment(s) declared")]
    PlaceholderOutOfRange {
        /// The placeholder's index.
        num: u64,
        /// Declared count.
        count: usize,
    },
    /// A declared attachment that no placeholder refers to.
    #[error("illegal attachments: attachment {0} is never referenced")]
    UnreferencedAttachment(usize),
    /// A binary frame arrived while no binary packet was pending.
    #[error("got binary data when not reconstructing a packet")]
    UnexpectedBinary,
    /// A text frame arrived while attachments were still expected.
    #[error("got plaintext data when reconstructing a packet")]
    UnexpectedText,
}

/// Limits applied by a [`Decoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Most attachments a binary packet may declare.
    pub max_attachments: usize,
    /// Deepest nesting of arrays and objects allowed in a payload (the
    /// packet's own array included), checked before the JSON is parsed. The
    /// JSON parser itself takes at most 127 levels, so larger values act as
    /// 127.
    pub max_depth: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        Self {
            max_attachments: 10,
            max_depth: 100,
        }
    }
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    expected: usize,
}

/// Decodes the frames of one connection, reassembling binary packets from
/// their text part and the binary frames that follow it.
///
/// After an error the decoder drops any partial packet; the connection should
/// be closed anyway.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    /// Boxed: a connection keeps its decoder for its whole life, and a packet waiting for
    /// attachments is rare.
    pending: Option<Box<Pending>>,
}

impl Decoder {
    /// A decoder with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: DecoderLimits) -> Self {
        Self {
            limits,
            pending: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_reconstructing(&self) -> bool {
        self.pending.is_some()
    }

    /// The namespace of the binary packet waiting for attachments, if any.
    pub fn pending_nsp(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.packet.nsp.as_str())
    }

    /// Drops any partially received packet.
    pub fn reset(&mut self) {
        self.pending = None;
    }

    /// Decodes a text frame. Returns `Ok(None)` when the packet is binary and
    /// its attachments are still to come.
    pub fn decode_text(&mut self, text: &str) -> Result<Option<Packet>, ParseError> {
        if self.pending.take().is_some() {
            return Err(ParseError::UnexpectedText);
        }
        let (packet, expected) = parse_text(text, &self.limits)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some(Box::new(Pending { packet, expected }));
        Ok(None)
    }

    /// Decodes a binary frame: the next attachment of the pending packet.
    /// Returns the packet once its last attachment has arrived.
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, ParseError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(ParseError::UnexpectedBinary);
        };
        pending.packet.attachments.push(data);
        if pending.packet.attachments.len() < pending.expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|pending| pending.packet))
    }
}

/// Parses the text part of a packet. Returns the packet (with no attachments
/// yet) and the number of attachments that must follow.
fn parse_text(text: &str, limits: &DecoderLimits) -> Result<(Packet, usize), ParseError> {
    let bytes = text.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(ParseError::Empty);
    };
    let kind = PacketKind::from_byte(first).ok_or_else(|| {
        ParseError::UnknownType(text.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER))
    })?;
    if kind == PacketKind::ConnectError {
        return Err(ParseError::ConnectErrorFromClient);
    }
    let mut pos = 1;

    // Attachment count, checked before anything is buffered.
    let mut count = 0;
    if kind.is_binary() {
        let (digits, declared) = scan_digits(bytes, pos, MAX_COUNT_DIGITS);
        if digits == 0 || bytes.get(pos + digits) != Some(&b'-') {
            return Err(ParseError::IllegalAttachments);
        }
        if declared == 0 {
            return Err(ParseError::NoAttachments);
        }
        count = match usize::try_from(declared) {
            Ok(n) if n <= limits.max_attachments => n,
            _ => {
                return Err(ParseError::TooManyAttachments {
                    declared,
                    max: limits.max_attachments,
                });
            }
        };
        pos += digits + 1;
    }

    // Namespace: from '/' to ',' or to the end of the input.
    let mut has_nsp = false;
    let nsp = if bytes.get(pos) == Some(&b'/') {
        has_nsp = true;
        let rest = bytes.get(pos..).unwrap_or_default();
        let (end, next) = match rest.iter().position(|&b| b == b',') {
            Some(comma) => (pos + comma, pos + comma + 1),
            None => (bytes.len(), bytes.len()),
        };
        // '/' and ',' are ASCII, so both ends are char boundaries.
        let nsp = text.get(pos..end).unwrap_or("/");
        pos = next;
        nsp
    } else {
        "/"
    };

    // Acknowledgement id.
    let (digits, value) = scan_digits(bytes, pos, MAX_ACK_ID_DIGITS);
    let id = if digits > 0 {
        pos += digits;
        if bytes.get(pos).is_some_and(u8::is_ascii_digit) || value > MAX_ACK_ID {
            return Err(ParseError::InvalidAckId);
        }
        if !has_nsp && !kind.is_binary() && bytes.get(pos) == Some(&b'-') {
            return Err(ParseError::AttachmentsOnNonBinary(kind));
        }
        Some(value)
    } else {
        None
    };

    // JSON payload.
    let rest = text.get(pos..).unwrap_or_default();
    let mut data = if rest.is_empty() {
        // `3<id>` answers with no arguments: the reference server calls the callback with
        // none, so it is an empty argument list here rather than a malformed packet (unless
        // the depth limit allows no list at all, which `3<id>[]` would pass either).
        (kind == PacketKind::Ack && limits.max_depth > 0).then(|| Value::Array(Vec::new()))
    } else {
        check_depth(rest.as_bytes(), limits.max_depth)?;
        Some(parse_json(rest)?)
    };

    validate_payload(kind, id, data.as_ref())?;
    if let Some(Value::Array(items)) = &mut data {
        name_number_as_string(kind, items);
    }
    // A packet without attachments has no placeholders: what looks like one is data, as the
    // reference parser takes it.
    if let Some(data) = &data
        && kind.is_binary()
    {
        check_placeholders(data, count)?;
    }

    let packet = Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments: Vec::with_capacity(count),
    };
    Ok((packet, count))
}

/// The length of `value` written as JSON, without writing it anywhere.
pub(crate) fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Parses a JSON payload as JavaScript's `JSON.parse` would, where serde_json would refuse
/// valid JSON:
/// - a JavaScript client may send a string holding half of a surrogate pair (text cut in the
///   middle of an emoji), which `JSON.stringify` writes as a lone `\uD8xx` escape; that
///   string becomes U+FFFD here;
/// - a number beyond a double's range (`1e400`) is `Infinity` in JavaScript, which a Node
///   server sends on as `null`; it is `null` here.
///
/// Only a payload that fails to parse pays for the second pass.
pub(crate) fn parse_json(text: &str) -> Result<Value, ParseError> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(value),
        Err(e) => {
            let surrogates = replace_lone_surrogates(text);
            let numbers = replace_infinite_numbers(surrogates.as_deref().unwrap_or(text));
            match numbers.or(surrogates) {
                Some(repaired) => Ok(serde_json::from_str::<Value>(&repaired)?),
                None => Err(e.into()),
            }
        }
    }
}

/// Whether `token` is a number as JSON writes one: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(token: &str) -> bool {
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let mut b = token.as_bytes();
    if let [b'-', rest @ ..] = b {
        b = rest;
    }
    let int = digits(b);
    if int == 0 || (int > 1 && b[0] == b'0') {
        return false;
    }
    b = &b[int..];
    if let [b'.', rest @ ..] = b {
        let frac = digits(rest);
        if frac == 0 {
            return false;
        }
        b = &rest[frac..];
    }
    if let [b'e' | b'E', rest @ ..] = b {
        let rest = match rest {
            [b'+' | b'-', r @ ..] => r,
            r => r,
        };
        let exp = digits(rest);
        if exp == 0 {
            return false;
        }
        b = &rest[exp..];
    }
    b.is_empty()
}

/// `text` with every number that a double cannot hold replaced by `null`, or `None` if it has
/// none. Strings are skipped; whatever else is malformed is left for serde_json to refuse.
fn replace_infinite_numbers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                // The token is ASCII, and so are the bytes around it: `start` and `i` are
                // char boundaries.
                let token = text.get(start..i)?;
                if is_json_number(token) && token.parse::<f64>().is_ok_and(f64::is_infinite) {
                    let repaired = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    repaired.push_str(text.get(copied..start)?);
                    repaired.push_str("null");
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    let mut repaired = out?;
    repaired.push_str(text.get(copied..)?);
    Some(repaired)
}

/// `text` with every `\u` escape of an unpaired surrogate replaced by `\ufffd`, or `None` if
/// it has none.
fn replace_lone_surrogates(text: &str) -> Option<String> {
    fn escape_at(bytes: &[u8], at: usize) -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = escape_at(bytes, i) else {
            // Any other escape is two bytes; a malformed one fails in serde_json.
            i += 2;
            continue;
        };
        let high = (0xD800..0xDC00).contains(&unit);
        let paired =
            high && escape_at(bytes, i + 6).is_some_and(|low| (0xDC00..0xE000).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            let repaired = out.get_or_insert_with(|| String::with_capacity(text.len()));
            // Escapes are ASCII, so `copied` and `i` are char boundaries.
            repaired.push_str(text.get(copied..i)?);
            repaired.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    let mut repaired = out?;
    repaired.push_str(text.get(copied..)?);
    Some(repaired)
}

/// An event named by a number (which the reference parser accepts) is dispatched under the
/// name a JavaScript server would look its listener up by: `String(n)`.
fn name_number_as_string(kind: PacketKind, items: &mut [Value]) {
    if !matches!(kind, PacketKind::Event | PacketKind::BinaryEvent) {
        return;
    }
    if let Some(Value::Number(n)) = items.first() {
        // Every JSON number is a double in JavaScript; serde_json never yields NaN or infinity.
        let name = js_number_string(n.as_f64().unwrap_or(0.0));
        items[0] = Value::String(name);
    }
}

/// ECMAScript's Number::toString for a finite number: the shortest digits that round-trip,
/// written out in full for decimal exponents in [-7, 21), in exponent form (`1e+21`) beyond.
fn js_number_string(n: f64) -> String {
    if n == 0.0 {
        return "0".to_owned(); // -0 too
    }
    if n < 0.0 {
        return format!("-{}", js_number_string(-n));
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{n:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    // The decimal point sits after the first `point` digits.
    let point = exp.parse::<i32>().unwrap_or(0) + 1;
    if k <= point && point <= 21 {
        format!("{digits}{}", "0".repeat((point - k) as usize))
    } else if 0 < point && point <= 21 {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else {
        let sign = if point > 0 { '+' } else { '-' };
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{sign}{}", (point - 1).abs())
    }
}

/// Reads up to `max` ASCII digits from `start`. Returns how many were read and
/// their value (`max` is small enough that the value cannot overflow).
fn scan_digits(bytes: &[u8], start: usize, max: usize) -> (usize, u64) {
    let mut value: u64 = 0;
    let mut read = 0;
    for &b in bytes.get(start..).unwrap_or_default().iter().take(max) {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        read += 1;
    }
    (read, value)
}

/// Rejects JSON text nesting arrays/objects deeper than `max`, in one linear
/// pass that skips string contents (including escaped quotes).
fn check_depth(json: &[u8], max: usize) -> Result<(), ParseError> {
    // Most texts open fewer arrays and objects in all than the limit allows in depth (brackets
    // in strings counted too): a search for them that stops past the limit takes a fraction of
    // the time of the scan below, which looks at one byte at a time (a fifth of the CPU of an
    // event carrying a 64 KiB string).
    if memchr::memchr2_iter(b'[', b'{', json).nth(max).is_none() {
        return Ok(());
    }
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ParseError::TooDeep { max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks the payload shape required by each packet kind.
fn validate_payload(
    kind: PacketKind,
    id: Option<u64>,
    data: Option<&Value>,
) -> Result<(), ParseError> {
    match kind {
        PacketKind::Connect => {
            if id.is_some() {
                return Err(ParseError::UnexpectedAckId(kind));
            }
            match data {
                None | Some(Value::Object(_)) => Ok(()),
                Some(_) => Err(ParseError::ConnectPayloadNotObject),
            }
        }
        PacketKind::Disconnect => {
            if id.is_some() {
                return Err(ParseError::UnexpectedAckId(kind));
            }
            match data {
                None => Ok(()),
                Some(_) => Err(ParseError::DisconnectWithPayload),
            }
        }
        PacketKind::Event | PacketKind::BinaryEvent => match data {
            None => Err(ParseError::MissingPayload(kind)),
            Some(Value::Array(items)) => match items.first() {
                None => Err(ParseError::EmptyEvent),
                Some(Value::String(name)) if RESERVED_EVENTS.contains(&name.as_str()) => {
                    Err(ParseError::ReservedEventName(name.clone()))
                }
                Some(Value::String(_) | Value::Number(_)) => Ok(()),
                Some(_) => Err(ParseError::EventNameNotString),
            },
            Some(_) => Err(ParseError::EventNotArray),
        },
        // An ack without an id answers nothing; like the reference server, the layer above
        // ignores it rather than closing the connection.
        PacketKind::Ack | PacketKind::BinaryAck => match data {
            None => Err(ParseError::MissingPayload(kind)),
            Some(Value::Array(_)) => Ok(()),
            Some(_) => Err(ParseError::AckNotArray),
        },
        PacketKind::ConnectError => Err(ParseError::ConnectErrorFromClient),
    }
}

/// Checks that every placeholder in `data` is well formed and below `count`,
/// and that each of the `count` attachments is referenced.
fn check_placeholders(data: &Value, count: usize) -> Result<(), ParseError> {
    let mut nums = Vec::new();
    collect_placeholders(data, count, &mut nums)?;
    // Fewer placeholders than attachments: some attachment is unreferenced.
    // Checked first so the table below is never larger than the payload.
    if nums.len() < count {
        let mut seen = vec![false; nums.len()];
        for &num in &nums {
            if let Some(slot) = seen.get_mut(num) {
                *slot = true;
            }
        }
        let missing = seen.iter().position(|&s| !s).unwrap_or(nums.len());
        return Err(ParseError::UnreferencedAttachment(missing));
    }
    let mut seen = vec![false; count];
    for num in nums {
        if let Some(slot) = seen.get_mut(num) {
            *slot = true;
        }
    }
    match seen.iter().position(|&s| !s) {
        Some(missing) => Err(ParseError::UnreferencedAttachment(missing)),
        None => Ok(()),
    }
}

fn collect_placeholders(
    value: &Value,
    count: usize,
    nums: &mut Vec<usize>,
) -> Result<(), ParseError> {
    match value {
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| collect_placeholders(item, count, nums)),
        // Only `"_placeholder": true` marks a placeholder; any other value of the key is data.
        Value::Object(map) if map.get(PLACEHOLDER_KEY) == Some(&Value::Bool(true)) => {
            let num = placeholder_num(map).ok_or(ParseError::InvalidPlaceholder)?;
            match usize::try_from(num) {
                Ok(index) if index < count => {
                    nums.push(index);
                    Ok(())
                }
                _ => Err(ParseError::PlaceholderOutOfRange { num, count }),
            }
        }
        Value::Object(map) => map
            .values()
            .try_for_each(|item| collect_placeholders(item, count, nums)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_one(text: &str) -> Result<Option<Packet>, ParseError> {
        Decoder::new().decode_text(text)
    }

    fn decoded(text: &str) -> Packet {
        match decode_one(text) {
            Ok(Some(packet)) => packet,
            other => panic!("{text:?} did not decode: {other:?}"),
        }
    }

    fn rejected(text: &str) -> ParseError {
        match decode_one(text) {
            Err(e) => e,
            Ok(p) => panic!("{text:?} was accepted: {p:?}"),
        }
    }

    #[test]
    fn encodes_like_the_reference_parser() {
        assert_eq!(Packet::new(PacketKind::Connect, "/").encode(), "0");
        assert_eq!(Packet::connect("/", "abc").encode(), r#"0{"sid":"abc"}"#);
        assert_eq!(
            Packet::new(PacketKind::Connect, "/admin").encode(),
            "0/admin,"
        );
        assert_eq!(
            Packet::connect("/admin", "oSO0OpakMV_3jnilAAAA").encode(),
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#
        );
        assert_eq!(
            Packet::connect_error("/random", "Invalid namespace", None).encode(),
            r#"4/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(
            Packet::connect_error("/", "Not authorized", Some(json!({"code": 3}))).encode(),
            r#"4{"message":"Not authorized","data":{"code":3}}"#
        );
        let recovered = json!({"sid": "abc", "pid": "def"});
        assert_eq!(
            Packet::connect_with_data("/", Some(recovered)).encode(),
            r#"0{"sid":"abc","pid":"def"}"#
        );
        assert_eq!(
            Packet::event(
                "/",
                "n",
                vec![json!(-0.0), json!(0.0), json!(-1.5), json!(0)]
            )
            .encode(),
            r#"2["n",0,0,-1.5,0]"#
        );
        assert_eq!(Packet::event("/", "foo", vec![]).encode(), r#"2["foo"]"#);
        assert_eq!(
            Packet::event("/admin", "x", vec![]).with_id(12).encode(),
            r#"2/admin,12["x"]"#
        );
        assert_eq!(Packet::ack("/", 12, vec![]).encode(), "312[]");
        assert_eq!(
            Packet::ack("/", 456, vec![json!(1), json!("2")]).encode(),
            r#"3456[1,"2"]"#
        );
        assert_eq!(
            Packet::ack("/admin", 13, vec![json!("bar")]).encode(),
            r#"3/admin,13["bar"]"#
        );
        assert_eq!(Packet::disconnect("/").encode(), "1");
        assert_eq!(Packet::disconnect("/admin").encode(), "1/admin,");
        assert_eq!(Packet::disconnect("admin").encode(), "1/admin,");
    }

    #[test]
    fn encodes_binary_packets() {
        let one = Bytes::from_static(&[1, 2, 3, 4]);
        let event =
            Packet::event("/", "a", vec![placeholder(0)]).with_attachments(vec![one.clone()]);
        assert_eq!(event.kind, PacketKind::BinaryEvent);
        assert_eq!(event.encode(), r#"51-["a",{"_placeholder":true,"num":0}]"#);

        let two = Packet::event("/admin", "baz", vec![placeholder(0), placeholder(1)])
            .with_attachments(vec![one.clone(), one.clone()]);
        assert_eq!(
            two.encode(),
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );

        let ack =
            Packet::ack("/admin", 1, vec![placeholder(0)]).with_attachments(vec![one.clone()]);
        assert_eq!(ack.kind, PacketKind::BinaryAck);
        assert_eq!(
            ack.encode(),
            r#"61-/admin,1[{"_placeholder":true,"num":0}]"#
        );

        let with_id = Packet::event("/", "foo", vec![placeholder(0)])
            .with_attachments(vec![one])
            .with_id(14);
        assert_eq!(
            with_id.encode(),
            r#"51-14["foo",{"_placeholder":true,"num":0}]"#
        );

        // Without attachments a binary kind is sent as the plain kind.
        let plain = Packet::event("/", "foo", vec![]).with_attachments(vec![]);
        assert_eq!(plain.kind, PacketKind::Event);
        let mut odd = Packet::event("/", "foo", vec![]);
        odd.kind = PacketKind::BinaryEvent;
        assert_eq!(odd.encode(), r#"2["foo"]"#);
    }

    #[test]
    fn decodes_connect() {
        let p = decoded("0");
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id, &p.data),
            (PacketKind::Connect, "/", None, &None)
        );
        let p = decoded(r#"0{"token":"123"}"#);
        assert_eq!(p.data, Some(json!({"token": "123"})));
        let p = decoded("0/custom,");
        assert_eq!((p.nsp.as_str(), &p.data), ("/custom", &None));
        let p = decoded("0/custom");
        assert_eq!((p.nsp.as_str(), &p.data), ("/custom", &None));
        let p = decoded("0/random");
        assert_eq!(p.nsp, "/random");
        let p = decoded(r#"0/custom,{"token":"abc"}"#);
        assert_eq!(
            (p.nsp.as_str(), p.data),
            ("/custom", Some(json!({"token": "abc"})))
        );
    }

    #[test]
    fn decodes_disconnect() {
        let p = decoded("1");
        assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Disconnect, "/"));
        let p = decoded("1/custom");
        assert_eq!(
            (p.kind, p.nsp.as_str()),
            (PacketKind::Disconnect, "/custom")
        );
        let p = decoded("1/admin,");
        assert_eq!(p.nsp, "/admin");
    }

    #[test]
    fn decodes_event_and_ack() {
        let p = decoded(r#"2["message",1,"2",{"3":[true]}]"#);
        assert_eq!(p.kind, PacketKind::Event);
        assert_eq!(p.event_name(), Some("message"));
        assert_eq!(p.data, Some(json!(["message", 1, "2", {"3": [true]}])));
        let p = decoded(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#);
        assert_eq!(p.id, Some(456));
        let p = decoded(r#"2/admin,13["foo"]"#);
        assert_eq!((p.nsp.as_str(), p.id), ("/admin", Some(13)));
        let (name, args, atts) = p.into_event().unwrap();
        assert_eq!((name.as_str(), args.len(), atts.len()), ("foo", 0, 0));

        let p = decoded("312[]");
        assert_eq!(
            (p.kind, p.id, &p.data),
            (PacketKind::Ack, Some(12), &Some(json!([])))
        );
        let p = decoded(r#"3/admin,13["bar"]"#);
        let (id, args, _) = p.into_ack().unwrap();
        assert_eq!((id, args), (13, vec![json!("bar")]));
        let p = decoded(&format!("2{MAX_ACK_ID}[\"x\"]"));
        assert_eq!(p.id, Some(MAX_ACK_ID));
        // Whitespace around the JSON is JSON.
        assert_eq!(decoded("2[\"x\"] ").data, Some(json!(["x"])));
    }

    #[test]
    fn decodes_binary_event_with_attachments() {
        let mut d = Decoder::new();
        let text = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(d.decode_text(text).unwrap().is_none());
        assert!(d.is_reconstructing());
        assert!(
            d.decode_binary(Bytes::from_static(&[1, 2, 3]))
                .unwrap()
                .is_none()
        );
        let p = d
            .decode_binary(Bytes::from_static(&[4, 5, 6]))
            .unwrap()
            .unwrap();
        assert!(!d.is_reconstructing());
        assert_eq!(p.kind, PacketKind::BinaryEvent);
        assert_eq!(
            p.attachments,
            vec![
                Bytes::from_static(&[1, 2, 3]),
                Bytes::from_static(&[4, 5, 6])
            ]
        );
        assert_eq!(p.encode(), text);

        let text = r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(d.decode_text(text).unwrap().is_none());
        d.decode_binary(Bytes::from_static(b"a")).unwrap();
        let p = d.decode_binary(Bytes::from_static(b"b")).unwrap().unwrap();
        assert_eq!(p.id, Some(789));

        let text = r#"61-/admin,1[{"_placeholder":true,"num":0}]"#;
        assert!(d.decode_text(text).unwrap().is_none());
        let p = d.decode_binary(Bytes::from_static(b"z")).unwrap().unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketKind::BinaryAck, "/admin", Some(1))
        );

        // Placeholders may be nested and repeated.
        let text = r#"52-["m",{"a":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(d.decode_text(text).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_types() {
        assert!(matches!(rejected(""), ParseError::Empty));
        assert!(matches!(rejected("abc"), ParseError::UnknownType('a')));
        assert!(matches!(rejected("7"), ParseError::UnknownType('7')));
        assert!(matches!(rejected("999"), ParseError::UnknownType('9')));
        assert!(matches!(rejected("é"), ParseError::UnknownType('é')));
        assert!(matches!(
            rejected("4abc"),
            ParseError::ConnectErrorFromClient
        ));
        assert!(matches!(
            rejected(r#"4{"message":"x"}"#),
            ParseError::ConnectErrorFromClient
        ));
    }

    #[test]
    fn rejects_bad_attachment_counts() {
        assert!(matches!(
            rejected(r#"5-["a"]"#),
            ParseError::IllegalAttachments
        ));
        assert!(matches!(
            rejected(r#"5["a"]"#),
            ParseError::IllegalAttachments
        ));
        assert!(matches!(rejected("5"), ParseError::IllegalAttachments));
        assert!(matches!(rejected("51"), ParseError::IllegalAttachments));
        assert!(matches!(rejected("5a-[]"), ParseError::IllegalAttachments));
        assert!(matches!(rejected(r#"50-["a"]"#), ParseError::NoAttachments));
        assert!(matches!(
            rejected(r#"611-1[]"#),
            ParseError::TooManyAttachments {
                declared: 11,
                max: 10
            }
        ));
        // More than 10 digits.
        let long = format!("5{}-[]", "9".repeat(11));
        assert!(matches!(rejected(&long), ParseError::IllegalAttachments));
        let endless = format!("5{}", "1".repeat(100_000));
        assert!(matches!(rejected(&endless), ParseError::IllegalAttachments));
        let widest = format!("5{}-[]", "9".repeat(10));
        assert!(matches!(
            rejected(&widest),
            ParseError::TooManyAttachments {
                declared: 9_999_999_999,
                ..
            }
        ));
        assert!(matches!(
            rejected(r#"21-["a"]"#),
            ParseError::AttachmentsOnNonBinary(PacketKind::Event)
        ));
        assert!(matches!(
            rejected(r#"31-[]"#),
            ParseError::AttachmentsOnNonBinary(PacketKind::Ack)
        ));
        // A huge limit does not make the decoder allocate for the declared count.
        let mut d = Decoder::with_limits(DecoderLimits {
            max_attachments: usize::MAX,
            max_depth: 32,
        });
        assert!(matches!(
            d.decode_text(r#"5999999999-["a",{"_placeholder":true,"num":0}]"#),
            Err(ParseError::UnreferencedAttachment(1))
        ));
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let p = decoded(r#"2["m","a\ud83d","\udc00b","\ud83d\ude00","\\ud800"]"#);
        let (_, args, _) = p.into_event().unwrap();
        assert_eq!(
            args,
            [
                Value::from("a\u{fffd}"),
                Value::from("\u{fffd}b"),
                Value::from("\u{1f600}"),
                Value::from("\\ud800"),
            ]
        );
        assert_eq!(replace_lone_surrogates(r#"["\ud83d\ude00"]"#), None);
        assert!(matches!(
            rejected(r#"2["m","\ud83d"#),
            ParseError::InvalidJson(_)
        ));
    }

    #[test]
    fn numbers_beyond_a_double_become_null() {
        let digits = format!("1{}", "0".repeat(400));
        let text = format!(
            r#"2["m",1e400,-1E+400,"1e400 \" 1e400",[{digits}],{{"a":-{digits}.5e1}},1e-400,2,"\ud800",1e308]"#
        );
        let (_, args, _) = decoded(&text).into_event().unwrap();
        assert_eq!(
            args,
            [
                Value::Null,
                Value::Null,
                Value::from("1e400 \" 1e400"),
                json!([null]),
                json!({ "a": null }),
                json!(0.0),
                json!(2),
                Value::from("\u{fffd}"),
                json!(1e308),
            ]
        );
        assert_eq!(replace_infinite_numbers(r#"["1e400",1e308]"#), None);
        // Malformed numbers are still refused.
        for bad in ["01e400", "1.e400", "-.5e400", "1e", "+1e400", "1e+"] {
            assert!(
                matches!(
                    rejected(&format!("2[\"m\",{bad}]")),
                    ParseError::InvalidJson(_)
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            rejected("2[\"m\",1e400x]"),
            ParseError::InvalidJson(_)
        ));
        assert!(matches!(
            rejected("2[\"m\",--1e400]"),
            ParseError::InvalidJson(_)
        ));
    }

    #[test]
    fn rejects_bad_ack_ids() {
        assert!(matches!(
            rejected(&format!("2{}[\"x\"]", MAX_ACK_ID + 1)),
            ParseError::InvalidAckId
        ));
        assert!(matches!(
            rejected(r#"212345678901234567["x"]"#),
            ParseError::InvalidAckId
        ));
        assert!(matches!(
            rejected(&format!("2{}", "9".repeat(400))),
            ParseError::InvalidAckId
        ));
        assert!(matches!(
            rejected(r#"2abc["x"]"#),
            ParseError::InvalidJson(_)
        ));
        // An ack without an id is well formed; it acknowledges nothing.
        assert_eq!(decoded("3[]").into_ack(), None);
        assert_eq!(decoded("3[1]").id, None);
        assert!(matches!(
            rejected("012{}"),
            ParseError::UnexpectedAckId(PacketKind::Connect)
        ));
        assert!(matches!(
            rejected("112"),
            ParseError::UnexpectedAckId(PacketKind::Disconnect)
        ));
    }

    #[test]
    fn rejects_bad_payloads() {
        assert!(matches!(
            rejected("0[]"),
            ParseError::ConnectPayloadNotObject
        ));
        assert!(matches!(
            rejected(r#"0"invalid""#),
            ParseError::ConnectPayloadNotObject
        ));
        assert!(matches!(rejected("01"), ParseError::UnexpectedAckId(_)));
        assert!(matches!(
            rejected("1/admin,{}"),
            ParseError::DisconnectWithPayload
        ));
        assert!(matches!(rejected("1{}"), ParseError::DisconnectWithPayload));
        assert!(matches!(
            rejected(r#"2/admin,"invalid"#),
            ParseError::InvalidJson(_)
        ));
        assert!(matches!(
            rejected(r#"2/admin,"invalid""#),
            ParseError::EventNotArray
        ));
        assert!(matches!(rejected("2/admin,{}"), ParseError::EventNotArray));
        assert!(matches!(rejected("2{}"), ParseError::EventNotArray));
        assert!(matches!(
            rejected("2"),
            ParseError::MissingPayload(PacketKind::Event)
        ));
        assert!(matches!(
            rejected("2/admin,"),
            ParseError::MissingPayload(PacketKind::Event)
        ));
        assert!(matches!(rejected("2[]"), ParseError::EmptyEvent));
        assert!(matches!(
            rejected("2[null]"),
            ParseError::EventNameNotString
        ));
        assert!(matches!(
            rejected(r#"2[{"toString":"foo"}]"#),
            ParseError::EventNameNotString
        ));
        assert!(matches!(
            rejected("2[true]"),
            ParseError::EventNameNotString
        ));
        // A number is a name, under its decimal form.
        for (text, name) in [
            (r#"2[1,"x"]"#, "1"),
            ("2[-7]", "-7"),
            ("2[2.0]", "2"),
            ("2[1.5]", "1.5"),
            ("2[-0]", "0"),
            ("2[1e20]", "100000000000000000000"),
            ("2[1e21]", "1e+21"),
            ("2[1.2345678901234569e23]", "1.2345678901234569e+23"),
            ("2[0.000001]", "0.000001"),
            ("2[1.5e-6]", "0.0000015"),
            ("2[1.5e-7]", "1.5e-7"),
            ("2[-1e-7]", "-1e-7"),
            ("2[2.5e-5]", "0.000025"),
            ("2[9007199254740993]", "9007199254740992"),
            ("2[18446744073709551615]", "18446744073709552000"),
        ] {
            assert_eq!(decoded(text).event_name(), Some(name), "{text}");
        }
        for name in RESERVED_EVENTS {
            let text = format!("2[\"{name}\"]");
            assert!(matches!(rejected(&text), ParseError::ReservedEventName(n) if n == name));
        }
        let ack = decoded("312");
        assert_eq!((ack.kind, ack.id), (PacketKind::Ack, Some(12)));
        assert_eq!(ack.data, Some(json!([])));
        // Unless no list may come at all, as `312[]` may not.
        let flat = DecoderLimits {
            max_depth: 0,
            ..DecoderLimits::default()
        };
        for text in ["312", "312[]"] {
            assert!(
                Decoder::with_limits(flat).decode_text(text).is_err(),
                "{text}"
            );
        }
        assert!(matches!(
            rejected("61-12"),
            ParseError::MissingPayload(PacketKind::BinaryAck)
        ));
        assert!(matches!(rejected("312{}"), ParseError::AckNotArray));
        assert!(matches!(
            rejected(r#"2["some","data""#),
            ParseError::InvalidJson(_)
        ));
        assert!(matches!(rejected(r#"2["a"]x"#), ParseError::InvalidJson(_)));
        assert!(matches!(
            rejected(r#"2["a"]["b"]"#),
            ParseError::InvalidJson(_)
        ));
        assert!(matches!(rejected("0 "), ParseError::InvalidJson(_)));
        assert!(matches!(rejected("0{}}"), ParseError::InvalidJson(_)));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_wherever_the_character_is() {
        for special in [
            '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é', '\u{2028}', '/',
        ] {
            for at in [0, 31, 32, 70] {
                let mut text = "a".repeat(100);
                text.insert(at, special);
                let value = json!([text, { text.clone(): text }]);
                let mut ours = Vec::new();
                write_json(&mut ours, &value);
                assert_eq!(
                    ours,
                    serde_json::to_vec(&value).unwrap(),
                    "{special:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn the_buffer_is_sized_for_the_strings_that_make_a_payload_large() {
        let big = "x".repeat(64 * 1024);
        let payloads = [
            json!([big]),
            json!([{ "text": big }]),
            json!([{ "a": [big, big] }]),
        ];
        for args in payloads {
            let Value::Array(args) = args else {
                unreachable!()
            };
            let packet = Packet::event("/", "echo", args);
            let (hint, len) = (packet.size_hint(), packet.encode().len());
            assert!(
                hint >= len && hint < len + 256,
                "hint {hint} for {len} bytes"
            );
        }
    }

    #[test]
    fn enforces_depth_before_parsing() {
        let ok = format!("2[\"a\",{}{}]", "[".repeat(99), "]".repeat(99));
        assert!(decode_one(&ok).is_ok());
        let deep = format!("2[\"a\",{}{}]", "[".repeat(100), "]".repeat(100));
        assert!(matches!(rejected(&deep), ParseError::TooDeep { max: 100 }));
        // Unbalanced and unterminated input is still rejected by the scan.
        let open = format!("2{}", "[".repeat(100_000));
        assert!(matches!(rejected(&open), ParseError::TooDeep { .. }));
        // Brackets inside strings do not count, escaped quotes do not end strings.
        let text = format!("2[\"a\",\"{}\\\"{}\"]", "[".repeat(100), "{".repeat(100));
        assert!(decode_one(&text).is_ok());
        let d = DecoderLimits {
            max_depth: 2,
            ..DecoderLimits::default()
        };
        assert!(matches!(
            Decoder::with_limits(d).decode_text(r#"2["a",{"b":[1]}]"#),
            Err(ParseError::TooDeep { max: 2 })
        ));
    }

    #[test]
    fn rejects_bad_placeholders() {
        let bad = [
            r#"51-["a",{"_placeholder":true}]"#,
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
            r#"51-["a",{"_placeholder":true,"num":0,"x":1}]"#,
        ];
        for text in bad {
            assert!(
                matches!(rejected(text), ParseError::InvalidPlaceholder),
                "{text}"
            );
        }
        assert!(matches!(
            rejected(r#"51-["a",{"_placeholder":true,"num":1}]"#),
            ParseError::PlaceholderOutOfRange { num: 1, count: 1 }
        ));
        assert!(matches!(
            rejected(r#"51-["a",{"_placeholder":true,"num":18446744073709551615}]"#),
            ParseError::PlaceholderOutOfRange { .. }
        ));
        assert!(matches!(
            rejected(r#"51-["a"]"#),
            ParseError::UnreferencedAttachment(0)
        ));
        assert!(matches!(
            rejected(r#"52-["a",{"_placeholder":true,"num":1},{"_placeholder":true,"num":1}]"#),
            ParseError::UnreferencedAttachment(0)
        ));
        // Not a placeholder, so nothing refers to the attachment.
        assert!(matches!(
            rejected(r#"51-["a",{"_placeholder":false,"num":0}]"#),
            ParseError::UnreferencedAttachment(0)
        ));
    }

    #[test]
    fn what_only_looks_like_a_placeholder_is_data() {
        // Without attachments nothing is a placeholder, as with the reference parser.
        for text in [
            r#"2["a",{"_placeholder":true,"num":0}]"#,
            r#"31[[{"x":{"_placeholder":true,"num":0}}]]"#,
            r#"0{"_placeholder":true,"num":0}"#,
            r#"2["a",{"_placeholder":"yes"},{"_placeholder":false,"note":"user data"}]"#,
        ] {
            let packet = decoded(text);
            assert!(packet.attachments.is_empty(), "{text}");
            assert_eq!(packet.encode(), text);
        }
        // In a binary packet only `"_placeholder": true` marks one.
        let mut d = Decoder::new();
        let header = r#"51-["a",{"_placeholder":false,"note":"x"},{"_placeholder":true,"num":0}]"#;
        assert!(d.decode_text(header).unwrap().is_none());
        let packet = d.decode_binary(Bytes::from_static(b"z")).unwrap().unwrap();
        assert_eq!(
            packet.data,
            Some(json!(["a", {"_placeholder": false, "note": "x"}, placeholder(0)]))
        );
        assert_eq!(packet.attachments, vec![Bytes::from_static(b"z")]);
    }

    #[test]
    fn rejects_frames_out_of_order() {
        let mut d = Decoder::new();
        assert!(matches!(
            d.decode_binary(Bytes::from_static(b"x")),
            Err(ParseError::UnexpectedBinary)
        ));
        assert!(
            d.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#)
                .unwrap()
                .is_none()
        );
        let err = d.decode_text(r#"2["b"]"#).unwrap_err();
        assert!(matches!(err, ParseError::UnexpectedText));
        assert_eq!(
            err.to_string(),
            "got plaintext data when reconstructing a packet"
        );
        // The error dropped the partial packet.
        assert!(!d.is_reconstructing());
        assert!(d.decode_text(r#"2["b"]"#).unwrap().is_some());

        // A completed packet does not accept more frames.
        assert!(
            d.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#)
                .unwrap()
                .is_none()
        );
        assert!(d.decode_binary(Bytes::from_static(b"1")).unwrap().is_some());
        let err = d.decode_binary(Bytes::from_static(b"2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "got binary data when not reconstructing a packet"
        );

        assert!(
            d.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#)
                .unwrap()
                .is_none()
        );
        d.reset();
        assert!(!d.is_reconstructing());
        assert!(d.decode_text(r#"2["b"]"#).unwrap().is_some());
    }

    #[test]
    fn error_messages() {
        assert_eq!(rejected("9").to_string(), "unknown packet type 9");
        assert_eq!(rejected("5-[]").to_string(), "Illegal attachments");
        assert!(rejected("2{}").to_string().starts_with("invalid payload"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                // Halves print and parse back exactly.
                any::<i32>().prop_map(|n| Value::from(f64::from(n) + 0.5)),
                any::<String>().prop_map(Value::String),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            json_leaf().prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z0-9 \"\\\\]{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn nsp() -> impl Strategy<Value = String> {
            prop_oneof![Just("/".to_owned()), "/[a-zA-Z0-9_/.-]{1,12}"]
        }

        fn event_name() -> impl Strategy<Value = String> {
            any::<String>().prop_filter("reserved", |s| !RESERVED_EVENTS.contains(&s.as_str()))
        }

        /// Inserts a placeholder for each attachment at positions chosen by `spots`.
        fn with_placeholders(mut args: Vec<Value>, count: usize, spots: &[usize]) -> Vec<Value> {
            for num in 0..count {
                let spot = spots.get(num).copied().unwrap_or(0) % (args.len() + 1);
                args.insert(spot, placeholder(num));
            }
            args
        }

        fn roundtrip(packet: &Packet) -> Packet {
            let mut d = Decoder::new();
            let text = packet.encode();
            let mut out = d
                .decode_text(&text)
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            for att in &packet.attachments {
                assert!(out.is_none());
                out = d.decode_binary(att.clone()).unwrap();
            }
            out.unwrap_or_else(|| panic!("{text:?} incomplete"))
        }

        proptest! {
            /// JSON that reads back as the same value (written as JavaScript would write it,
            /// which is not always as serde_json would).
            #[test]
            fn values_are_written_as_json_that_reads_back_the_same(value in json_value()) {
                let mut ours = Vec::new();
                write_json(&mut ours, &value);
                let read: Value = serde_json::from_slice(&ours).unwrap();
                prop_assert_eq!(read, value);
            }

            #[test]
            fn event_roundtrip(
                nsp in nsp(),
                name in event_name(),
                args in prop::collection::vec(json_value(), 0..5),
                atts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..5),
                spots in prop::collection::vec(any::<usize>(), 5),
                id in prop::option::of(0..=MAX_ACK_ID),
            ) {
                let args = with_placeholders(args, atts.len(), &spots);
                let mut packet = Packet::event(&nsp, &name, args)
                    .with_attachments(atts.into_iter().map(Bytes::from).collect());
                packet.id = id;
                prop_assert_eq!(roundtrip(&packet), packet);
            }

            #[test]
            fn ack_roundtrip(
                nsp in nsp(),
                args in prop::collection::vec(json_value(), 0..5),
                atts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..5),
                spots in prop::collection::vec(any::<usize>(), 5),
                id in 0..=MAX_ACK_ID,
            ) {
                let args = with_placeholders(args, atts.len(), &spots);
                let packet = Packet::ack(&nsp, id, args)
                    .with_attachments(atts.into_iter().map(Bytes::from).collect());
                prop_assert_eq!(roundtrip(&packet), packet);
            }

            #[test]
            fn connect_and_disconnect_roundtrip(
                nsp in nsp(),
                auth in prop::option::of(prop::collection::btree_map("[a-z]{0,6}", json_value(), 0..4)),
            ) {
                let packet = Packet::connect_with_data(
                    &nsp,
                    auth.map(|m| Value::Object(m.into_iter().collect())),
                );
                prop_assert_eq!(roundtrip(&packet), packet);
                let packet = Packet::disconnect(&nsp);
                prop_assert_eq!(roundtrip(&packet), packet);
            }

            #[test]
            fn arbitrary_text_never_panics(text in "[0-9/,\\-\\[\\]{}\"\\\\a-z:_ ]{0,64}") {
                let mut d = Decoder::new();
                let _ = d.decode_text(&text);
                let _ = d.decode_binary(Bytes::new());
            }

            #[test]
            fn arbitrary_unicode_never_panics(text in any::<String>()) {
                let _ = Decoder::new().decode_text(&text);
            }
        }
    }
}
