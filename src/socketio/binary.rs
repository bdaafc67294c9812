//! Serde bridge between typed values and Socket.IO payloads with binary
//! attachments.
//!
//! [`to_value`] serialises like `serde_json::to_value`, except that byte
//! buffers (anything calling `serialize_bytes`, such as [`bytes::Bytes`] or a
//! `Vec<u8>` field marked `#[serde(with = "binary::as_bytes")]`) are appended
//! to an attachment list and replaced by `{"_placeholder":true,"num":N}`.
//! [`from_value`] does the reverse, handing attachment `N` to the target
//! wherever such a placeholder stands.
//!
//! [`args_to_values`] and [`values_to_args`] apply the event-argument
//! convention: a tuple is a list of arguments, `()` is no argument, and any
//! other value is a single argument. (Serde serialises fixed-size arrays as
//! tuples, so `[a, b]` also gives two arguments; a `Vec` or slice gives one.)

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::ser::{self, Impossible, Serialize};
use serde::{Deserializer, Serializer};
use serde_json::{Map, Number, Value};

use super::packet::{
    PLACEHOLDER_KEY, PLACEHOLDER_NUM, Packet, PacketKind, encode_head, placeholder, placeholder_num,
};

/// Failure converting between typed values and payloads.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// Error reported by a `Serialize` or `Deserialize` implementation.
    #[error("{0}")]
    Message(String),
    /// A map key that cannot become a JSON string.
    #[error("key must be a string")]
    KeyMustBeAString,
    /// A floating-point map key that is NaN or infinite.
    #[error("float key must be finite (got NaN or +/-inf)")]
    FloatKeyMustBeFinite,
    /// A 128-bit integer that does not fit JSON's 64-bit numbers.
    #[error("number out of range")]
    NumberOutOfRange,
    /// A placeholder refers to an attachment that does not exist.
    #[error("placeholder refers to attachment {num} but {available} attachment(s) are available")]
    MissingAttachment {
        /// The placeholder's index.
        num: u64,
        /// Number of attachments available.
        available: usize,
    },
}

impl ser::Error for BinaryError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Message(msg.to_string())
    }
}

impl de::Error for BinaryError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Message(msg.to_string())
    }
}

type Result<T, E = BinaryError> = std::result::Result<T, E>;

/// Serialises `value` into a JSON value, appending byte buffers to
/// `attachments` and leaving placeholders in their place.
///
/// Placeholder numbers continue from `attachments.len()`, so several values
/// can share one attachment list.
pub fn to_value<T: Serialize + ?Sized>(value: &T, attachments: &mut Vec<Bytes>) -> Result<Value> {
    value.serialize(ValueSerializer::new(attachments))
}

/// Deserialises `value`, reading byte buffers from `attachments` where
/// placeholders stand.
pub fn from_value<T: DeserializeOwned>(value: Value, attachments: &[Bytes]) -> Result<T> {
    T::deserialize(ValueDeserializer::new(value, attachments))
}

/// Serialises event arguments: a tuple gives one argument per element, `()`
/// gives none, and any other value gives exactly one argument.
pub fn args_to_values<T: Serialize + ?Sized>(
    args: &T,
    attachments: &mut Vec<Bytes>,
) -> Result<Vec<Value>> {
    let mut shape = TopShape::Single;
    let value = args.serialize(ValueSerializer {
        attachments,
        shape: Some(&mut shape),
    })?;
    Ok(match (shape, value) {
        (TopShape::Tuple, Value::Array(items)) => items,
        (TopShape::Unit, _) => Vec::new(),
        (_, value) => vec![value],
    })
}

/// Deserialises event arguments: a tuple target takes the arguments in order
/// (a missing trailing argument reads as `null`, so it must be an `Option`;
/// extra arguments are ignored), `()` accepts anything, and any other target
/// is read from the first argument (`null` when there is none).
pub fn values_to_args<T: DeserializeOwned>(args: Vec<Value>, attachments: &[Bytes]) -> Result<T> {
    T::deserialize(ArgsDeserializer { args, attachments })
}

/// Builds an event packet from typed arguments (see [`args_to_values`]); the
/// packet is binary when the arguments hold byte buffers.
pub fn event_packet<T: Serialize + ?Sized>(nsp: &str, event: &str, args: &T) -> Result<Packet> {
    let mut attachments = Vec::new();
    let values = args_to_values(args, &mut attachments)?;
    Ok(Packet::event(nsp, event, values).with_attachments(attachments))
}

/// Builds an acknowledgement packet from typed arguments (see
/// [`args_to_values`]); the packet is binary when the arguments hold byte
/// buffers.
pub fn ack_packet<T: Serialize + ?Sized>(nsp: &str, id: u64, args: &T) -> Result<Packet> {
    let mut attachments = Vec::new();
    let values = args_to_values(args, &mut attachments)?;
    Ok(Packet::ack(nsp, id, values).with_attachments(attachments))
}

/// `#[serde(with = "…::binary::as_bytes")]` for `Vec<u8>` (or any type that
/// is `AsRef<[u8]>` and `From<Vec<u8>>`): sends the field as a binary
/// attachment instead of an array of numbers.
pub mod as_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serialises the bytes with `serialize_bytes`.
    pub fn serialize<T: AsRef<[u8]> + ?Sized, S: Serializer>(
        bytes: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    /// Deserialises bytes, also accepting an array of numbers or a string.
    pub fn deserialize<'de, T: From<Vec<u8>>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        deserializer
            .deserialize_byte_buf(ByteBufVisitor)
            .map(T::from)
    }

    struct ByteBufVisitor;

    impl<'de> Visitor<'de> for ByteBufVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<u8>, E> {
            Ok(v.into_bytes())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------
// Serialisation
// ---------------------------------------------------------------------------

/// What the outermost `serialize_*` call was, for the argument convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopShape {
    Single,
    Tuple,
    Unit,
}

/// Serialises into a `Value`, moving byte buffers into `attachments`.
struct ValueSerializer<'a> {
    attachments: &'a mut Vec<Bytes>,
    /// Set only for the outermost value of [`args_to_values`].
    shape: Option<&'a mut TopShape>,
}

impl<'a> ValueSerializer<'a> {
    fn new(attachments: &'a mut Vec<Bytes>) -> Self {
        Self {
            attachments,
            shape: None,
        }
    }
}

fn number_from_i128(v: i128) -> Result<Value> {
    if let Ok(v) = u64::try_from(v) {
        Ok(Value::from(v))
    } else if let Ok(v) = i64::try_from(v) {
        Ok(Value::from(v))
    } else {
        Err(BinaryError::NumberOutOfRange)
    }
}

impl<'a> Serializer for ValueSerializer<'a> {
    type Ok = Value;
    type Error = BinaryError;
    type SerializeSeq = SeqBuilder<'a>;
    type SerializeTuple = SeqBuilder<'a>;
    type SerializeTupleStruct = SeqBuilder<'a>;
    type SerializeTupleVariant = VariantSeqBuilder<'a>;
    type SerializeMap = MapBuilder<'a>;
    type SerializeStruct = MapBuilder<'a>;
    type SerializeStructVariant = VariantMapBuilder<'a>;

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value> {
        number_from_i128(v)
    }

    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| BinaryError::NumberOutOfRange)
    }

    fn serialize_f32(self, v: f32) -> Result<Value> {
        // NaN and infinities become null.
        Ok(Value::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::from(v))
    }

    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::String(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::String(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        let num = self.attachments.len();
        self.attachments.push(Bytes::copy_from_slice(v));
        Ok(placeholder(num))
    }

    fn serialize_none(self) -> Result<Value> {
        Ok(Value::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value> {
        value.serialize(ValueSerializer::new(self.attachments))
    }

    fn serialize_unit(self) -> Result<Value> {
        if let Some(shape) = self.shape {
            *shape = TopShape::Unit;
        }
        Ok(Value::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(Value::String(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value> {
        value.serialize(ValueSerializer::new(self.attachments))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value> {
        let inner = value.serialize(ValueSerializer::new(self.attachments))?;
        let mut map = Map::new();
        map.insert(variant.to_owned(), inner);
        Ok(Value::Object(map))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder<'a>> {
        Ok(SeqBuilder::new(self.attachments, len.unwrap_or(0)))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder<'a>> {
        if let Some(shape) = self.shape {
            *shape = TopShape::Tuple;
        }
        Ok(SeqBuilder::new(self.attachments, len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder<'a>> {
        Ok(SeqBuilder::new(self.attachments, len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqBuilder<'a>> {
        Ok(VariantSeqBuilder {
            variant,
            seq: SeqBuilder::new(self.attachments, len),
        })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder<'a>> {
        Ok(MapBuilder::new(self.attachments))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<MapBuilder<'a>> {
        Ok(MapBuilder::new(self.attachments))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantMapBuilder<'a>> {
        Ok(VariantMapBuilder {
            variant,
            map: MapBuilder::new(self.attachments),
        })
    }
}

/// Builds a JSON array (sequences, tuples, tuple structs).
struct SeqBuilder<'a> {
    attachments: &'a mut Vec<Bytes>,
    items: Vec<Value>,
}

impl<'a> SeqBuilder<'a> {
    fn new(attachments: &'a mut Vec<Bytes>, len: usize) -> Self {
        Self {
            attachments,
            items: Vec::with_capacity(len.min(4096)),
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let value = value.serialize(ValueSerializer::new(self.attachments))?;
        self.items.push(value);
        Ok(())
    }
}

impl ser::SerializeSeq for SeqBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }

    fn end(self) -> Result<Value> {
        Ok(Value::Array(self.items))
    }
}

impl ser::SerializeTuple for SeqBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }

    fn end(self) -> Result<Value> {
        Ok(Value::Array(self.items))
    }
}

impl ser::SerializeTupleStruct for SeqBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }

    fn end(self) -> Result<Value> {
        Ok(Value::Array(self.items))
    }
}

/// Builds `{"Variant":[...]}`.
struct VariantSeqBuilder<'a> {
    variant: &'static str,
    seq: SeqBuilder<'a>,
}

impl ser::SerializeTupleVariant for VariantSeqBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.seq.push(value)
    }

    fn end(self) -> Result<Value> {
        let mut map = Map::new();
        map.insert(self.variant.to_owned(), Value::Array(self.seq.items));
        Ok(Value::Object(map))
    }
}

/// Builds a JSON object (maps and structs).
struct MapBuilder<'a> {
    attachments: &'a mut Vec<Bytes>,
    map: Map<String, Value>,
    next_key: Option<String>,
}

impl<'a> MapBuilder<'a> {
    fn new(attachments: &'a mut Vec<Bytes>) -> Self {
        Self {
            attachments,
            map: Map::new(),
            next_key: None,
        }
    }

    fn insert<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> Result<()> {
        let value = value.serialize(ValueSerializer::new(self.attachments))?;
        self.map.insert(key, value);
        Ok(())
    }
}

impl ser::SerializeMap for MapBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.next_key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        match self.next_key.take() {
            Some(key) => self.insert(key, value),
            None => Err(BinaryError::Message(
                "serialize_value called before serialize_key".to_owned(),
            )),
        }
    }

    fn end(self) -> Result<Value> {
        Ok(Value::Object(self.map))
    }
}

impl ser::SerializeStruct for MapBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.insert(key.to_owned(), value)
    }

    fn end(self) -> Result<Value> {
        Ok(Value::Object(self.map))
    }
}

/// Builds `{"Variant":{...}}`.
struct VariantMapBuilder<'a> {
    variant: &'static str,
    map: MapBuilder<'a>,
}

impl ser::SerializeStructVariant for VariantMapBuilder<'_> {
    type Ok = Value;
    type Error = BinaryError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.map.insert(key.to_owned(), value)
    }

    fn end(self) -> Result<Value> {
        let mut map = Map::new();
        map.insert(self.variant.to_owned(), Value::Object(self.map.map));
        Ok(Value::Object(map))
    }
}

/// Turns map keys into strings the way JSON requires: strings as they are,
/// numbers and booleans as their text, unit variants as their name.
struct KeySerializer;

impl KeySerializer {
    fn text<T: ToString>(v: T) -> Result<String> {
        Ok(v.to_string())
    }
}

impl Serializer for KeySerializer {
    type Ok = String;
    type Error = BinaryError;
    type SerializeSeq = Impossible<String, BinaryError>;
    type SerializeTuple = Impossible<String, BinaryError>;
    type SerializeTupleStruct = Impossible<String, BinaryError>;
    type SerializeTupleVariant = Impossible<String, BinaryError>;
    type SerializeMap = Impossible<String, BinaryError>;
    type SerializeStruct = Impossible<String, BinaryError>;
    type SerializeStructVariant = Impossible<String, BinaryError>;

    fn serialize_bool(self, v: bool) -> Result<String> {
        Self::text(v)
    }

    fn serialize_i8(self, v: i8) -> Result<String> {
        Self::text(v)
    }

    fn serialize_i16(self, v: i16) -> Result<String> {
        Self::text(v)
    }

    fn serialize_i32(self, v: i32) -> Result<String> {
        Self::text(v)
    }

    fn serialize_i64(self, v: i64) -> Result<String> {
        Self::text(v)
    }

    fn serialize_i128(self, v: i128) -> Result<String> {
        Self::text(v)
    }

    fn serialize_u8(self, v: u8) -> Result<String> {
        Self::text(v)
    }

    fn serialize_u16(self, v: u16) -> Result<String> {
        Self::text(v)
    }

    fn serialize_u32(self, v: u32) -> Result<String> {
        Self::text(v)
    }

    fn serialize_u64(self, v: u64) -> Result<String> {
        Self::text(v)
    }

    fn serialize_u128(self, v: u128) -> Result<String> {
        Self::text(v)
    }

    // As JavaScript's `String(x)` names an object's key.
    fn serialize_f32(self, v: f32) -> Result<String> {
        if !v.is_finite() {
            return Err(BinaryError::FloatKeyMustBeFinite);
        }
        Ok(crate::js_number::f32_text(v).as_str().to_owned())
    }

    fn serialize_f64(self, v: f64) -> Result<String> {
        if !v.is_finite() {
            return Err(BinaryError::FloatKeyMustBeFinite);
        }
        Ok(crate::js_number::f64_text(v).as_str().to_owned())
    }

    fn serialize_char(self, v: char) -> Result<String> {
        Ok(v.to_string())
    }

    fn serialize_str(self, v: &str) -> Result<String> {
        Ok(v.to_owned())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_none(self) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_unit(self) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        Err(BinaryError::KeyMustBeAString)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(BinaryError::KeyMustBeAString)
    }
}

// ---------------------------------------------------------------------------
// Encoding straight to text
// ---------------------------------------------------------------------------

/// Appends the text part of an event (`event` is `Some`) or acknowledgement to `out`, written
/// straight from typed arguments, and returns its attachments. It is what
/// [`event_packet`]/[`ack_packet`] followed by [`Packet::encode_into`] write, without the
/// `Value` tree in between: building and dropping that tree cost more than writing the text.
/// Objects keep their fields in the order they are serialised (as `JSON.stringify` does),
/// where a `Value` sorts them. On error `out` holds part of an encoding.
pub fn encode_text<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    nsp: &str,
    id: Option<u64>,
    event: Option<&str>,
    args: &T,
) -> Result<Vec<Bytes>> {
    let kind = if event.is_some() {
        PacketKind::Event
    } else {
        PacketKind::Ack
    };
    let head = out.len();
    encode_head(out, kind, 0, nsp, id);
    out.push(b'[');
    if let Some(event) = event {
        // A `str` always serialises.
        let _ = serde_json::to_writer(&mut *out, event);
        out.push(b',');
    }
    let start = out.len();
    let mut attachments = Vec::new();
    let mut shape = TopShape::Single;
    let mut formatter = Attaching {
        attachments: &mut attachments,
        out_of_range: false,
    };
    let written = args.serialize(TopLevel {
        inner: &mut serde_json::Serializer::with_formatter(&mut *out, &mut formatter),
        shape: &mut shape,
    });
    if let Err(e) = written {
        return Err(if formatter.out_of_range {
            BinaryError::NumberOutOfRange
        } else {
            json_error(&e)
        });
    }
    // The arguments follow the event name inside one array: a tuple's own brackets go, and
    // no argument leaves no separator.
    let separator = usize::from(event.is_some());
    match shape {
        TopShape::Single => out.push(b']'),
        TopShape::Tuple if out.len() - start > 2 => {
            out.remove(start);
        }
        TopShape::Tuple | TopShape::Unit => {
            out.truncate(start - separator);
            out.push(b']');
        }
    }
    if !attachments.is_empty() {
        let mut binary_head = Vec::with_capacity(16);
        encode_head(
            &mut binary_head,
            kind.with_binary(true),
            attachments.len(),
            "/",
            None,
        );
        out.splice(head..head + 1, binary_head);
    }
    Ok(attachments)
}

/// The error a `Value` serialisation would have given, where serde_json has the same one.
fn json_error(e: &serde_json::Error) -> BinaryError {
    let message = e.to_string();
    if message == BinaryError::KeyMustBeAString.to_string() {
        BinaryError::KeyMustBeAString
    } else if message == BinaryError::FloatKeyMustBeFinite.to_string() {
        BinaryError::FloatKeyMustBeFinite
    } else {
        BinaryError::Message(message)
    }
}

/// serde_json's formatter, except that byte buffers become attachments and placeholders, and
/// that 128-bit integers must fit JSON's 64-bit numbers, as in [`to_value`].
struct Attaching<'a> {
    attachments: &'a mut Vec<Bytes>,
    out_of_range: bool,
}

impl Attaching<'_> {
    fn out_of_range(&mut self) -> std::io::Error {
        self.out_of_range = true;
        std::io::Error::other(BinaryError::NumberOutOfRange.to_string())
    }
}

impl serde_json::ser::Formatter for &mut Attaching<'_> {
    fn write_byte_array<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: &[u8],
    ) -> std::io::Result<()> {
        let num = self.attachments.len();
        self.attachments.push(Bytes::copy_from_slice(value));
        write!(
            writer,
            "{{\"{PLACEHOLDER_KEY}\":true,\"{PLACEHOLDER_NUM}\":{num}}}"
        )
    }

    fn write_i128<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: i128,
    ) -> std::io::Result<()> {
        if let Ok(v) = u64::try_from(value) {
            self.write_u64(writer, v)
        } else if let Ok(v) = i64::try_from(value) {
            self.write_i64(writer, v)
        } else {
            Err(self.out_of_range())
        }
    }

    fn write_u128<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: u128,
    ) -> std::io::Result<()> {
        match u64::try_from(value) {
            Ok(v) => self.write_u64(writer, v),
            Err(_) => Err(self.out_of_range()),
        }
    }

    // As JavaScript writes numbers (`1`, not `1.0`; `0`, not `-0`): see `js_number`.
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(crate::js_number::f64_text(value).as_bytes())
    }

    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        writer.write_all(crate::js_number::f32_text(value).as_bytes())
    }
}

/// serde_json's serializer for the outermost value, noting its shape for the argument
/// convention (see [`args_to_values`]); everything inside goes to serde_json alone.
struct TopLevel<'a, W, F> {
    inner: &'a mut serde_json::Serializer<W, F>,
    shape: &'a mut TopShape,
}

type Compound<'a, W, F> = serde_json::ser::Compound<'a, W, F>;

impl<'a, W: std::io::Write, F: serde_json::ser::Formatter> Serializer for TopLevel<'a, W, F> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'a, W, F>;
    type SerializeTuple = Compound<'a, W, F>;
    type SerializeTupleStruct = Compound<'a, W, F>;
    type SerializeTupleVariant = Compound<'a, W, F>;
    type SerializeMap = Compound<'a, W, F>;
    type SerializeStruct = Compound<'a, W, F>;
    type SerializeStructVariant = Compound<'a, W, F>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.inner.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<()> {
        self.inner.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<()> {
        self.inner.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        self.inner.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        self.inner.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<()> {
        self.inner.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<()> {
        self.inner.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<()> {
        self.inner.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        self.inner.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        self.inner.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<()> {
        self.inner.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        self.inner.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        self.inner.serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        self.inner.serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        self.inner.serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<()> {
        self.inner.serialize_bytes(v)
    }
    fn serialize_none(self) -> serde_json::Result<()> {
        self.inner.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        self.inner.serialize_some(value)
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        *self.shape = TopShape::Unit;
        self.inner.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> serde_json::Result<()> {
        self.inner.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.inner.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.inner.serialize_newtype_struct(name, value)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.inner
            .serialize_newtype_variant(name, index, variant, value)
    }
    fn serialize_seq(self, len: Option<usize>) -> serde_json::Result<Self::SerializeSeq> {
        self.inner.serialize_seq(len)
    }
    fn serialize_tuple(self, len: usize) -> serde_json::Result<Self::SerializeTuple> {
        *self.shape = TopShape::Tuple;
        self.inner.serialize_tuple(len)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> serde_json::Result<Self::SerializeTupleStruct> {
        self.inner.serialize_tuple_struct(name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Self::SerializeTupleVariant> {
        self.inner
            .serialize_tuple_variant(name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> serde_json::Result<Self::SerializeMap> {
        self.inner.serialize_map(len)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> serde_json::Result<Self::SerializeStruct> {
        self.inner.serialize_struct(name, len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Self::SerializeStructVariant> {
        self.inner
            .serialize_struct_variant(name, index, variant, len)
    }
}

// ---------------------------------------------------------------------------
// Deserialisation
// ---------------------------------------------------------------------------

/// Describes a `Value` for "invalid type" errors.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => number_unexpected(n),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

fn number_unexpected(n: &Number) -> Unexpected<'static> {
    if let Some(u) = n.as_u64() {
        Unexpected::Unsigned(u)
    } else if let Some(i) = n.as_i64() {
        Unexpected::Signed(i)
    } else {
        Unexpected::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn invalid_type<'de, V: Visitor<'de>, T>(value: &Value, visitor: &V) -> Result<T> {
    Err(de::Error::invalid_type(unexpected(value), visitor))
}

/// The attachment a placeholder object stands for; `Ok(None)` when `map` is
/// not a placeholder. Without attachments nothing is one: the packet decoder reads what only
/// looks like a placeholder in a plain event as data, and so does this.
fn resolve_placeholder<'de>(
    map: &Map<String, Value>,
    attachments: &'de [Bytes],
) -> Result<Option<&'de [u8]>> {
    let Some(num) = placeholder_num(map).filter(|_| !attachments.is_empty()) else {
        return Ok(None);
    };
    usize::try_from(num)
        .ok()
        .and_then(|index| attachments.get(index))
        .map(|bytes| Some(bytes.as_ref()))
        .ok_or(BinaryError::MissingAttachment {
            num,
            available: attachments.len(),
        })
}

/// Whether `visitor` builds a `serde_json::Value`, which has no byte type:
/// such targets keep placeholders as objects.
fn builds_json_value<'de, V: Visitor<'de>>(visitor: &V) -> bool {
    struct Expecting<'v, V>(&'v V);

    impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }

    Expecting(visitor).to_string() == "any valid JSON value"
}

/// Deserialises from an owned `Value`, resolving placeholders against the
/// attachments.
struct ValueDeserializer<'de> {
    value: Value,
    attachments: &'de [Bytes],
}

impl<'de> ValueDeserializer<'de> {
    fn new(value: Value, attachments: &'de [Bytes]) -> Self {
        Self { value, attachments }
    }
}

fn visit_number<'de, V: Visitor<'de>>(n: &Number, visitor: V) -> Result<V::Value> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else if let Some(f) = n.as_f64() {
        visitor.visit_f64(f)
    } else {
        Err(de::Error::invalid_type(number_unexpected(n), &visitor))
    }
}

fn visit_array<'de, V: Visitor<'de>>(
    items: Vec<Value>,
    attachments: &'de [Bytes],
    visitor: V,
) -> Result<V::Value> {
    let len = items.len();
    let mut seq = SeqAccess {
        iter: items.into_iter(),
        attachments,
    };
    let out = visitor.visit_seq(&mut seq)?;
    if seq.iter.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    map: Map<String, Value>,
    attachments: &'de [Bytes],
    visitor: V,
) -> Result<V::Value> {
    let len = map.len();
    let mut access = MapAccess {
        iter: map.into_iter(),
        value: None,
        attachments,
    };
    let out = visitor.visit_map(&mut access)?;
    if access.iter.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in map"))
    }
}

/// Presents an attachment as a sequence of `u8` (for `Vec<u8>` and arrays).
fn visit_bytes_as_seq<'de, V: Visitor<'de>>(bytes: &'de [u8], visitor: V) -> Result<V::Value> {
    let mut seq = de::value::SeqDeserializer::<_, BinaryError>::new(bytes.iter().copied());
    let out = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

impl<'de> Deserializer<'de> for ValueDeserializer<'de> {
    type Error = BinaryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => visit_number(&n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, self.attachments, visitor),
            Value::Object(map) => match resolve_placeholder(&map, self.attachments)? {
                Some(bytes) if !builds_json_value(&visitor) => visitor.visit_borrowed_bytes(bytes),
                _ => visit_object(map, self.attachments, visitor),
            },
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string identifier
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Object(map) => match resolve_placeholder(&map, self.attachments)? {
                Some(bytes) => visitor.visit_borrowed_bytes(bytes),
                None => invalid_type(&Value::Object(map), &visitor),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, self.attachments, visitor),
            other => invalid_type(&other, &visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            other => invalid_type(&other, &visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Array(items) => visit_array(items, self.attachments, visitor),
            Value::Object(map) => match resolve_placeholder(&map, self.attachments)? {
                Some(bytes) => visit_bytes_as_seq(bytes, visitor),
                None => invalid_type(&Value::Object(map), &visitor),
            },
            other => invalid_type(&other, &visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Object(map) => visit_object(map, self.attachments, visitor),
            other => invalid_type(&other, &visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::Object(map) => visit_object(map, self.attachments, visitor),
            Value::Array(items) => visit_array(items, self.attachments, visitor),
            other => invalid_type(&other, &visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::String(variant) => visitor.visit_enum(EnumAccess {
                variant,
                value: None,
                attachments: self.attachments,
            }),
            Value::Object(map) => {
                let mut iter = map.into_iter();
                match (iter.next(), iter.next()) {
                    (Some((variant, value)), None) => visitor.visit_enum(EnumAccess {
                        variant,
                        value: Some(value),
                        attachments: self.attachments,
                    }),
                    _ => Err(de::Error::invalid_value(
                        Unexpected::Map,
                        &"map with a single key",
                    )),
                }
            }
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"string or map",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        drop(self);
        visitor.visit_unit()
    }
}

struct SeqAccess<'de> {
    iter: std::vec::IntoIter<Value>,
    attachments: &'de [Bytes],
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = BinaryError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.iter.next() {
            Some(value) => seed
                .deserialize(ValueDeserializer::new(value, self.attachments))
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapAccess<'de> {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
    attachments: &'de [Bytes],
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = BinaryError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDeserializer { key }).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        match self.value.take() {
            Some(value) => seed.deserialize(ValueDeserializer::new(value, self.attachments)),
            None => Err(de::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct EnumAccess<'de> {
    variant: String,
    value: Option<Value>,
    attachments: &'de [Bytes],
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = BinaryError;
    type Variant = VariantAccess<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantAccess<'de>)> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((
            variant,
            VariantAccess {
                value: self.value,
                attachments: self.attachments,
            },
        ))
    }
}

struct VariantAccess<'de> {
    value: Option<Value>,
    attachments: &'de [Bytes],
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de> {
    type Error = BinaryError;

    fn unit_variant(self) -> Result<()> {
        match self.value {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(unexpected(&other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        match self.value {
            Some(value) => seed.deserialize(ValueDeserializer::new(value, self.attachments)),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        match self.value {
            Some(Value::Array(items)) => visit_array(items, self.attachments, visitor),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"tuple variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Some(Value::Object(map)) => visit_object(map, self.attachments, visitor),
            Some(Value::Array(items)) => visit_array(items, self.attachments, visitor),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"struct variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

/// Deserialises a map key: a string, also readable as a number or boolean
/// when the target asks for one (`HashMap<u32, _>`, for instance).
struct KeyDeserializer {
    key: String,
}

macro_rules! parse_key {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                match self.key.parse::<$ty>() {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => visitor.visit_string(self.key),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for KeyDeserializer {
    type Error = BinaryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_string(self.key)
    }

    parse_key! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self.key.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// Deserialises event arguments (see [`values_to_args`]).
struct ArgsDeserializer<'de> {
    args: Vec<Value>,
    attachments: &'de [Bytes],
}

impl<'de> ArgsDeserializer<'de> {
    /// The deserializer for a non-tuple target: the first argument, or null.
    fn first(self) -> ValueDeserializer<'de> {
        let value = self.args.into_iter().next().unwrap_or(Value::Null);
        ValueDeserializer::new(value, self.attachments)
    }
}

macro_rules! from_first_arg {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                self.first().$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for ArgsDeserializer<'de> {
    type Error = BinaryError;

    from_first_arg! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(ArgsSeq {
            iter: self.args.into_iter(),
            remaining: len,
            attachments: self.attachments,
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.first().deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.first().deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.first().deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.first().deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.first().deserialize_enum(name, variants, visitor)
    }
}

/// The arguments of a tuple target, padded with nulls up to the tuple length.
struct ArgsSeq<'de> {
    iter: std::vec::IntoIter<Value>,
    remaining: usize,
    attachments: &'de [Bytes],
}

impl<'de> de::SeqAccess<'de> for ArgsSeq<'de> {
    type Error = BinaryError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let value = self.iter.next().unwrap_or(Value::Null);
        seed.deserialize(ValueDeserializer::new(value, self.attachments))
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct File {
        name: String,
        data: Bytes,
        thumb: Option<Bytes>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Album {
        title: String,
        files: Vec<File>,
        by_name: BTreeMap<String, Bytes>,
        #[serde(with = "as_bytes")]
        raw: Vec<u8>,
        kind: Kind,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Plain,
        Blob(Bytes),
        Pair(u8, Bytes),
        Named { id: u32, payload: Bytes },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Plain {
        a: i64,
        b: u64,
        c: f64,
        d: String,
        e: Option<bool>,
        f: Vec<(char, i8)>,
        g: HashMap<u32, String>,
        h: (),
        i: Unit,
        j: Newtype,
        k: Kind2,
        l: Vec<Kind2>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Newtype(String);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind2 {
        A,
        B(i32),
        C(i32, String),
        D { x: Option<u8> },
    }

    fn b(bytes: &'static [u8]) -> Bytes {
        Bytes::from_static(bytes)
    }

    fn plain() -> Plain {
        Plain {
            a: -5,
            b: u64::MAX,
            c: 1.25,
            d: "d\"\\\u{1F600}".to_owned(),
            e: None,
            f: vec![('x', -1), ('é', 127)],
            g: HashMap::from([(1, "one".to_owned()), (20, "twenty".to_owned())]),
            h: (),
            i: Unit,
            j: Newtype("n".to_owned()),
            k: Kind2::D { x: Some(3) },
            l: vec![
                Kind2::A,
                Kind2::B(-2),
                Kind2::C(1, "c".to_owned()),
                Kind2::D { x: None },
            ],
        }
    }

    #[test]
    fn matches_serde_json_without_binary() {
        let value = plain();
        let mut atts = Vec::new();
        let ours = to_value(&value, &mut atts).unwrap();
        assert!(atts.is_empty());
        assert_eq!(ours, serde_json::to_value(&value).unwrap());
        let back: Plain = from_value(ours.clone(), &[]).unwrap();
        assert_eq!(back, value);
        let theirs: Plain = serde_json::from_value(ours).unwrap();
        assert_eq!(theirs, value);

        fn check<T: Serialize + ?Sized>(value: &T, expected: Value) {
            let mut atts = Vec::new();
            assert_eq!(to_value(value, &mut atts).unwrap(), expected);
            assert_eq!(serde_json::to_value(value).unwrap(), expected);
        }
        check(&f64::NAN, json!(null));
        check(&f32::INFINITY, json!(null));
        check(&0.1f32, serde_json::to_value(0.1f32).unwrap());
        check(&-7i128, json!(-7));
        check(&u128::from(u64::MAX), json!(u64::MAX));
        check(&'c', json!("c"));
        check(&BTreeMap::from([(true, 1)]), json!({"true": 1}));
        check(&BTreeMap::from([(-3i64, 1)]), json!({"-3": 1}));
        check(
            &BTreeMap::from([(1.5f64, 1)].map(|(k, v)| (k.to_string(), v))),
            json!({"1.5": 1}),
        );
        check("str", json!("str"));
        check(&vec![1u8, 2], json!([1, 2]));
        check(&Kind2::A, json!("A"));
        check(&Kind2::C(1, "x".to_owned()), json!({"C": [1, "x"]}));
        let mut atts = Vec::new();
        assert!(matches!(
            to_value(&i128::MAX, &mut atts),
            Err(BinaryError::NumberOutOfRange)
        ));
        assert!(matches!(
            to_value(&HashMap::from([(vec![1], 1)]), &mut atts),
            Err(BinaryError::KeyMustBeAString)
        ));
        // Float keys are named as JavaScript names them (`String(1.0)` is "1"; serde_json
        // writes "1.0").
        let mut float_keys = HashMap::new();
        float_keys.insert(Key(1.0), 1);
        assert_eq!(to_value(&float_keys, &mut atts).unwrap(), json!({"1": 1}));
        let mut float_keys = HashMap::new();
        float_keys.insert(Key(1e21), 1);
        assert_eq!(
            to_value(&float_keys, &mut atts).unwrap(),
            json!({"1e+21": 1})
        );
        float_keys.insert(Key(f64::NAN), 2);
        assert!(matches!(
            to_value(&float_keys, &mut atts),
            Err(BinaryError::FloatKeyMustBeFinite)
        ));
    }

    /// A float usable as a map key in tests.
    #[derive(Debug, Clone, Copy, Serialize)]
    struct Key(f64);

    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            self.0.to_bits() == other.0.to_bits()
        }
    }

    impl Eq for Key {}

    impl std::hash::Hash for Key {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.to_bits().hash(state);
        }
    }

    #[test]
    fn unit_variant_keys() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum K {
            Left,
        }
        let mut atts = Vec::new();
        let ours = to_value(&BTreeMap::from([(K::Left, 1)]), &mut atts).unwrap();
        assert_eq!(ours, json!({"Left": 1}));
    }

    #[test]
    fn bytes_become_placeholders() {
        let mut atts = Vec::new();
        let value = to_value(&(b(b"ab"), "x", vec![b(b"c"), b(b"")]), &mut atts).unwrap();
        assert_eq!(
            value,
            json!([
                {"_placeholder": true, "num": 0},
                "x",
                [{"_placeholder": true, "num": 1}, {"_placeholder": true, "num": 2}]
            ])
        );
        assert_eq!(atts, vec![b(b"ab"), b(b"c"), b(b"")]);
        // Numbering continues in a shared list.
        let more = to_value(&b(b"d"), &mut atts).unwrap();
        assert_eq!(more, json!({"_placeholder": true, "num": 3}));
    }

    #[test]
    fn nested_round_trip() {
        let album = Album {
            title: "t".to_owned(),
            files: vec![
                File {
                    name: "a".to_owned(),
                    data: b(&[1, 2, 3]),
                    thumb: Some(b(&[9])),
                },
                File {
                    name: "b".to_owned(),
                    data: b(&[]),
                    thumb: None,
                },
            ],
            by_name: BTreeMap::from([("x".to_owned(), b(b"xx")), ("y".to_owned(), b(b"yy"))]),
            raw: vec![0, 255],
            kind: Kind::Named {
                id: 7,
                payload: b(b"p"),
            },
        };
        let mut atts = Vec::new();
        let value = to_value(&album, &mut atts).unwrap();
        assert_eq!(atts.len(), 7);
        assert_eq!(value["raw"], json!({"_placeholder": true, "num": 5}));
        let back: Album = from_value(value, &atts).unwrap();
        assert_eq!(back, album);

        for kind in [Kind::Plain, Kind::Blob(b(b"z")), Kind::Pair(4, b(b"q"))] {
            let mut atts = Vec::new();
            let value = to_value(&kind, &mut atts).unwrap();
            assert_eq!(from_value::<Kind>(value, &atts).unwrap(), kind);
        }
    }

    #[test]
    fn placeholder_targets() {
        let atts = [b(&[1, 2, 3])];
        let ph = json!({"_placeholder": true, "num": 0});
        // Vec<u8> without any attribute reads the buffer as a sequence.
        assert_eq!(
            from_value::<Vec<u8>>(ph.clone(), &atts).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(from_value::<[u8; 3]>(ph.clone(), &atts).unwrap(), [1, 2, 3]);
        assert!(from_value::<[u8; 2]>(ph.clone(), &atts).is_err());
        assert_eq!(from_value::<Bytes>(ph.clone(), &atts).unwrap(), atts[0]);
        assert_eq!(
            from_value::<Option<Bytes>>(ph.clone(), &atts).unwrap(),
            Some(atts[0].clone())
        );
        assert_eq!(
            from_value::<Option<Bytes>>(json!(null), &atts).unwrap(),
            None
        );
        // serde_json::Value keeps the placeholder object.
        assert_eq!(from_value::<Value>(ph.clone(), &atts).unwrap(), ph);
        assert_eq!(
            from_value::<Value>(json!([ph.clone(), 1]), &atts).unwrap(),
            json!([ph.clone(), 1])
        );
        // deserialize_any gives bytes (untagged enums buffer through it).
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Data(Bytes),
        }
        // (Invalid UTF-8, so the `String` variant cannot take the bytes.)
        let binary = [b(&[0xff, 0xfe])];
        assert_eq!(
            from_value::<Either>(ph.clone(), &binary).unwrap(),
            Either::Data(binary[0].clone())
        );
        assert_eq!(
            from_value::<Either>(json!("s"), &atts).unwrap(),
            Either::Text("s".to_owned())
        );
        // Missing attachment.
        assert!(matches!(
            from_value::<Bytes>(json!({"_placeholder": true, "num": 1}), &atts),
            Err(BinaryError::MissingAttachment {
                num: 1,
                available: 1
            })
        ));
        // Not a placeholder: an ordinary map.
        let almost = json!({"_placeholder": true, "num": 0, "x": 1});
        assert!(from_value::<Bytes>(almost.clone(), &atts).is_err());
        assert_eq!(from_value::<Value>(almost.clone(), &atts).unwrap(), almost);
        // In a packet without attachments, what looks like a placeholder is data.
        assert_eq!(from_value::<Value>(ph.clone(), &[]).unwrap(), ph);
        #[derive(Debug, PartialEq, Deserialize)]
        struct LooksLikeOne {
            _placeholder: bool,
            num: u32,
        }
        assert_eq!(
            from_value::<LooksLikeOne>(ph.clone(), &[]).unwrap(),
            LooksLikeOne {
                _placeholder: true,
                num: 0
            }
        );
        assert!(from_value::<Bytes>(ph.clone(), &[]).is_err());
        // Bytes from plain JSON still work as serde_json accepts them.
        assert_eq!(from_value::<Bytes>(json!([4, 5]), &[]).unwrap(), b(&[4, 5]));
        assert_eq!(from_value::<Bytes>(json!("hi"), &[]).unwrap(), b(b"hi"));
    }

    #[test]
    fn deserializer_errors_like_serde_json() {
        assert!(from_value::<u8>(json!(300), &[]).is_err());
        assert!(from_value::<String>(json!(1), &[]).is_err());
        assert!(from_value::<(u8, u8)>(json!([1, 2, 3]), &[]).is_err());
        assert!(from_value::<Kind2>(json!({"A": 1, "B": 2}), &[]).is_err());
        assert!(from_value::<Kind2>(json!(3), &[]).is_err());
        assert_eq!(
            from_value::<Kind2>(json!({"A": null}), &[]).unwrap(),
            Kind2::A
        );
        assert!(from_value::<Kind2>(json!("B"), &[]).is_err());
        assert_eq!(from_value::<f64>(json!(3), &[]).unwrap(), 3.0);
        assert_eq!(from_value::<i128>(json!(-3), &[]).unwrap(), -3);
        assert_eq!(
            from_value::<HashMap<i8, u8>>(json!({"-1": 2}), &[]).unwrap()[&-1],
            2
        );
        assert!(from_value::<HashMap<i8, u8>>(json!({"x": 2}), &[]).is_err());
        assert_eq!(
            from_value::<BTreeMap<bool, u8>>(json!({"true": 2}), &[]).unwrap()[&true],
            2
        );
        // Structs also read from arrays, as with serde_json.
        #[derive(Debug, PartialEq, Deserialize)]
        struct P {
            x: u8,
            y: u8,
        }
        assert_eq!(
            from_value::<P>(json!([1, 2]), &[]).unwrap(),
            P { x: 1, y: 2 }
        );
        let e = from_value::<P>(json!({"x": 1}), &[]).unwrap_err();
        assert_eq!(e.to_string(), "missing field `y`");
        // Unknown fields are ignored, including placeholders.
        let atts = [b(b"z")];
        let v = json!({"x": 1, "y": 2, "z": {"_placeholder": true, "num": 0}});
        assert_eq!(from_value::<P>(v, &atts).unwrap(), P { x: 1, y: 2 });
    }

    #[test]
    fn args_convention_serialize() {
        let mut atts = Vec::new();
        assert_eq!(args_to_values(&(), &mut atts).unwrap(), Vec::<Value>::new());
        assert_eq!(
            args_to_values(&(1, "a"), &mut atts).unwrap(),
            vec![json!(1), json!("a")]
        );
        assert_eq!(args_to_values(&(1,), &mut atts).unwrap(), vec![json!(1)]);
        assert_eq!(
            args_to_values(&vec![1, 2], &mut atts).unwrap(),
            vec![json!([1, 2])]
        );
        // Fixed-size arrays serialise as tuples, so they spread too.
        assert_eq!(
            args_to_values(&[1, 2], &mut atts).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(args_to_values("s", &mut atts).unwrap(), vec![json!("s")]);
        assert_eq!(args_to_values(&5, &mut atts).unwrap(), vec![json!(5)]);
        assert_eq!(
            args_to_values(&None::<u8>, &mut atts).unwrap(),
            vec![json!(null)]
        );
        assert_eq!(
            args_to_values(&Some((1, 2)), &mut atts).unwrap(),
            vec![json!([1, 2])]
        );
        assert_eq!(
            args_to_values(&BTreeMap::from([("k", 1)]), &mut atts).unwrap(),
            vec![json!({"k": 1})]
        );
        assert_eq!(
            args_to_values(&Newtype("n".to_owned()), &mut atts).unwrap(),
            vec![json!("n")]
        );
        assert_eq!(
            args_to_values(&((1, 2), 3), &mut atts).unwrap(),
            vec![json!([1, 2]), json!(3)]
        );
        assert!(atts.is_empty());

        let file = File {
            name: "f".to_owned(),
            data: b(b"data"),
            thumb: None,
        };
        let args = args_to_values(&(&file, b(b"extra")), &mut atts).unwrap();
        assert_eq!(args.len(), 2);
        assert_eq!(atts, vec![b(b"data"), b(b"extra")]);
        assert_eq!(args[1], json!({"_placeholder": true, "num": 1}));
        // Fields go out in declaration order, as a JavaScript object literal's would.
        assert_eq!(
            serde_json::to_string(&args[0]).unwrap(),
            r#"{"name":"f","data":{"_placeholder":true,"num":0},"thumb":null}"#
        );
    }

    #[test]
    fn args_convention_deserialize() {
        let args = vec![json!(1), json!("a"), json!(true)];
        let (n, s): (u8, String) = values_to_args(args.clone(), &[]).unwrap();
        assert_eq!((n, s.as_str()), (1, "a"));
        let (n, s, t, u): (u8, String, bool, Option<u8>) =
            values_to_args(args.clone(), &[]).unwrap();
        assert_eq!((n, s.as_str(), t, u), (1, "a", true, None));
        assert!(values_to_args::<(u8, String, bool, u8)>(args.clone(), &[]).is_err());
        assert_eq!(values_to_args::<u8>(args.clone(), &[]).unwrap(), 1);
        assert_eq!(
            values_to_args::<Value>(args.clone(), &[]).unwrap(),
            json!(1)
        );
        values_to_args::<()>(args.clone(), &[]).unwrap();
        values_to_args::<()>(vec![], &[]).unwrap();
        assert_eq!(values_to_args::<Option<u8>>(vec![], &[]).unwrap(), None);
        assert!(values_to_args::<u8>(vec![], &[]).is_err());
        assert_eq!(
            values_to_args::<(Option<u8>,)>(vec![], &[]).unwrap(),
            (None,)
        );
        assert_eq!(
            values_to_args::<Vec<u8>>(vec![json!([1, 2])], &[]).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            values_to_args::<Newtype>(vec![json!("n")], &[]).unwrap(),
            Newtype("n".to_owned())
        );

        // A sequence-looping visitor over a tuple stops at the tuple length.
        struct Loop;
        impl<'de> Deserialize<'de> for Loop {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Loop;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("anything")
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> std::result::Result<Loop, A::Error> {
                        while seq.next_element::<Value>()?.is_some() {}
                        Ok(Loop)
                    }
                }
                d.deserialize_tuple(3, V)
            }
        }
        values_to_args::<Loop>(vec![], &[]).unwrap();
    }

    #[test]
    fn tuple_args_with_binary_round_trip() {
        let file = File {
            name: "f".to_owned(),
            data: b(&[1, 2]),
            thumb: Some(b(&[3])),
        };
        let mut atts = Vec::new();
        let args = args_to_values(
            &("caption", file.clone(), b(&[4]), vec![b(&[5])]),
            &mut atts,
        )
        .unwrap();
        assert_eq!(atts.len(), 4);
        type Args = (String, File, Bytes, Vec<Bytes>, Option<Bytes>);
        let back: Args = values_to_args(args, &atts).unwrap();
        assert_eq!(
            back,
            ("caption".to_owned(), file, b(&[4]), vec![b(&[5])], None)
        );
    }

    #[test]
    fn packets_through_the_wire() {
        use crate::socketio::packet::{Decoder, PacketKind};

        let packet = event_packet("/admin", "upload", &("name", b(b"\x00\x01"))).unwrap();
        assert_eq!(packet.kind, PacketKind::BinaryEvent);
        let text = packet.encode();
        assert_eq!(
            text,
            r#"51-/admin,["upload","name",{"_placeholder":true,"num":0}]"#
        );

        let mut decoder = Decoder::new();
        assert!(decoder.decode_text(&text).unwrap().is_none());
        let decoded = decoder.decode_binary(b(b"\x00\x01")).unwrap().unwrap();
        let (name, args, atts) = decoded.into_event().unwrap();
        assert_eq!(name, "upload");
        let (s, data): (String, Bytes) = values_to_args(args, &atts).unwrap();
        assert_eq!((s.as_str(), data), ("name", b(b"\x00\x01")));

        let ack = ack_packet("/", 3, &()).unwrap();
        assert_eq!(ack.encode(), "33[]");
        let ack = ack_packet("/", 3, &b(b"x")).unwrap();
        assert_eq!(ack.encode(), r#"61-3[{"_placeholder":true,"num":0}]"#);
        let plain = event_packet("/", "hi", &json!({"a": 1})).unwrap();
        assert_eq!(plain.encode(), r#"2["hi",{"a":1}]"#);
    }

    /// The text and attachments `encode_text` writes, and those of the `Value` route.
    fn both_ways<T: Serialize + ?Sized>(
        nsp: &str,
        id: Option<u64>,
        event: Option<&str>,
        args: &T,
    ) -> ((String, Vec<Bytes>), (String, Vec<Bytes>)) {
        let mut out = Vec::new();
        let atts = encode_text(&mut out, nsp, id, event, args).unwrap();
        let direct = (String::from_utf8(out).unwrap(), atts);
        let packet = match (event, id) {
            (Some(event), id) => {
                let packet = event_packet(nsp, event, args).unwrap();
                match id {
                    Some(id) => packet.with_id(id),
                    None => packet,
                }
            }
            (None, id) => ack_packet(nsp, id.unwrap(), args).unwrap(),
        };
        let via_value = (packet.encode(), packet.attachments);
        (direct, via_value)
    }

    #[test]
    fn text_is_written_as_the_value_route_writes_it() {
        fn same<T: Serialize + ?Sized>(nsp: &str, id: Option<u64>, event: Option<&str>, args: &T) {
            let (direct, via_value) = both_ways(nsp, id, event, args);
            assert_eq!(direct, via_value);
        }
        for (nsp, id) in [
            ("/", None),
            ("/admin", None),
            ("/", Some(7)),
            ("/a", Some(12)),
        ] {
            let event = Some("ev\"\u{2028}");
            same(nsp, id, event, &());
            same(nsp, id, event, &Value::Null);
            same(nsp, id, event, &(Value::Null,));
            same(nsp, id, event, &(1, "two", [3, 4]));
            same(nsp, id, event, &[1, 2]);
            same(nsp, id, event, &vec![1, 2]);
            same(nsp, id, event, &Vec::<u8>::new());
            same(nsp, id, event, &((1, 2), 3));
            same(
                nsp,
                id,
                event,
                &json!({"b": [1, {"z": null, "a": "\u{0}"}], "a": 1.5}),
            );
            same(nsp, id, event, &(b(b"\x00"), "x", vec![b(b"y"), b(b"")]));
            same(nsp, id, event, &b(b"only"));
            same(nsp, id, event, &Some(b(b"some")));
            same(
                nsp,
                id,
                event,
                &(f64::NAN, -7i128, u128::from(u64::MAX), i128::from(i64::MIN)),
            );
            same(nsp, id, event, "str");
            same(nsp, id, event, &(-0.0f64, 0.0f64, -0.0f32, 2.5f32, -1.5f64));
            same(nsp, id, event, &HashMap::from([(Key(-0.0), 1)]));
            same(nsp, id, event, &HashMap::from([(Key(0.0), 1)]));
            same(nsp, id, event, &Kind2::C(1, "x".to_owned()));
            if let Some(id) = id {
                same(nsp, Some(id), None, &());
                same(nsp, Some(id), None, &Value::Null);
                same(nsp, Some(id), None, &(1, "two"));
                same(nsp, Some(id), None, &json!([]));
                same(nsp, Some(id), None, &"one");
                same(nsp, Some(id), None, &(b(b"\x01"), b(b"\x02")));
            }
        }
    }

    #[test]
    fn numbers_are_written_as_javascript_writes_them() {
        let (direct, via_value) = both_ways(
            "/",
            None,
            Some("z"),
            &(-0.0f64, 0.0f32, -0.0f32, 0.5, 2.0f64, 1e20, 3.0f32),
        );
        assert_eq!(direct.0, r#"2["z",0,0,0,0.5,2,100000000000000000000,3]"#);
        assert_eq!(direct, via_value);
        let (direct, via_value) = both_ways("/", None, Some("z"), &HashMap::from([(Key(2.0), 1)]));
        assert_eq!(direct.0, r#"2["z",{"2":1}]"#);
        assert_eq!(direct, via_value);
    }

    #[test]
    fn text_keeps_field_order_and_decodes_to_the_same_packet() {
        use crate::socketio::packet::Decoder;

        let value = plain();
        let (direct, via_value) = both_ways("/", None, Some("plain"), &value);
        // Fields in declaration order, as JSON.stringify keeps an object's own order.
        assert!(
            direct
                .0
                .starts_with(r#"2["plain",{"a":-5,"b":18446744073709551615,"c":1.25"#)
        );
        let decode = |(text, atts): (String, Vec<Bytes>)| {
            let mut decoder = Decoder::new();
            let mut decoded = decoder.decode_text(&text).unwrap();
            for att in atts {
                decoded = decoder.decode_binary(att).unwrap();
            }
            decoded.unwrap()
        };
        assert_eq!(decode(direct), decode(via_value));

        let album = Album {
            title: "t".to_owned(),
            files: vec![File {
                name: "f".to_owned(),
                data: b(b"1"),
                thumb: Some(b(b"2")),
            }],
            by_name: BTreeMap::from([("k".to_owned(), b(b"3"))]),
            raw: vec![4, 5],
            kind: Kind::Named {
                id: 9,
                payload: b(b"6"),
            },
        };
        let (direct, via_value) = both_ways("/x", Some(3), Some("album"), &(album, 1));
        assert_eq!(direct.1, via_value.1);
        assert!(direct.0.starts_with(r#"55-/x,3["album",{"title":"t","files":[{"name":"f","data":{"_placeholder":true,"num":0}"#));
        assert_eq!(decode(direct), decode(via_value));
    }

    #[test]
    fn text_refuses_what_the_value_route_refuses() {
        let mut out = Vec::new();
        assert!(matches!(
            encode_text(&mut out, "/", None, Some("e"), &(1, i128::MAX)),
            Err(BinaryError::NumberOutOfRange)
        ));
        assert!(matches!(
            encode_text(&mut out, "/", None, Some("e"), &u128::MAX),
            Err(BinaryError::NumberOutOfRange)
        ));
        assert!(matches!(
            encode_text(&mut out, "/", Some(1), None, &HashMap::from([(vec![1], 1)])),
            Err(BinaryError::KeyMustBeAString)
        ));
        assert!(matches!(
            encode_text(
                &mut out,
                "/",
                None,
                Some("e"),
                &HashMap::from([(Key(f64::NAN), 1)])
            ),
            Err(BinaryError::FloatKeyMustBeFinite)
        ));
        struct Failing;
        impl Serialize for Failing {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("no"))
            }
        }
        assert!(matches!(
            encode_text(&mut out, "/", None, Some("e"), &Failing),
            Err(BinaryError::Message(m)) if m == "no"
        ));
    }
}
