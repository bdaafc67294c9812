//! RESP2, as much of it as a node's connections need: commands out; replies and pushed
//! messages in. Pure: bytes in, frames out; no I/O.
//!
//! Every limit a reply can push on the read buffer is checked here, before the bytes are
//! waited for, so what Redis (or whatever answers in its place) sends cannot make a
//! connection's buffer grow past what its [`Limits`] allow.

use std::io::Write;

use thiserror::Error;

/// Arrays inside arrays: pub/sub traffic and the replies the node asks for are flat.
const MAX_DEPTH: usize = 2;

/// What one connection accepts in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one bulk string.
    pub max_bulk: usize,
    /// Elements of one array.
    pub max_elements: usize,
    /// Bytes of one whole frame: an array of many strings, each within `max_bulk`, must not
    /// add up to more than the reader is willing to hold.
    pub max_frame: usize,
}

impl Limits {
    /// A subscriber's: pushes have 3 elements (`message`, `subscribe`, ...) or 4 (`pmessage`);
    /// a few more leave room for the odd reply.
    pub fn subscriber(max_message_bytes: usize) -> Limits {
        Limits {
            max_bulk: max_message_bytes,
            max_elements: 16,
            // The payload, and room for the kind, the channel and the pattern.
            max_frame: max_message_bytes.saturating_add(1 << 20),
        }
    }

    /// The command connection's: integers, and lists of channels (one per node of the
    /// cluster).
    pub const COMMANDS: Limits = Limits {
        max_bulk: 1 << 20,
        max_elements: 1 << 16,
        max_frame: 16 << 20,
    };
}

/// Bytes a status or error line may have before its end is seen.
const MAX_LINE: usize = 64 * 1024;

/// One reply or push, borrowing its bytes from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `+OK`
    Simple(&'a [u8]),
    /// `-ERR ...`
    Error(&'a [u8]),
    /// `:3`
    Integer(i64),
    /// `$5\r\nhello`, or `$-1` (none).
    Bulk(Option<&'a [u8]>),
    /// `*3\r\n...`, or `*-1` (none).
    Array(Option<Vec<Frame<'a>>>),
}

/// Why the bytes from Redis cannot be read as RESP2 within the limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespError {
    /// The connection is not speaking RESP2 (or speaks RESP3, which this connection never asks
    /// for).
    #[error("unexpected reply type byte {0:#04x}")]
    UnknownType(u8),
    /// A length or integer that is not one.
    #[error("malformed length or integer")]
    BadNumber,
    /// A status or error line longer than 64 KiB, or a line not ended by CRLF.
    #[error("malformed or overlong line")]
    BadLine,
    /// More elements or deeper nesting than the connection takes.
    #[error("array too large or nested too deep")]
    TooComplex,
    /// A frame still incomplete after more bytes than the connection holds for one (the
    /// number given).
    #[error("frame over {0} bytes")]
    FrameTooLarge(usize),
    /// A bulk string over the caller's limit. When it is the last element of a top-level
    /// array, as a message's payload is, `frame_end` is where the whole frame ends in the
    /// stream (counted from the start of the buffer), so the reader can skip it and go on.
    #[error("bulk string of {len} bytes over the limit")]
    TooLarge {
        /// The string's announced length.
        len: usize,
        /// Where the frame holding it ends, when that is known.
        frame_end: Option<usize>,
    },
}

/// Reads one frame from the start of `buf`: the frame and the bytes it took, `None` if more
/// bytes are needed. Bulk strings and arrays over `limits` are refused before they arrive, and
/// a frame as soon as the bytes it has taken so far pass `limits.max_frame`.
pub fn parse(buf: &[u8], limits: Limits) -> Result<Option<(Frame<'_>, usize)>, RespError> {
    let mut pos = 0;
    match frame(buf, &mut pos, &limits, 0, true)? {
        Some(f) => Ok(Some((f, pos))),
        // Incomplete: everything in `buf` belongs to this one frame.
        None if buf.len() > limits.max_frame => Err(RespError::FrameTooLarge(limits.max_frame)),
        None => Ok(None),
    }
}

fn frame<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    limits: &Limits,
    depth: usize,
    last_in_top: bool,
) -> Result<Option<Frame<'a>>, RespError> {
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    let Some(line) = line(buf, *pos + 1)? else {
        return Ok(None);
    };
    let after_line = *pos + 1 + line.len() + 2;
    let frame = match kind {
        b'+' => Frame::Simple(line),
        b'-' => Frame::Error(line),
        b':' => Frame::Integer(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                *pos = after_line;
                return Ok(Some(Frame::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
            if len > limits.max_bulk {
                let frame_end = (depth == 1 && last_in_top).then(|| after_line + len + 2);
                return Err(RespError::TooLarge { len, frame_end });
            }
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BadLine);
            }
            *pos = end + 2;
            return Ok(Some(Frame::Bulk(Some(&buf[after_line..end]))));
        }
        b'*' => {
            let n = number(line)?;
            if n < 0 {
                *pos = after_line;
                return Ok(Some(Frame::Array(None)));
            }
            let n = usize::try_from(n).map_err(|_| RespError::BadNumber)?;
            if n > limits.max_elements || depth >= MAX_DEPTH {
                return Err(RespError::TooComplex);
            }
            let mut at = after_line;
            // The count is only announced: room for the elements that arrive, not for all it
            // claims.
            let mut items = Vec::with_capacity(n.min(64));
            for i in 0..n {
                let last = depth == 0 && i + 1 == n;
                match frame(buf, &mut at, limits, depth + 1, last)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *pos = at;
            return Ok(Some(Frame::Array(Some(items))));
        }
        other => return Err(RespError::UnknownType(other)),
    };
    *pos = after_line;
    Ok(Some(frame))
}

/// The line starting at `from`, without its CRLF; `None` while its end has not arrived.
fn line(buf: &[u8], from: usize) -> Result<Option<&[u8]>, RespError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        Some(cr) if cr > MAX_LINE => Err(RespError::BadLine),
        Some(cr) => match rest.get(cr + 1) {
            Some(b'\n') => Ok(Some(&rest[..cr])),
            Some(_) => Err(RespError::BadLine),
            None => Ok(None),
        },
        None if rest.len() > MAX_LINE => Err(RespError::BadLine),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::BadNumber)
}

/// Appends one command, as the array of bulk strings Redis expects.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// What a subscriber connection receives, read from a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// A message published to a channel it subscribed, directly or by `pattern`. A message
    /// that several patterns match comes once for each.
    Message {
        pattern: Option<&'a [u8]>,
        channel: &'a [u8],
        payload: &'a [u8],
    },
    /// A subscription (to a channel or a pattern) confirmed.
    Subscribed,
    /// The answer to a `PING`, in or out of subscribed mode.
    Pong,
    /// An error reply.
    Error(&'a [u8]),
    /// Anything else (an unsubscribe confirmation, ...).
    Other,
}

impl<'a> Push<'a> {
    pub fn of(frame: &Frame<'a>) -> Push<'a> {
        let items = match frame {
            Frame::Error(e) => return Push::Error(e),
            Frame::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => return Push::Pong,
            Frame::Array(Some(items)) => items,
            _ => return Push::Other,
        };
        let bulk = |i: usize| match items.get(i) {
            Some(Frame::Bulk(Some(b))) => Some(*b),
            _ => None,
        };
        let Some(kind) = bulk(0) else {
            return Push::Other;
        };
        match (kind, items.len()) {
            (b"message", 3) => match (bulk(1), bulk(2)) {
                (Some(channel), Some(payload)) => Push::Message {
                    pattern: None,
                    channel,
                    payload,
                },
                _ => Push::Other,
            },
            (b"pmessage", 4) => match (bulk(1), bulk(2), bulk(3)) {
                (Some(pattern), Some(channel), Some(payload)) => Push::Message {
                    pattern: Some(pattern),
                    channel,
                    payload,
                },
                _ => Push::Other,
            },
            (b"subscribe" | b"psubscribe", 3) => Push::Subscribed,
            (b"pong", 2) => Push::Pong,
            _ => Push::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: Limits = Limits {
        max_bulk: 1024,
        max_elements: 16,
        max_frame: 4096,
    };
    const TINY: Limits = Limits {
        max_bulk: 10,
        max_elements: 16,
        max_frame: 4096,
    };

    fn whole(bytes: &[u8]) -> Frame<'_> {
        let (frame, used) = parse(bytes, KIB).unwrap().expect("a whole frame");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn reads_every_reply_type() {
        assert_eq!(whole(b"+OK\r\n"), Frame::Simple(b"OK"));
        assert_eq!(whole(b"-ERR no\r\n"), Frame::Error(b"ERR no"));
        assert_eq!(whole(b":-12\r\n"), Frame::Integer(-12));
        assert_eq!(whole(b"$3\r\na\r\n\r\n"), Frame::Bulk(Some(b"a\r\n")));
        assert_eq!(whole(b"$0\r\n\r\n"), Frame::Bulk(Some(b"")));
        assert_eq!(whole(b"$-1\r\n"), Frame::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Frame::Array(None));
        assert_eq!(
            whole(b"*2\r\n$1\r\nx\r\n:1\r\n"),
            Frame::Array(Some(vec![Frame::Bulk(Some(b"x")), Frame::Integer(1)]))
        );
    }

    #[test]
    fn messages_and_confirmations_are_recognised() {
        let message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\x00\xff\x01\r\n";
        assert_eq!(
            Push::of(&whole(message)),
            Push::Message {
                pattern: None,
                channel: b"ch",
                payload: b"\x00\xff\x01"
            }
        );
        let pmessage = b"*4\r\n$8\r\npmessage\r\n$3\r\np#*\r\n$3\r\np#a\r\n$2\r\nhi\r\n";
        assert_eq!(
            Push::of(&whole(pmessage)),
            Push::Message {
                pattern: Some(b"p#*"),
                channel: b"p#a",
                payload: b"hi"
            }
        );
        let confirmed = b"*3\r\n$10\r\npsubscribe\r\n$3\r\np#*\r\n:1\r\n";
        assert_eq!(Push::of(&whole(confirmed)), Push::Subscribed);
        assert_eq!(
            Push::of(&whole(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")),
            Push::Pong
        );
        assert_eq!(Push::of(&whole(b"+PONG\r\n")), Push::Pong);
        assert_eq!(Push::of(&whole(b"-NOAUTH x\r\n")), Push::Error(b"NOAUTH x"));
        assert_eq!(Push::of(&whole(b":3\r\n")), Push::Other);
    }

    #[test]
    fn every_prefix_of_a_frame_waits_for_more() {
        let message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        for end in 0..message.len() {
            assert_eq!(
                parse(&message[..end], KIB),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
        // And what follows a frame is left for the next one.
        let mut two = message.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        let (_, used) = parse(&two, KIB).unwrap().unwrap();
        assert_eq!(used, message.len());
        assert_eq!(
            parse(&two[used..], KIB),
            Ok(Some((Frame::Simple(b"OK"), 5)))
        );
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_before_it_arrives_and_can_be_skipped() {
        let head = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2000\r\n";
        assert_eq!(
            parse(head, KIB),
            Err(RespError::TooLarge {
                len: 2000,
                frame_end: Some(head.len() + 2002)
            })
        );
        // Not the last element: where the frame ends is not known without reading the rest.
        let inner = b"*3\r\n$2000\r\n";
        assert_eq!(
            parse(inner, KIB),
            Err(RespError::TooLarge {
                len: 2000,
                frame_end: None
            })
        );
        assert!(matches!(
            parse(b"$2000\r\n", KIB),
            Err(RespError::TooLarge {
                frame_end: None,
                ..
            })
        ));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_wait() {
        assert_eq!(parse(b"%1\r\n", TINY), Err(RespError::UnknownType(b'%')));
        assert_eq!(parse(b":x\r\n", TINY), Err(RespError::BadNumber));
        assert_eq!(parse(b"$-7x\r\n", TINY), Err(RespError::BadNumber));
        assert_eq!(parse(b"+OK\rX", TINY), Err(RespError::BadLine));
        assert_eq!(parse(b"$2\r\nabXY", TINY), Err(RespError::BadLine));
        assert_eq!(parse(b"*17\r\n", TINY), Err(RespError::TooComplex));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n", TINY),
            Err(RespError::TooComplex)
        );
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 1]].concat();
        assert_eq!(parse(&long, TINY), Err(RespError::BadLine));
    }

    #[test]
    fn strings_each_within_the_limit_cannot_add_up_past_the_frame_limit() {
        // Eight strings of 1000 bytes: each within KIB's max_bulk, 8 KB over its max_frame.
        let mut frame = b"*8\r\n".to_vec();
        for _ in 0..8 {
            frame.extend_from_slice(b"$1000\r\n");
            frame.extend_from_slice(&[b'x'; 1000]);
            frame.extend_from_slice(b"\r\n");
        }
        // Refused once the bytes held pass 4096, without waiting for the rest.
        assert_eq!(parse(&frame[..4096], KIB), Ok(None));
        assert_eq!(
            parse(&frame[..4097], KIB),
            Err(RespError::FrameTooLarge(4096))
        );
        let roomy = Limits {
            max_frame: frame.len(),
            ..KIB
        };
        assert!(matches!(parse(&frame, roomy), Ok(Some((_, n))) if n == frame.len()));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", b"a#b", b""]);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$3\r\na#b\r\n$0\r\n\r\n");
    }
}
