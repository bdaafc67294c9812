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
//! The count also tells when tungstenite's read buffer may be replaced. tungstenite reserves room
//! for a whole frame in the buffer it reads into, and keeps that capacity for the life of the
//! connection: one large message would hold up to maxPayload per connection for good. So once a
//! message with an oversized frame ends, the reader hands tungstenite nothing past its end: when
//! tungstenite has handed that message over, it holds no byte of the client's, and the I/O loop
//! gives the socket a fresh WebSocket context (see `WsIo::fresh_codec_due`).

/// Fragments one message may have (`ws`'s default).
pub(crate) const MAX_FRAGMENTS: u32 = 128 * 1024;

/// A data frame longer than this grows tungstenite's read buffer past what an idle connection
/// should keep (it starts at 512 bytes).
pub(crate) const OVERSIZED_FRAME: u64 = 8 * 1024;

/// Why the read of a client's frames stopped; the connection is closed with 1008.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameLimit {
    #[error("more than {MAX_FRAGMENTS} fragments in one message")]
    TooManyFragments,
    #[error("WebSocket frame rate exceeded")]
    RateExceeded,
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
    /// A limit was passed: every read fails from then on, while the connection closes.
    failed: Option<FrameLimit>,
}

impl FrameCounter {
    /// Takes the next bytes the client sent, and returns how many of them it took: all of them,
    /// or fewer when a message with an oversized frame ends before their end (never none). The
    /// rest must be scanned again before anything reads it.
    pub(crate) fn scan(&mut self, data: &[u8]) -> Result<usize, FrameLimit> {
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        let mut at = 0;
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
            self.head[usize::from(self.have)] = data[at];
            self.have += 1;
            at += 1;
            if self.have < 2 {
                continue;
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

    /// Makes this and every later read fail.
    pub(crate) fn fail(&mut self, limit: FrameLimit) -> FrameLimit {
        self.failed = Some(limit);
        limit
    }

    /// Counts a data frame's fragments by its first header byte. What is out of order (a
    /// continuation with no message under way) is tungstenite's to refuse.
    fn frame(&mut self, first: u8, len: u64) -> Result<(), FrameLimit> {
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
            return Err(FrameLimit::TooManyFragments);
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
        // Continuations with no message under way are not counted (tungstenite refuses them).
        for _ in 0..MAX_FRAGMENTS + 1 {
            c.scan(&empty).unwrap();
        }
    }
}
