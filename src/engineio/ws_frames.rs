//! The frames a client sends, counted from the raw bytes before tungstenite reads them.
//!
//! tungstenite hands over only whole messages, and joins fragments into one buffer: memory stays
//! within the message size, but a client that starts a message and then sends empty
//! continuation frames without end would never be seen by a limit on messages, and would cost
//! CPU for as long as it liked. So the fragments are counted here, as their headers arrive, and
//! charged to the WebSocket rate limit as they come (a whole message in one frame, as clients
//! send them, is charged when tungstenite hands it over); and the fragments of one message are
//! bounded as Node's `ws` bounds them (`maxFragments`), with 1008 beyond. Only frame headers are
//! looked at: payloads are skipped by their length.
//!
//! The headers are also checked as they arrive, for what RFC 6455 makes a failure of the
//! connection whatever the payload (reserved bits and opcodes, an unmasked frame, a long or
//! fragmented control frame, fragments out of order): tungstenite checks them only once the
//! whole frame is in, so a client that announced a megabyte-long ping was read, and its
//! payload buffered, before it was refused; and the bytes the client sent next (its heartbeats)
//! were taken for that payload meanwhile.
//!
//! The count also tells when tungstenite's read buffer may be replaced. tungstenite reserves room
//! for a whole frame in the buffer it reads into, and keeps that capacity for the life of the
//! connection: one large message would hold up to maxPayload per connection for good. So once a
//! message with an oversized frame ends, the reader hands tungstenite nothing past its end: when
//! tungstenite has handed that message over, it holds no byte of the client's, and the I/O loop
//! gives the socket a fresh WebSocket context (see `WsIo::fresh_codec_due`).

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Fragments one message may have (`ws`'s default).
pub(crate) const MAX_FRAGMENTS: u32 = 128 * 1024;

/// A data frame longer than this grows tungstenite's read buffer past what an idle connection
/// should keep (it starts at 512 bytes).
pub(crate) const OVERSIZED_FRAME: u64 = 8 * 1024;

/// Why the read of a client's frames stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("more than {MAX_FRAGMENTS} fragments in one message")]
    TooManyFragments,
    #[error("WebSocket frame rate exceeded")]
    RateExceeded,
    /// A header that RFC 6455 makes a failure of the connection.
    #[error("malformed frame: {0}")]
    Malformed(Violation),
}

/// What is wrong with a malformed header. A tag, not a string: every connection keeps room for
/// its read error, and a byte is what a tag costs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    #[error("reserved bits set")]
    ReservedBits,
    #[error("unmasked client frame")]
    Unmasked,
    #[error("reserved opcode")]
    ReservedOpcode,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame longer than 125 bytes")]
    LongControl,
    #[error("continuation with no message under way")]
    StrayContinuation,
    #[error("new message before the last one ended")]
    Interleaved,
}

impl FrameError {
    /// The close code that answers it: 1008 for a limit, 1002 for a broken rule.
    pub(crate) fn close_code(self) -> CloseCode {
        match self {
            FrameError::TooManyFragments | FrameError::RateExceeded => CloseCode::Policy,
            FrameError::Malformed(_) => CloseCode::Protocol,
        }
    }
}

/// Where the byte stream stands: inside a frame header, or inside a payload to skip.
#[derive(Debug, Default)]
pub(crate) struct FrameCounter {
    /// The header read so far: two bytes and the extended length (the mask key is skipped).
    head: [u8; 10],
    have: u8,
    /// Bytes of mask key and payload left in the current frame.
    skip: u64,
    /// Data frames of the message under way, 0 when none is.
    fragments: u32,
    /// Fragments (data frames that are not a whole message) whose header completed since
    /// [`take_fragments`](Self::take_fragments).
    new_fragments: u32,
    /// The current frame: whether it is a control frame, and whether it is a message's last.
    control: bool,
    fin: bool,
    /// A frame of the message under way is longer than [`OVERSIZED_FRAME`].
    oversized: bool,
    /// Messages (and control frames, which tungstenite hands over as messages) whose last byte
    /// has been scanned, modulo 2^32: it is only ever compared with the count of those handed
    /// over, which wraps alike.
    messages: u32,
    /// The count of [`messages`](Self::messages) at the end of the last message that had an
    /// oversized frame, where the scan stopped, once there was one (`renewing`). Not an
    /// `Option`: its tag would take as much again, and every connection keeps this.
    renew_at: u32,
    renewing: bool,
    /// A limit was passed or a header was malformed: every read fails from then on, while the
    /// connection closes.
    failed: Option<FrameError>,
}

impl FrameCounter {
    /// Takes the next bytes the client sent, and returns how many of them it took: all of them,
    /// or fewer when a message with an oversized frame ends before their end, or when a
    /// malformed header starts there (never none; the next scan then fails). The rest must be
    /// scanned again before anything reads it.
    pub(crate) fn scan(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        let mut at = 0;
        // Where the header being read starts in `data` (0 when it started in an earlier scan):
        // what comes before a malformed header is handed over, so the messages before it are.
        let mut head_at = 0;
        while at < data.len() {
            if self.skip > 0 {
                let rest = data.len() - at;
                let n = usize::try_from(self.skip).map_or(rest, |s| s.min(rest));
                self.skip -= n as u64;
                at += n;
                if self.skip == 0 && self.frame_ended() {
                    return Ok(at);
                }
                continue;
            }
            if self.have == 0 {
                head_at = at;
            }
            self.head[usize::from(self.have)] = data[at];
            self.have += 1;
            at += 1;
            if self.have < 2 {
                continue;
            }
            if self.have == 2
                && let Err(malformed) = self.check(self.head[0], self.head[1])
            {
                self.fail(malformed);
                return if head_at > 0 {
                    Ok(head_at)
                } else {
                    Err(malformed)
                };
            }
            let extended = match self.head[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            if usize::from(self.have) < 2 + extended {
                continue;
            }
            let len = match extended {
                2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                8 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or_default()),
                _ => u64::from(self.head[1] & 0x7f),
            };
            let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
            self.skip = len.saturating_add(mask);
            self.have = 0;
            if let Err(limit) = self.frame(self.head[0], len) {
                return Err(self.fail(limit));
            }
            if self.skip == 0 && self.frame_ended() {
                return Ok(at);
            }
        }
        Ok(at)
    }

    /// The last byte of the current frame was scanned: counts the message it ends, if any.
    /// Whether the scan stops here, at the end of a message with an oversized frame.
    fn frame_ended(&mut self) -> bool {
        if self.control {
            self.messages = self.messages.wrapping_add(1);
            return false;
        }
        if !self.fin {
            return false;
        }
        self.messages = self.messages.wrapping_add(1);
        if std::mem::take(&mut self.oversized) {
            self.renew_at = self.messages;
            self.renewing = true;
            return true;
        }
        false
    }

    /// Whether tungstenite, having handed over `received` messages (control frames included),
    /// holds none of the client's bytes, and its read buffer grew for an oversized frame.
    pub(crate) fn renew_due(&self, received: u32) -> bool {
        self.renewing && self.renew_at == received
    }

    /// Bytes of the current frame (its mask key and payload) still to come; 0 between frames.
    pub(crate) fn frame_left(&self) -> u64 {
        self.skip
    }

    /// The fragments counted since the last call.
    pub(crate) fn take_fragments(&mut self) -> u32 {
        std::mem::take(&mut self.new_fragments)
    }

    /// Makes this and every later read fail; with the first reason given, which decides the
    /// close code (a malformed header found in a read that also passed the rate stays 1002).
    pub(crate) fn fail(&mut self, error: FrameError) -> FrameError {
        *self.failed.get_or_insert(error)
    }

    /// Checks a frame's first two header bytes against the rules of RFC 6455 that hold
    /// whatever follows (sections 5.1 to 5.5): no extension was agreed, so no reserved bit
    /// may be set; clients mask; control frames are whole and at most 125 bytes; a
    /// continuation continues a message, and a new message waits for the last one's end.
    fn check(&self, first: u8, second: u8) -> Result<(), FrameError> {
        let opcode = first & 0x0f;
        let malformed = if first & 0x70 != 0 {
            Violation::ReservedBits
        } else if second & 0x80 == 0 {
            Violation::Unmasked
        } else if matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
            Violation::ReservedOpcode
        } else if opcode >= 0x8 && first & 0x80 == 0 {
            Violation::FragmentedControl
        } else if opcode >= 0x8 && second & 0x7f > 125 {
            Violation::LongControl
        } else if opcode == 0x0 && self.fragments == 0 {
            Violation::StrayContinuation
        } else if opcode != 0x0 && opcode < 0x8 && self.fragments > 0 {
            Violation::Interleaved
        } else {
            return Ok(());
        };
        Err(FrameError::Malformed(malformed))
    }

    /// Counts a data frame's fragments by its first header byte (checked already).
    fn frame(&mut self, first: u8, len: u64) -> Result<(), FrameError> {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        self.fin = fin;
        self.control = opcode >= 0x8;
        if !self.control && len > OVERSIZED_FRAME {
            self.oversized = true;
        }
        match opcode {
            // Control frames may come between fragments and are not fragments.
            0x8..=0xf => return Ok(()),
            0x0 if self.fragments > 0 => self.fragments += 1,
            0x0 => {}
            _ => self.fragments = 1,
        }
        if !fin || opcode == 0x0 {
            self.new_fragments = self.new_fragments.saturating_add(1);
        }
        if self.fragments > MAX_FRAGMENTS {
            return Err(FrameError::TooManyFragments);
        }
        if fin {
            self.fragments = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (mask key zero) with `payload`.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    /// Scans all of `data` as the reader does: what a stop left is scanned next. Returns where
    /// the scans stopped short.
    fn scan_all(c: &mut FrameCounter, mut data: &[u8]) -> Vec<usize> {
        let (mut stops, mut at) = (Vec::new(), 0);
        while !data.is_empty() {
            let n = c.scan(data).unwrap();
            assert!(n > 0, "a scan takes something");
            at += n;
            data = &data[n..];
            if !data.is_empty() {
                stops.push(at);
            }
        }
        stops
    }

    #[test]
    fn whole_messages_and_a_few_fragments_pass() {
        let mut c = FrameCounter::default();
        let mut stream = frame(0x81, b"4hello");
        stream.extend(frame(0x82, &[0; 200]));
        stream.extend(frame(0x82, &vec![1; 70_000]));
        stream.extend(frame(0x01, b"4a"));
        stream.extend(frame(0x89, b"ping between fragments"));
        stream.extend(frame(0x00, b"b"));
        stream.extend(frame(0x80, b"c"));
        // Byte by byte, as a slow client's TCP segments would bring it, and all at once.
        for b in &stream {
            assert_eq!(c.scan(std::slice::from_ref(b)), Ok(1));
        }
        scan_all(&mut c, &stream);
        assert_eq!(c.fragments, 0);
        assert_eq!(c.skip, 0);
        // The fragments are counted, once: 4a, b, c, twice over.
        assert_eq!(c.take_fragments(), 6);
        assert_eq!(c.take_fragments(), 0);
    }

    #[test]
    fn the_scan_stops_where_a_message_with_an_oversized_frame_ends() {
        let small = frame(0x81, b"4hello");
        let big = frame(0x82, &vec![7; OVERSIZED_FRAME as usize + 1]);
        let mut stream = small.clone();
        stream.extend(&big);
        stream.extend(&small);
        // In fragments, a ping between them; the stop is at the last fragment's end.
        let first = frame(0x01, &vec![b'a'; OVERSIZED_FRAME as usize + 1]);
        let ping = frame(0x89, b"");
        let last = frame(0x80, b"z");
        stream.extend(&first);
        stream.extend(&ping);
        stream.extend(&last);
        stream.extend(&small);
        let end_of_big = small.len() + big.len();
        let end_of_fragmented = end_of_big + small.len() + first.len() + ping.len() + last.len();

        let mut c = FrameCounter::default();
        assert_eq!(scan_all(&mut c, &stream), [end_of_big, end_of_fragmented]);
        // Six messages in all (the ping is one to tungstenite); the last stop was after the
        // fifth, and nothing oversized came since.
        assert_eq!(c.messages, 6);
        assert!(c.renew_due(5));
        assert!(!c.renew_due(6));
        // Byte by byte, the same stops.
        let mut c = FrameCounter::default();
        let mut stops = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(c.scan(std::slice::from_ref(b)), Ok(1));
            if c.renew_due(c.messages) && stops.last() != Some(&c.renew_at) {
                stops.push(c.messages);
                assert!(i + 1 == end_of_big || i + 1 == end_of_fragmented, "{i}");
            }
        }
        assert_eq!(stops, [2, 5]);
        // A frame at the size is not oversized.
        let mut c = FrameCounter::default();
        let mut at_size = frame(0x82, &vec![0; OVERSIZED_FRAME as usize]);
        at_size.extend(&small);
        assert!(scan_all(&mut c, &at_size).is_empty());
        assert!(!c.renewing);
    }

    #[test]
    fn endless_empty_continuations_are_cut_off() {
        let mut c = FrameCounter::default();
        c.scan(&frame(0x01, b"4")).unwrap();
        let empty = frame(0x00, b"");
        for _ in 1..MAX_FRAGMENTS {
            c.scan(&empty).unwrap();
        }
        assert!(c.scan(&empty).is_err());
        assert!(c.scan(&frame(0x81, b"4")).is_err(), "and every read after");
        // A last fragment past the bound is refused too.
        let mut c = FrameCounter::default();
        c.scan(&frame(0x01, b"4")).unwrap();
        for _ in 1..MAX_FRAGMENTS {
            c.scan(&empty).unwrap();
        }
        assert!(c.scan(&frame(0x80, b"")).is_err());
    }

    #[test]
    fn the_count_starts_again_with_each_message() {
        let mut c = FrameCounter::default();
        let empty = frame(0x00, b"");
        for _ in 0..3 {
            c.scan(&frame(0x01, b"4")).unwrap();
            for _ in 0..MAX_FRAGMENTS - 2 {
                c.scan(&empty).unwrap();
            }
            c.scan(&frame(0x80, b"")).unwrap();
        }
        assert_eq!(c.fragments, 0);
    }

    /// Fails the way the scan of `stream` must, having first handed over `before` bytes.
    fn refused(stream: &[u8], before: usize, why: Violation) {
        let mut c = FrameCounter::default();
        let malformed = Err(FrameError::Malformed(why));
        if before > 0 {
            assert_eq!(c.scan(stream), Ok(before), "{why}");
            assert_eq!(c.scan(&stream[before..]), malformed, "{why}");
        } else {
            assert_eq!(c.scan(stream), malformed, "{why}");
        }
        assert_eq!(
            c.scan(&frame(0x81, b"4")),
            malformed,
            "and every read after"
        );
        // Byte by byte, it fails at the header's second byte.
        let mut c = FrameCounter::default();
        let failed_at = stream
            .iter()
            .position(|b| c.scan(std::slice::from_ref(b)).is_err());
        assert_eq!(failed_at, Some(before + 1), "{why}");
    }

    #[test]
    fn headers_that_break_the_rules_fail_before_their_payload() {
        let whole = frame(0x81, b"4hello");
        // A header alone, its payload never sent: a megabyte-long ping, say.
        let header = |first: u8, second: u8| vec![first, second, 0x0f, 0x42, 0x40];
        let cases: [(Vec<u8>, Violation); 9] = [
            (header(0xc1, 0xfe), Violation::ReservedBits),
            (header(0x91, 0xfe), Violation::ReservedBits),
            (header(0x81, 0x7e), Violation::Unmasked),
            (header(0x83, 0xfe), Violation::ReservedOpcode),
            (header(0x8b, 0xfe), Violation::ReservedOpcode),
            (header(0x09, 0x80), Violation::FragmentedControl),
            (header(0x89, 0xfe), Violation::LongControl),
            (header(0x80, 0xfe), Violation::StrayContinuation),
            (header(0x88, 0xff), Violation::LongControl),
        ];
        for (bad, why) in &cases {
            refused(bad, 0, *why);
            // The messages before it are handed over first.
            let mut stream = whole.clone();
            stream.extend(bad);
            refused(&stream, whole.len(), *why);
        }
        // A new message in the middle of a fragmented one.
        let mut stream = frame(0x01, b"4a");
        let started = stream.len();
        stream.extend(frame(0x81, b"4b"));
        refused(&stream, started, Violation::Interleaved);
        // A limit passed in the same read does not change what the connection is closed for.
        let mut c = FrameCounter::default();
        let mut stream = whole.clone();
        stream.extend(header(0xc1, 0xfe));
        assert_eq!(c.scan(&stream), Ok(whole.len()));
        let malformed = FrameError::Malformed(Violation::ReservedBits);
        assert_eq!(c.fail(FrameError::RateExceeded), malformed);
        assert_eq!(c.scan(&stream[whole.len()..]), Err(malformed));
        // A control frame of 125 bytes between fragments is fine.
        let mut c = FrameCounter::default();
        let mut stream = frame(0x01, b"4a");
        stream.extend(frame(0x89, &[0; 125]));
        stream.extend(frame(0x80, b"b"));
        assert_eq!(c.scan(&stream), Ok(stream.len()));
    }
}
