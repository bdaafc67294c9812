//! The serde bridge for binary arguments: `from_value` into several target types on arbitrary
//! JSON and attachments. Whatever is accepted must serialise back (`to_value`) and read back
//! to the same value.
#![no_main]

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::Bytes;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketio_server::socketio::binary::{
    args_to_values, from_value, to_value, values_to_args,
};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Upload {
    name: String,
    data: Bytes,
    thumb: Option<Bytes>,
    parts: Vec<Bytes>,
    #[serde(with = "socketio_server::socketio::binary::as_bytes")]
    raw: Vec<u8>,
    size: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Nested {
    #[serde(default)]
    uploads: Vec<Upload>,
    meta: Option<BTreeMap<String, Bytes>>,
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    New(Bytes),
    Pair(u8, Bytes),
    Named { id: i64, body: Bytes },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Wrapper(Bytes);

#[derive(Arbitrary, Debug)]
struct Input {
    json: String,
    attachments: Vec<Vec<u8>>,
}

/// `from_value::<T>` for a `T` without `Value` inside; when it succeeds, `to_value` then `from_value` give an equal `T`.
fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(value: &Value, atts: &[Bytes]) {
    let Ok(first) = from_value::<T>(value.clone(), atts) else {
        return;
    };
    let mut out = Vec::new();
    let encoded = to_value(&first, &mut out)
        .unwrap_or_else(|e| panic!("{first:?} read from {value} does not serialise: {e}"));
    let again = from_value::<T>(encoded.clone(), &out)
        .unwrap_or_else(|e| panic!("{encoded} (from {first:?}) does not read back: {e}"));
    assert_eq!(first, again, "{value} -> {encoded}");
}

fuzz_target!(|input: Input| {
    let Ok(value) = serde_json::from_str::<Value>(&input.json) else {
        return;
    };
    let atts: Vec<Bytes> = input.attachments.into_iter().take(8).map(Bytes::from).collect();

    // A `Value` target keeps placeholders as they are; nothing else changes either.
    if let Ok(same) = from_value::<Value>(value.clone(), &atts) {
        assert_eq!(same, value);
    }
    let mut out = Vec::new();
    assert_eq!(to_value(&value, &mut out).ok().as_ref(), Some(&value));
    assert!(out.is_empty());

    // (No round trip for `Value` targets: they keep the client's placeholders, which refer
    // to the client's attachments, and `to_value` of a `Value` carries no attachments.)
    check::<Bytes>(&value, &atts);
    check::<Option<Bytes>>(&value, &atts);
    check::<Vec<Bytes>>(&value, &atts);
    check::<Upload>(&value, &atts);
    check::<Nested>(&value, &atts);
    check::<Shape>(&value, &atts);
    check::<Vec<Shape>>(&value, &atts);
    check::<Wrapper>(&value, &atts);
    check::<BTreeMap<String, Bytes>>(&value, &atts);
    check::<(String, Bytes, Option<u64>)>(&value, &atts);
    check::<(Bytes,)>(&value, &atts);
    check::<[u8; 4]>(&value, &atts);
    check::<Vec<u8>>(&value, &atts);
    check::<(i128, u128, f32, char, bool)>(&value, &atts);
    check::<()>(&value, &atts);

    // The event-argument convention on the same input.
    if let Value::Array(args) = value {
        if let Ok(typed) = values_to_args::<(String, Option<Bytes>, Option<Upload>)>(args.clone(), &atts) {
            let mut out = Vec::new();
            let values = args_to_values(&typed, &mut out).expect("args serialise");
            let again = values_to_args::<(String, Option<Bytes>, Option<Upload>)>(values, &out)
                .expect("args read back");
            assert_eq!(typed, again);
        }
        let _ = values_to_args::<Bytes>(args.clone(), &atts);
        let _ = values_to_args::<()>(args, &atts);
    }
});
