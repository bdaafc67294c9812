//! Just enough of the Engine.IO v4 and Socket.IO v5 text encodings for a client of the main
//! namespace: classifying what arrives, and building what is sent.

/// An Engine.IO packet as received (text only: the benchmark programs send no binary).
#[derive(Debug, PartialEq)]
pub enum Eio<'a> {
    /// `0{...}`: the handshake JSON.
    Open(&'a str),
    /// `1`.
    Close,
    /// `2` (or `2probe`).
    Ping,
    /// `3` (or `3probe`).
    Pong(&'a str),
    /// `4...`: a Socket.IO packet.
    Message(&'a str),
    /// `6`.
    Noop,
    /// Anything else.
    Other,
}

/// Classifies one Engine.IO text packet.
pub fn eio(text: &str) -> Eio<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Eio::Open(&text[1..]),
        Some(b'1') => Eio::Close,
        Some(b'2') => Eio::Ping,
        Some(b'3') => Eio::Pong(&text[1..]),
        Some(b'4') => Eio::Message(&text[1..]),
        Some(b'6') => Eio::Noop,
        _ => Eio::Other,
    }
}

/// A Socket.IO packet of the main namespace as received.
#[derive(Debug, PartialEq)]
pub enum Sio<'a> {
    /// `0{...}`: the namespace accepted us.
    Connect,
    /// `4{...}`: the namespace refused us.
    ConnectError(&'a str),
    /// `1`: the server disconnected us from the namespace.
    Disconnect,
    /// `2["name", ...]`: an event; `rest` is the whole packet after the type.
    Event { name: &'a str, rest: &'a str },
    /// `3<id>[...]`: an acknowledgement of our event `id`; `rest` is the JSON array.
    Ack { id: u64, rest: &'a str },
    /// Anything else (binary packets, other namespaces).
    Other,
}

fn digits(b: &[u8]) -> (usize, u64) {
    let mut n = 0u64;
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() && i < 16 {
        n = n * 10 + u64::from(b[i] - b'0');
        i += 1;
    }
    (i, n)
}

/// Classifies one Socket.IO text packet (the text after the Engine.IO `4`).
pub fn sio(text: &str) -> Sio<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Sio::Connect,
        Some(b'1') => Sio::Disconnect,
        Some(b'4') => Sio::ConnectError(&text[1..]),
        Some(b'2') => {
            let (n, _) = digits(&b[1..]);
            let rest = &text[1 + n..];
            let Some(after) = rest.strip_prefix("[\"") else {
                return Sio::Other;
            };
            match after.find('"') {
                Some(end) => Sio::Event {
                    name: &after[..end],
                    rest,
                },
                None => Sio::Other,
            }
        }
        Some(b'3') => {
            let (n, id) = digits(&b[1..]);
            if n == 0 {
                return Sio::Other;
            }
            Sio::Ack {
                id,
                rest: &text[1 + n..],
            }
        }
        _ => Sio::Other,
    }
}

/// The ping interval of a handshake JSON, in milliseconds.
pub fn ping_interval_ms(open_json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(open_json).ok()?;
    v.get("pingInterval")?.as_u64()
}

/// The session id of a handshake JSON.
pub fn session_id(open_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(open_json).ok()?;
    Some(v.get("sid")?.as_str()?.to_owned())
}

/// `40` with an optional auth object: the CONNECT to the main namespace.
pub fn connect_packet(auth: Option<&serde_json::Value>) -> String {
    match auth {
        Some(a) => format!("40{a}"),
        None => "40".to_owned(),
    }
}

/// An EVENT of the main namespace, with an ack id when given; `args` is the JSON of the
/// arguments after the event name (empty for none), without the surrounding brackets.
pub fn event(name: &str, ack: Option<u64>, args: &str) -> String {
    let mut s = String::with_capacity(8 + name.len() + args.len());
    s.push_str("42");
    if let Some(id) = ack {
        s.push_str(&id.to_string());
    }
    s.push_str("[\"");
    s.push_str(name);
    s.push('"');
    if !args.is_empty() {
        s.push(',');
        s.push_str(args);
    }
    s.push(']');
    s
}

/// A payload string of exactly `size` bytes carrying a timestamp: `@<micros>@xxxx...`.
pub fn stamped_payload(micros: u64, size: usize) -> String {
    let mut s = format!("@{micros}@");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// The timestamp of a stamped payload anywhere in a packet's text.
pub fn stamp(text: &str) -> Option<u64> {
    let start = text.find('@')? + 1;
    let (n, v) = digits(&text.as_bytes()[start..]);
    (n > 0).then_some(v)
}

/// Whether an ack's arguments are a chat `login` success (`[{"user": ...}]`).
pub fn login_ok(ack_rest: &str) -> bool {
    ack_rest.starts_with("[{\"user\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(eio("2"), Eio::Ping);
        assert_eq!(eio("42[\"a\"]"), Eio::Message("2[\"a\"]"));
        assert_eq!(
            sio("2[\"msg\",\"@12@xx\"]"),
            Sio::Event {
                name: "msg",
                rest: "[\"msg\",\"@12@xx\"]"
            }
        );
        assert_eq!(
            sio("31[\"abc\"]"),
            Sio::Ack {
                id: 1,
                rest: "[\"abc\"]"
            }
        );
        assert_eq!(stamp("[\"msg\",\"@12@xx\"]"), Some(12));
        assert_eq!(event("ping", Some(7), ""), "427[\"ping\"]");
        assert_eq!(event("bcast", None, "\"r\",1"), "42[\"bcast\",\"r\",1]");
        assert_eq!(stamped_payload(5, 8), "@5@xxxxx");
        assert!(login_ok("[{\"user\":{\"id\":\"x\"}}]"));
    }
}
