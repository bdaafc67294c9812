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

/// Fragments one message may have (`ws`'s default).
pub(crate) const MAX_FRAGMENTS: u32 = 128 * 1024;

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
    /// A limit was passed: every read fails from then on, while the connection closes.
    failed: Option<FrameLimit>,
}

impl FrameCounter {
    /// Takes the next bytes the client sent.
    pub(crate) fn scan(&mut self, mut data: &[u8]) -> Result<(), FrameLimit> {
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head[usize::from(self.have)] = data[0];
            self.have += 1;
            data = &data[1..];
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
            if let Err(limit) = self.frame(self.head[0]) {
                return Err(self.fail(limit));
            }
        }
        Ok(())
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
    fn frame(&mut self, first: u8) -> Result<(), FrameLimit> {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
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
            c.scan(std::slice::from_ref(b)).unwrap();
        }
        c.scan(&stream).unwrap();
        assert_eq!(c.fragments, 0);
        assert_eq!(c.skip, 0);
        // The fragments are counted, once: 4a, b, c, twice over.
        assert_eq!(c.take_fragments(), 6);
        assert_eq!(c.take_fragments(), 0);
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
