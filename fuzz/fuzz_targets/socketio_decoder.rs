//! One Socket.IO decoder fed a sequence of text frames, binary frames and resets, with small
//! limits. The decoder must never panic, must track reassembly exactly (complete after the
//! declared count of attachments, in order; text while reassembling is an error that drops
//! the partial packet), and every packet it gives must re-encode and decode to itself.
#![no_main]

mod common;

use bytes::Bytes;
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use socketio_server::socketio::packet::DecoderLimits;

use common::Tracked;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A text frame as is.
    Text(String),
    /// A text frame assembled from the header fields, so binary packets and namespaces are
    /// reached often: `<kind><count>-<nsp>,<id><json>`.
    Header {
        kind: u8,
        count: Option<u8>,
        nsp: Option<String>,
        id: Option<u64>,
        json: String,
    },
    /// A binary frame.
    Binary(Vec<u8>),
    /// The connection drops any partial packet.
    Reset,
}

fn header(kind: u8, count: Option<u8>, nsp: Option<String>, id: Option<u64>, json: &str) -> String {
    let mut s = String::new();
    s.push(char::from(b'0' + kind % 8));
    if let Some(count) = count {
        s.push_str(&(count % 12).to_string());
        s.push('-');
    }
    if let Some(nsp) = nsp {
        s.push('/');
        s.push_str(&nsp);
        s.push(',');
    }
    if let Some(id) = id {
        s.push_str(&(id % (1 << 54)).to_string());
    }
    s.push_str(json);
    s
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(max_attachments), Ok(max_depth)) = (u.int_in_range(0..=4usize), u.int_in_range(0..=6usize))
    else {
        return;
    };
    let mut conn = Tracked::new(DecoderLimits {
        max_attachments,
        max_depth,
    });
    let mut n = 0;
    while !u.is_empty() && n < 128 {
        n += 1;
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Text(text) => {
                conn.text(&text);
            }
            Op::Header {
                kind,
                count,
                nsp,
                id,
                json,
            } => {
                conn.text(&header(kind, count, nsp, id, &json));
            }
            Op::Binary(data) => {
                conn.binary(Bytes::from(data));
            }
            Op::Reset => conn.reset(),
        }
    }
});
