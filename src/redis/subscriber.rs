//! The subscriber connection to Redis, read by hand.
//!
//! Every message is handed to the node as soon as it is parsed, and nothing more is read from
//! the socket until the messages already read have been handled. A flood from other nodes
//! therefore waits in the kernel and in Redis, which bounds a subscriber's backlog itself
//! (`client-output-buffer-limit pubsub`, and disconnects a subscriber beyond it), instead of in
//! a queue in this process. The read buffer holds at most one message of at most
//! `max_message_bytes` plus one read; a larger message is skipped as it streams past.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::resp::{self, Push, RespError};

/// Room asked for before each read.
const READ_CHUNK: usize = 64 * 1024;

/// A read buffer larger than this is let go once empty, so one large message does not keep
/// its capacity for the life of the connection.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

/// How long a write of commands may wait for the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why the subscriber connection could not be made or was given up.
#[derive(Debug, Error)]
pub enum SubscriberError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis closed the connection")]
    Closed,
    #[error("redis protocol: {0}")]
    Protocol(#[from] RespError),
    #[error("redis refused: {0}")]
    Refused(String),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis did not answer a ping")]
    Unresponsive,
    #[error("this address needs TLS, which this build of the redis crate does not have")]
    Unsupported,
}

/// What the node is told, for each frame read.
pub enum Incoming<'a> {
    Push(Push<'a>),
    /// A message over `max_message_bytes`, skipped unread.
    Oversized(usize),
}

pub struct Connection {
    io: Box<dyn Io>,
    buf: BytesMut,
    max_message_bytes: usize,
    /// Bytes of an oversized message still to be dropped as they arrive.
    skip: usize,
}

impl Connection {
    /// Connects and authenticates as `info` says (RESP2; the database number does not matter
    /// to pub/sub), within `timeout`.
    pub async fn open(
        info: &ConnectionInfo,
        max_message_bytes: usize,
        timeout: Duration,
    ) -> Result<Connection, SubscriberError> {
        tokio::time::timeout(timeout, Connection::open_now(info, max_message_bytes))
            .await
            .map_err(|_| SubscriberError::Timeout)?
    }

    async fn open_now(
        info: &ConnectionInfo,
        max_message_bytes: usize,
    ) -> Result<Connection, SubscriberError> {
        let io: Box<dyn Io> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            _ => return Err(SubscriberError::Unsupported),
        };
        let mut conn = Connection {
            io,
            buf: BytesMut::new(),
            max_message_bytes,
            skip: 0,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = Vec::new();
            match settings.username() {
                Some(user) => {
                    resp::command(&mut auth, &[b"AUTH", user.as_bytes(), password.as_bytes()])
                }
                None => resp::command(&mut auth, &[b"AUTH", password.as_bytes()]),
            }
            conn.io.write_all(&auth).await?;
            conn.expect_ok().await?;
        }
        Ok(conn)
    }

    /// Reads the one reply to a command sent before subscribing.
    async fn expect_ok(&mut self) -> Result<(), SubscriberError> {
        loop {
            if let Some((frame, used)) = resp::parse(&self.buf, self.max_message_bytes)? {
                let answer = match frame {
                    resp::Frame::Simple(_) => Ok(()),
                    resp::Frame::Error(e) => Err(String::from_utf8_lossy(e).into_owned()),
                    other => Err(format!("unexpected reply {other:?}")),
                };
                self.buf.advance(used);
                return answer.map_err(SubscriberError::Refused);
            }
            self.read_more().await?;
        }
    }

    /// Sends commands.
    pub async fn send(&mut self, commands: &[u8]) -> Result<(), SubscriberError> {
        tokio::time::timeout(WRITE_TIMEOUT, self.io.write_all(commands))
            .await
            .map_err(|_| SubscriberError::Timeout)??;
        Ok(())
    }

    /// Waits for bytes from Redis. Cancel-safe: a read that did not complete took nothing.
    pub async fn read_more(&mut self) -> Result<(), SubscriberError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match self.io.read_buf(&mut self.buf).await? {
            0 => Err(SubscriberError::Closed),
            _ => Ok(()),
        }
    }

    /// Hands every whole frame read so far to `handle`, in order.
    pub fn drain(
        &mut self,
        mut handle: impl FnMut(Incoming<'_>) -> Result<(), SubscriberError>,
    ) -> Result<(), SubscriberError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            match resp::parse(&self.buf, self.max_message_bytes) {
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
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        Ok(())
    }
}
