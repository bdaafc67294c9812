//! One connection to Redis: the socket, logging in, commands out, frames in.
//!
//! A node has three: two for commands (publishes, questions) and a subscriber. The subscriber hands every message on as soon as it is parsed, and
//! nothing more is read from the socket until the messages already read have been handled: a
//! flood from other nodes waits in the kernel and in Redis, which bounds a subscriber's
//! backlog itself (`client-output-buffer-limit pubsub`, and disconnects a subscriber beyond
//! it), instead of in a queue in this process. The read buffer holds at most one frame within
//! the connection's [`Limits`] plus one read; a message over them is skipped as it streams
//! past. The command connection reads exactly the replies it waits for.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::address::{Address, Endpoint};
use super::resp::{self, Frame, Limits, Push, RespError};

/// Room asked for before each read.
const READ_CHUNK: usize = 64 * 1024;

/// A read buffer larger than this is let go once empty, so one large message does not keep
/// its capacity for the life of the connection.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

/// How long making a connection (and logging in) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a write of commands may wait for the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The wait before the next attempt to connect, after a failed one or a lost connection:
/// 100 ms, doubling up to 2 s, and 100 ms again once a connection is made. The same for both
/// of a node's connections.
pub struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    /// The longest wait between attempts.
    pub const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Backoff {
        Backoff(Backoff::FIRST)
    }

    /// The wait before this attempt; the one after it is twice as long.
    pub fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Backoff::MAX);
        wait
    }

    /// A connection was made.
    pub fn reset(&mut self) {
        self.0 = Backoff::FIRST;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a node reaches Redis: the address, and for `rediss://` the TLS setup, made once and
/// shared by every connection (reconnections included).
#[derive(Clone)]
pub struct Dialer {
    address: Address,
    #[cfg(feature = "redis-tls")]
    tls: Option<super::tls::Tls>,
}

impl Dialer {
    /// For a `rediss://` address, trusts the authorities in `ca_file` (or the system's) and
    /// shows the certificate and key of `client` to a Redis that asks for one.
    pub fn new(
        address: Address,
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<Dialer, ConnectionError> {
        #[cfg(feature = "redis-tls")]
        let tls = match address.tls {
            true => Some(super::tls::Tls::new(ca_file, client).map_err(ConnectionError::Tls)?),
            false => None,
        };
        if !address.tls && (ca_file.is_some() || client.is_some()) {
            tracing::warn!("TLS settings for Redis are ignored: the URL is not rediss://");
        }
        #[cfg(not(feature = "redis-tls"))]
        if address.tls {
            let _ = (ca_file, client);
            return Err(ConnectionError::Tls(
                "rediss:// needs this crate's `redis-tls` feature".to_owned(),
            ));
        }
        Ok(Dialer {
            address,
            #[cfg(feature = "redis-tls")]
            tls,
        })
    }

    /// A socket to Redis, before logging in.
    async fn dial(&self) -> Result<Box<dyn Io>, ConnectionError> {
        match &self.address.endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                #[cfg(feature = "redis-tls")]
                if let Some(tls) = &self.tls {
                    return Ok(Box::new(tls.connect(host, stream).await?));
                }
                Ok(Box::new(stream))
            }
            Endpoint::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        }
    }
}

/// Why a connection could not be made or was given up.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Redis (or whatever listens there) closed the connection.
    #[error("redis closed the connection")]
    Closed,
    /// What came back is not RESP2 within the connection's limits.
    #[error("redis protocol: {0}")]
    Protocol(#[from] RespError),
    /// An error reply where the connection cannot go on (a failed login, say).
    #[error("redis refused: {0}")]
    Refused(String),
    /// Connecting, or an exchange, took too long.
    #[error("redis did not answer in time")]
    Timeout,
    /// TLS could not be set up (no certificate authority to trust, or no TLS in this build).
    #[error("redis TLS: {0}")]
    Tls(String),
    /// A subscriber's ping went unanswered.
    #[error("redis did not answer a ping")]
    Unresponsive,
    /// The last attempt to connect failed a moment ago; the next waits a little.
    #[error("redis is unreachable; the next attempt waits a little")]
    Down,
}

/// Why a reply refuses this connection: Redis's own words for an error.
fn refusal(frame: Frame<'_>) -> String {
    match frame {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => format!("unexpected reply {other:?}"),
    }
}

/// Whether an error reply says this client may not use Redis as it logged in (or did not).
fn refuses_login(error: &[u8]) -> bool {
    ["NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|code| error.starts_with(code.as_bytes()))
}

/// What a subscriber is told, for each frame read.
pub enum Incoming<'a> {
    Push(Push<'a>),
    /// A message over the connection's limit, skipped unread.
    Oversized(usize),
}

pub struct Connection {
    io: Box<dyn Io>,
    buf: BytesMut,
    limits: Limits,
    /// Bytes of an oversized message still to be dropped as they arrive.
    skip: usize,
}

impl Connection {
    /// Connects and logs in as the address says (RESP2), within `timeout`.
    pub async fn open(
        dialer: &Dialer,
        limits: Limits,
        timeout: Duration,
    ) -> Result<Connection, ConnectionError> {
        tokio::time::timeout(timeout, Connection::open_now(dialer, limits))
            .await
            .map_err(|_| ConnectionError::Timeout)?
    }

    async fn open_now(dialer: &Dialer, limits: Limits) -> Result<Connection, ConnectionError> {
        let address = &dialer.address;
        let io = dialer.dial().await?;
        let mut conn = Connection {
            io,
            buf: BytesMut::new(),
            limits,
            skip: 0,
        };
        // Logging in when the URL says so, then a PING: a node finds out at once whether what
        // listens there is a Redis it may use (not one that wants a password, nor a TLS port
        // spoken to in plain text, which would otherwise fail only the first publish).
        let mut hello = Vec::new();
        let logs_in = address.password.is_some();
        if let Some(password) = &address.password {
            match &address.username {
                Some(user) => {
                    resp::command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()])
                }
                None => resp::command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
        }
        resp::command(&mut hello, &[b"PING"]);
        conn.send(&hello).await?;
        if logs_in {
            conn.reply(|frame| match frame {
                Frame::Simple(_) => Ok(()),
                other => Err(refusal(other)),
            })
            .await?
            .map_err(ConnectionError::Refused)?;
        }
        conn.reply(|frame| match frame {
            Frame::Simple(b"PONG") => Ok(()),
            // A Redis that is there but not ready for every command (loading its data, a
            // replica without its primary) still publishes and subscribes.
            Frame::Error(e) if !refuses_login(e) => {
                let reply = String::from_utf8_lossy(e);
                tracing::debug!(%reply, "redis answered PING with an error; going on");
                Ok(())
            }
            other => Err(refusal(other)),
        })
        .await?
        .map_err(ConnectionError::Refused)?;
        Ok(conn)
    }

    /// Reads the next frame and hands it to `read`: the reply to a command sent.
    pub async fn reply<T>(
        &mut self,
        read: impl FnOnce(Frame<'_>) -> T,
    ) -> Result<T, ConnectionError> {
        loop {
            if let Some((frame, used)) = resp::parse(&self.buf, self.limits)? {
                let out = read(frame);
                self.buf.advance(used);
                self.shrink();
                return Ok(out);
            }
            self.read_more().await?;
        }
    }

    /// Whether Redis has closed the connection (or sent what nobody asked for) while it was
    /// idle. A command connection is checked before it is used again, so that commands are
    /// not written into a connection that Redis already left (after a restart, say): there
    /// they would be lost without a sign of whether they were carried out.
    pub fn is_stale(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Sends commands.
    pub async fn send(&mut self, commands: &[u8]) -> Result<(), ConnectionError> {
        tokio::time::timeout(WRITE_TIMEOUT, self.send_unbounded(commands))
            .await
            .map_err(|_| ConnectionError::Timeout)?
    }

    /// Sends commands, in as long as it takes: for a caller that bounds the whole exchange.
    pub async fn send_unbounded(&mut self, commands: &[u8]) -> Result<(), ConnectionError> {
        self.io.write_all(commands).await?;
        Ok(())
    }

    /// Waits for bytes from Redis. Cancel-safe: a read that did not complete took nothing.
    pub async fn read_more(&mut self) -> Result<(), ConnectionError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match self.io.read_buf(&mut self.buf).await? {
            0 => Err(ConnectionError::Closed),
            _ => Ok(()),
        }
    }

    /// Hands every whole frame read so far to `handle`, in order (a subscriber's reading).
    pub fn drain(
        &mut self,
        mut handle: impl FnMut(Incoming<'_>) -> Result<(), ConnectionError>,
    ) -> Result<(), ConnectionError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            match resp::parse(&self.buf, self.limits) {
                Ok(Some((frame, used))) => {
                    let handled = handle(Incoming::Push(Push::of(&frame)));
                    self.buf.advance(used);
                    handled?;
                }
                Ok(None) => break,
                Err(RespError::TooLarge {
                    len,
                    frame_end: Some(end),
                }) => {
                    self.skip = end;
                    handle(Incoming::Oversized(len))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.shrink();
        Ok(())
    }

    /// Lets a large read buffer go once it is empty.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_two_seconds_and_starts_over_once_connected() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..7).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }
}
