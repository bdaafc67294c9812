//! The byte stream under a WebSocket: the upgraded connection, freed of the HTTP layer's buffers,
//! and the writing of the session's own frames in batches.
//!
//! Four costs are avoided here. After the upgrade hyper hands over the bytes it read past the
//! request as a view into its 8 KiB read buffer, which would keep that whole buffer alive for the
//! life of the connection: they are copied out instead. Writing every frame with a system call of
//! its own made a broadcast cost one `sendto` per recipient and message: the frames of one wake-up
//! are gathered and written together. And tungstenite's write buffer keeps the capacity of the
//! largest frame it ever wrote: the session's frames are encoded here instead, into a buffer
//! that is given back as soon as it is written, so an idle connection holds none. tungstenite
//! still writes its control frames (pongs, close frames); they pass through, after whatever was
//! gathered before them, and one it could not finish is finished before anything more is
//! gathered (see [`WsIo::control_pending`]), so the byte stream stays in order. On connections accepted by
//! [`crate::server::serve`] the `101` response head is still unwritten when the connection
//! arrives here: it is the start of the first batch, so that it leaves with the first frame.
//! Last, tungstenite reads in pieces the size of its read buffer, which is small so that idle
//! connections stay small: a read from the socket takes several pieces' worth at once, on the
//! stack (see [`WsIo::read_socket`]), and inside a long frame the rest of it is read ahead at
//! once (see [`WsIo::read_ahead`]).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::base64;
use super::packet::Frame;
use super::ws_frames::{FrameCounter, FrameError};
use crate::rate_limit::TokenBucket;
use crate::server::Conn;

/// Gathered bytes beyond which they are written before more are gathered: a few hundred small
/// frames per system call, while a connection with a long backlog stays cheap.
pub(crate) const BATCH_LIMIT: usize = 64 * 1024;

/// The most read at once ahead of tungstenite inside a long frame (see [`WsIo::read_ahead`]).
const READ_AHEAD_MAX: usize = 64 * 1024;

/// The most one read from the socket takes when tungstenite asks for less (see
/// [`WsIo::read_socket`]).
const READ_CHUNK: usize = 8 * 1024;

/// What [`WsIo::finish`] reads at a time.
const FINISH_CHUNK: usize = 4 * 1024;

/// The first allocation of a batch. Most batches are one or a few small frames: an allocation
/// this small comes from the allocator's per-thread cache, and the buffer grows for more.
const FIRST_BATCH_CAPACITY: usize = 512;

/// The connection itself.
enum Inner {
    /// A connection accepted by [`crate::server::serve`] (or any hyper server over tokio's
    /// `TcpStream`): hyper's wrappers are peeled off.
    Tcp(TcpStream),
    /// Any other I/O an embedder's hyper server used; boxed, as it is twice the size of a
    /// `TcpStream` and every connection would pay for it.
    Other(Box<TokioIo<Upgraded>>),
    /// What is left behind when the connection moves to a fresh WebSocket context.
    Moved,
}

/// Bytes read from the socket before the reader wanted them: what the client sent after its
/// upgrade request and hyper had read already, or what followed a message with an oversized
/// frame (see [`FrameCounter::scan`]).
struct Prefix {
    bytes: Box<[u8]>,
    pos: usize,
}

impl Prefix {
    fn of(bytes: &[u8]) -> Option<Box<Prefix>> {
        Prefix::owning(Box::from(bytes))
    }

    fn owning(bytes: Box<[u8]>) -> Option<Box<Prefix>> {
        (!bytes.is_empty()).then(|| Box::new(Prefix { bytes, pos: 0 }))
    }

    /// The bytes of one read of which the first `handed` went to the reader already: kept
    /// whole, so that the reader can give some back (see [`WsIo::poll_read`]).
    fn after(bytes: &[u8], handed: usize) -> Option<Box<Prefix>> {
        (handed < bytes.len()).then(|| {
            Box::new(Prefix {
                bytes: Box::from(bytes),
                pos: handed,
            })
        })
    }
}

fn moved() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

/// An upgraded connection, as the WebSocket layer reads and writes it.
pub(crate) struct WsIo {
    inner: Inner,
    /// What the reader gets before anything more from the socket. Boxed: it is rare, and every
    /// connection keeps the field.
    prefix: Option<Box<Prefix>>,
    /// Gathered frames; `out[out_pos..]` are still to be written.
    out: Vec<u8>,
    out_pos: usize,
    /// tungstenite's last write or flush did not complete: it holds bytes (a pong, a close
    /// frame) that only its own flush writes.
    control_pending: bool,
    /// The client's fragments, counted as their bytes come in, and the rate its messages and
    /// fragments may come at.
    frames: FrameCounter,
    rate: TokenBucket,
    /// Messages tungstenite has handed over (control frames included), modulo 2^32.
    received: u32,
    /// The client asked for binary messages as base64 text (`b64` in its query: engine.io-client's
    /// `forceBase64`, for clients that cannot take binary frames).
    binary_as_text: bool,
}

impl WsIo {
    /// Takes the connection out of hyper's hands; its client is held to `rate` (its messages,
    /// and its fragments as they are read), and gets binary messages as base64 text when it
    /// asked for that.
    pub(crate) fn new(upgraded: Upgraded, rate: TokenBucket, binary_as_text: bool) -> WsIo {
        // Copies of `read_buf`: it is a view into hyper's whole read buffer.
        let (inner, prefix, out) = match upgraded.downcast::<TokioIo<Conn>>() {
            Ok(parts) => {
                let (stream, held) = parts.io.into_inner().into_parts();
                (Inner::Tcp(stream), Prefix::of(&parts.read_buf), held)
            }
            Err(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => (
                    Inner::Tcp(parts.io.into_inner()),
                    Prefix::of(&parts.read_buf),
                    Vec::new(),
                ),
                Err(upgraded) => (
                    Inner::Other(Box::new(TokioIo::new(upgraded))),
                    None,
                    Vec::new(),
                ),
            },
        };
        WsIo::from_parts(inner, prefix, out, rate, binary_as_text)
    }

    /// A connection straight from a socket, for tests of what is written on it.
    #[cfg(test)]
    pub(crate) fn from_tcp(stream: TcpStream) -> WsIo {
        let rate = TokenBucket::new(u32::MAX, f64::MAX);
        WsIo::from_parts(Inner::Tcp(stream), None, Vec::new(), rate, false)
    }

    fn from_parts(
        inner: Inner,
        prefix: Option<Box<Prefix>>,
        out: Vec<u8>,
        rate: TokenBucket,
        binary_as_text: bool,
    ) -> WsIo {
        WsIo {
            inner,
            prefix,
            out,
            out_pos: 0,
            control_pending: false,
            frames: FrameCounter::default(),
            rate,
            received: 0,
            binary_as_text,
        }
    }

    /// Charges one message (or control frame) that tungstenite handed over to the client's
    /// rate; `false` once it is over. Fragments were charged as they were read. Called for
    /// every message, it is also the count of them.
    pub(crate) fn take_token(&mut self) -> bool {
        self.received = self.received.wrapping_add(1);
        self.rate.try_take()
    }

    /// Whether the message just handed over ended where reading stopped after an oversized frame
    /// (see `ws_frames`): tungstenite holds nothing of the client's, and its read buffer has
    /// grown. Its context can then be replaced with a fresh one over [`take`](Self::take).
    pub(crate) fn fresh_codec_due(&self) -> bool {
        self.frames.renew_due(self.received)
    }

    /// The connection with all its state, for a fresh WebSocket context; what is left fails
    /// every read and write.
    pub(crate) fn take(&mut self) -> WsIo {
        let rate = TokenBucket::new(0, 0.0);
        let left = WsIo::from_parts(Inner::Moved, None, Vec::new(), rate, false);
        std::mem::replace(self, left)
    }

    /// Whether tungstenite may hold bytes of its own that it could not write yet (its writes
    /// come after the batch, so the batch is empty then): they go out, through its flush, before
    /// anything more is gathered.
    pub(crate) fn control_pending(&self) -> bool {
        self.control_pending
    }

    /// Ready when a read could make progress: bytes from before the upgrade wait, or the socket
    /// is readable (or it is not a socket this can ask). Otherwise the task is woken once it is.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // A read writes out what is gathered first (the held `101`, say).
        if self.prefix.is_some() || self.gathered() > 0 {
            return Poll::Ready(());
        }
        match &self.inner {
            // An error is the reader's to find.
            Inner::Tcp(s) => s.poll_read_ready(cx).map(|_| ()),
            Inner::Other(_) | Inner::Moved => Poll::Ready(()),
        }
    }

    /// Ends our side of the connection, then reads and drops what the peer still sends: a
    /// socket closed with bytes unread is reset by the kernel, and a reset can cost the peer
    /// the close frame it has not read yet. After a failure (the rest of an oversized message
    /// may still be on its way) until the peer closes its side or the caller's deadline
    /// passes; after a close handshake, only what has already arrived.
    pub(crate) async fn finish(&mut self, until_end: bool) {
        if tokio::io::AsyncWriteExt::shutdown(self).await.is_err() {
            return;
        }
        self.prefix = None;
        let mut chunk = Vec::new();
        loop {
            // Through `&mut`: a shared borrow held across an await would need `WsIo: Sync`.
            let this = &mut *self;
            let ready = std::future::poll_fn(move |cx| this.poll_read_ready(cx));
            if until_end {
                ready.await;
            } else if ready.now_or_never().is_none() {
                return;
            }
            // On the heap, and only once there is something to read: a peer that lingers
            // costs no buffer while it waits.
            chunk.resize(FINISH_CHUNK, 0);
            let mut buf = ReadBuf::new(&mut chunk);
            let read = std::future::poll_fn(|cx| poll_read_from(&mut self.inner, cx, &mut buf));
            let read = if until_end {
                Some(read.await)
            } else {
                read.now_or_never()
            };
            if !matches!(read, Some(Ok(()))) || buf.filled().is_empty() {
                return;
            }
        }
    }

    /// Bytes gathered and not written yet.
    pub(crate) fn gathered(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Makes room for about `bytes` more of payload, so that a large batch is not copied as its
    /// buffer grows.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        // Frame headers take 2 to 14 bytes each; a few spare bytes cover the usual ones.
        self.out
            .reserve((bytes + bytes / 16).max(FIRST_BATCH_CAPACITY));
    }

    /// Adds a frame to the batch.
    pub(crate) fn gather(&mut self, frame: &Frame) {
        encode(frame, self.binary_as_text, &mut self.out);
    }

    /// Writes out everything gathered, then lets the buffer go.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            match ready!(poll_write_to(
                &mut self.inner,
                cx,
                &self.out[self.out_pos..]
            )) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_pos += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

/// Encodes a frame as tungstenite would (final, unmasked, no extensions), at the end of `out`;
/// a binary one as the text `b` and base64 when `binary_as_text`.
fn encode(frame: &Frame, binary_as_text: bool, out: &mut Vec<u8>) {
    let (data, payload, as_base64) = match frame {
        Frame::Text(t) => (Data::Text, t.as_bytes(), false),
        Frame::Binary(b) if binary_as_text => (Data::Text, &b[..], true),
        Frame::Binary(b) => (Data::Binary, &b[..], false),
    };
    let payload_len = match as_base64 {
        true => 1 + base64::encoded_len(payload.len()),
        false => payload.len(),
    };
    let header = FrameHeader {
        opcode: OpCode::Data(data),
        ..FrameHeader::default()
    };
    let len = payload_len as u64;
    let size = header.len(len) + payload_len;
    if out.capacity() == 0 {
        out.reserve(FIRST_BATCH_CAPACITY.max(size));
    } else {
        out.reserve(size);
    }
    // Writing into a Vec cannot fail.
    let _ = header.format(len, out);
    if as_base64 {
        out.push(b'b');
        base64::encode_into(payload, out);
    } else {
        out.extend_from_slice(payload);
    }
}

fn poll_write_to(inner: &mut Inner, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    match inner {
        Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        Inner::Other(s) => Pin::new(&mut **s).poll_write(cx, buf),
        Inner::Moved => Poll::Ready(Err(moved())),
    }
}

impl WsIo {
    /// tungstenite reads in pieces of its read buffer's size, which is small so that an idle
    /// connection keeps little: a 1 MB message took 2,000 system calls. Inside a frame with more
    /// to come than a piece, the rest of it (up to [`READ_AHEAD_MAX`]) is read at once and
    /// handed over from memory, where it is let go as soon as it is all handed over.
    fn read_ahead(&mut self, cx: &mut Context<'_>, piece: usize) -> Poll<io::Result<()>> {
        let left = self.frames.frame_left();
        let Inner::Tcp(stream) = &self.inner else {
            return Poll::Ready(Ok(()));
        };
        if self.prefix.is_some() || piece == 0 || left <= piece as u64 {
            return Poll::Ready(Ok(()));
        }
        let want = usize::try_from(left).map_or(READ_AHEAD_MAX, |l| l.min(READ_AHEAD_MAX));
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let mut bytes = Vec::with_capacity(want);
            match stream.try_read_buf(&mut bytes) {
                Ok(_) => {
                    // Nothing read is the end of the stream: the reader finds it in its turn.
                    self.prefix = Prefix::owning(bytes.into_boxed_slice());
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads from the connection into `buf`. tungstenite asks for its read buffer's worth at a
    /// time (512 bytes), while a client's messages often come several together: a binary
    /// message's attachments, a burst of events. Read in such pieces they cost a system call
    /// each (about nine per event with ten small attachments); so up to [`READ_CHUNK`] is read
    /// at once, on the stack, and what does not fit in `buf` is handed over from memory next.
    fn read_socket(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() >= READ_CHUNK {
            return poll_read_from(&mut self.inner, cx, buf);
        }
        let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        ready!(poll_read_from(&mut self.inner, cx, &mut chunk))?;
        let got = chunk.filled();
        let handed = got.len().min(buf.remaining());
        buf.put_slice(&got[..handed]);
        self.prefix = Prefix::after(got, handed);
        Poll::Ready(Ok(()))
    }
}

fn poll_read_from(
    inner: &mut Inner,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    match inner {
        Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        Inner::Other(s) => Pin::new(&mut **s).poll_read(cx, buf),
        Inner::Moved => Poll::Ready(Err(moved())),
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The peer may be waiting for what is gathered (the `101` ahead of a probe, say)
        // before it sends anything.
        ready!(this.poll_write_out(cx))?;
        ready!(this.read_ahead(cx, buf.remaining()))?;
        let before = buf.filled().len();
        if let Some(prefix) = &mut this.prefix {
            let rest = &prefix.bytes[prefix.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            prefix.pos += n;
        } else {
            ready!(this.read_socket(cx, buf))?;
        }
        let read = &buf.filled()[before..];
        let mut counted = this.frames.scan(read);
        if let Ok(taken) = counted
            && taken < read.len()
        {
            // What follows the end of a message with an oversized frame waits for the next
            // read, where it is scanned again.
            match &mut this.prefix {
                Some(prefix) => prefix.pos -= read.len() - taken,
                None => this.prefix = Prefix::of(&read[taken..]),
            }
            buf.set_filled(before + taken);
        }
        if this.prefix.as_ref().is_some_and(|p| p.pos == p.bytes.len()) {
            this.prefix = None;
        }
        let fragments = this.frames.take_fragments();
        if counted.is_ok() && fragments > 0 && !this.rate.try_take_n(fragments) {
            counted = Err(this.frames.fail(FrameError::RateExceeded));
        }
        Poll::Ready(counted.map(|_| ()).map_err(io::Error::other))
    }
}

/// tungstenite's own writes (control frames): straight to the socket, after the batch.
impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => poll_write_to(&mut this.inner, cx, buf),
            other => other.map(|r| r.map(|()| 0)),
        };
        this.control_pending |= written.is_pending();
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => match &mut this.inner {
                Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
                Inner::Other(s) => Pin::new(&mut **s).poll_flush(cx),
                Inner::Moved => Poll::Ready(Err(moved())),
            },
            other => other,
        };
        // tungstenite flushes only after writing out all it holds.
        this.control_pending = flushed.is_pending();
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Other(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Inner::Moved => Poll::Ready(Err(moved())),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio_tungstenite::tungstenite::Utf8Bytes;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;

    fn as_tungstenite_writes_it(frame: &Frame) -> Vec<u8> {
        let ws = match frame.clone() {
            Frame::Text(t) => WsFrame::message(t, OpCode::Data(Data::Text), true),
            Frame::Binary(b) => WsFrame::message(b, OpCode::Data(Data::Binary), true),
        };
        let mut out = Vec::new();
        ws.format(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_are_encoded_as_tungstenite_encodes_them() {
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        // Every length encoding (7, 16 and 64 bits) and its edges.
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            for frame in [
                Frame::Text(Utf8Bytes::from(text.clone())),
                Frame::Binary(Bytes::from(text.into_bytes())),
            ] {
                let mut one = Vec::new();
                encode(&frame, false, &mut one);
                assert_eq!(one, as_tungstenite_writes_it(&frame), "length {len}");
                encode(&frame, false, &mut batch);
                expected.extend_from_slice(&one);
            }
        }
        assert_eq!(batch, expected);
    }

    #[test]
    fn binary_goes_as_base64_text_to_a_client_that_asked_for_it() {
        let mut out = Vec::new();
        encode(
            &Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            true,
            &mut out,
        );
        encode(&Frame::Text(Utf8Bytes::from_static("4x")), true, &mut out);
        let mut expected =
            as_tungstenite_writes_it(&Frame::Text(Utf8Bytes::from_static("bAQIDBA==")));
        expected.extend(as_tungstenite_writes_it(&Frame::Text(
            Utf8Bytes::from_static("4x"),
        )));
        assert_eq!(out, expected);
        // Long enough for a 16-bit length.
        let big = Bytes::from(vec![0xff; 300]);
        let mut out = Vec::new();
        encode(&Frame::Binary(big.clone()), true, &mut out);
        let text = format!("b{}", "/".repeat(400));
        assert_eq!(
            out,
            as_tungstenite_writes_it(&Frame::Text(Utf8Bytes::from(text)))
        );
    }

    /// A loopback pair with small socket buffers, so that writes stop part way: the server's
    /// side, and the client's socket.
    pub(crate) async fn small_buffered_pair() -> (WsIo, TcpStream) {
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_send_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(8).unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (WsIo::from_tcp(server), client)
    }

    /// After a close handshake nothing waits for a client that keeps its side open; after a
    /// failure what it still sends is read until it closes, so that the socket ends without a
    /// reset. Either way the client sees the end of our side at once.
    #[tokio::test]
    async fn finish_reads_on_only_after_a_failure() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut io, mut client) = small_buffered_pair().await;
        client.write_all(b"already here").await.unwrap();
        while io
            .poll_read_ready(&mut Context::from_waker(std::task::Waker::noop()))
            .is_pending()
        {
            tokio::task::yield_now().await;
        }
        assert!(
            io.finish(false).now_or_never().is_some(),
            "a handshake's end does not wait"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());

        let (mut io, mut client) = small_buffered_pair().await;
        let mut finishing = Box::pin(io.finish(true));
        assert!(
            (&mut finishing).now_or_never().is_none(),
            "a failure waits for the client"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        let sent = vec![7u8; 200_000];
        let sending = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // Then the client closes its side.
        });
        finishing.await;
        sending.await.unwrap();
    }

    /// Frames of many sizes, every length encoding among them.
    fn mixed_frames(seed: usize) -> Vec<Frame> {
        (0..200)
            .map(|i| {
                let len = match (i * 7 + seed) % 6 {
                    0 => 0,
                    1 => 100 + i,
                    2 => 1023,
                    3 => 1024,
                    4 => 3000 + i * 13,
                    _ => 70_000,
                };
                let bytes: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
                if i % 2 == 0 {
                    Frame::Text(Utf8Bytes::try_from(bytes).unwrap())
                } else {
                    Frame::Binary(Bytes::from(bytes))
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_goes_out_byte_for_byte_whatever_the_writes_take() {
        use futures_util::FutureExt;
        use tokio::io::AsyncReadExt;

        let (mut io, mut client) = small_buffered_pair().await;
        let first = mixed_frames(0);
        let second = mixed_frames(3);
        let mut expected = Vec::new();
        for frame in first.iter().chain(&second) {
            expected.extend(as_tungstenite_writes_it(frame));
        }
        // A batch that meets a full socket, its write given up part way (as when the task's
        // write future is dropped), then more gathered behind what is left of it.
        for frame in &first {
            io.gather(frame);
        }
        let gathered = io.gathered();
        assert!(
            std::future::poll_fn(|cx| io.poll_write_out(cx))
                .now_or_never()
                .is_none(),
            "the socket filled"
        );
        assert!(io.gathered() < gathered, "some of the batch was written");
        for frame in &second {
            io.gather(frame);
        }
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        std::future::poll_fn(|cx| io.poll_write_out(cx))
            .await
            .unwrap();
        assert_eq!(io.gathered(), 0);
        drop(io);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "the bytes differ from tungstenite's");
    }
}
