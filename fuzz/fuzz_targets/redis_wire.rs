//! The Redis adapter's messages from other nodes: broadcasts (MessagePack), requests and
//! answers (JSON or MessagePack), as anything that can publish to the cluster's channels
//! could send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketio_server::redis::wire::{
    decode_body, decode_broadcast, decode_message, encode_broadcast, encode_json, encode_msgpack,
};

/// A broadcast that reads at all is normalised by one encoding: encoding what that encoding
/// reads back gives the same bytes, and it reads back to the same broadcast.
fn check_broadcast(data: &[u8]) {
    let Ok(first) = decode_broadcast(data) else {
        return;
    };
    let encoded = encode_broadcast(&first.uid, &first.packet, &first.opts);
    let second = decode_broadcast(&encoded).expect("our own encoding of a broadcast reads back");
    assert_eq!(second.uid, first.uid);
    assert_eq!(second.opts, first.opts);
    assert_eq!(second.packet.nsp, first.packet.nsp);
    let again = encode_broadcast(&second.uid, &second.packet, &second.opts);
    assert_eq!(again, encoded, "encoding is not stable after one round");
    assert_eq!(decode_broadcast(&again).as_ref(), Ok(&second));
}

/// Requests and answers: the fields the node routes by survive our own encodings, in
/// MessagePack always and in JSON when there is no binary part.
fn check_message(data: &[u8]) {
    let Ok(first) = decode_message(data) else {
        return;
    };
    let packed = encode_msgpack(&first.body.value, &first.body.attachments);
    let second = decode_message(&packed).expect("our own MessagePack of a message reads back");
    assert_eq!(second.kind, first.kind);
    assert_eq!(second.uid, first.uid);
    assert_eq!(second.request_id, first.request_id);
    let repacked = encode_msgpack(&second.body.value, &second.body.attachments);
    assert_eq!(repacked, packed, "MessagePack encoding is not stable after one round");
    if first.body.attachments.is_empty() {
        let json = encode_json(&first.body.value);
        let from_json = decode_body(&json).expect("our own JSON of a message reads back");
        assert_eq!(from_json.value, first.body.value);
        assert!(from_json.attachments.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    check_broadcast(data);
    check_message(data);
    let _ = decode_body(data);
});
