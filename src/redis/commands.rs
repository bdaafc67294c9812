//! The node's command connection: publishes, and the questions it asks Redis about the
//! cluster (`PUBSUB NUMSUB`, `PUBSUB CHANNELS`).
//!
//! One connection, used by one caller at a time, each sending its commands in one write and
//! reading their replies. It is made when the node starts, and again after a loss; while Redis
//! cannot be reached, attempts are spaced out (100 ms doubling to 2 s) and calls in between
//! fail at once, so nothing queues up behind an unreachable Redis.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::connection::{Backoff, CONNECT_TIMEOUT, Connection, ConnectionError, Dialer};
use super::resp::{Frame, Limits};

/// How long a call may take to send its commands and read their replies, plus the time its
/// bytes take at the slowest rate a working link is taken to have: a large batch of publishes
/// on a slow link is not a Redis that stopped answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const SLOWEST_LINK_BYTES_PER_SEC: u64 = 4 << 20;

fn response_timeout(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    RESPONSE_TIMEOUT
        + Duration::from_millis(bytes.saturating_mul(1000) / SLOWEST_LINK_BYTES_PER_SEC)
}

pub struct Commands {
    dialer: Dialer,
    state: Mutex<State>,
}

struct State {
    conn: Option<Connection>,
    /// After a failed attempt to connect: no new one before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Commands {
    /// Connects, so that a node given a Redis it cannot reach finds out at once.
    pub async fn open(dialer: Dialer) -> Result<Commands, ConnectionError> {
        let conn = Connection::open(&dialer, Limits::COMMANDS, CONNECT_TIMEOUT).await?;
        Ok(Commands {
            dialer,
            state: Mutex::new(State {
                conn: Some(conn),
                retry_at: None,
                backoff: Backoff::new(),
            }),
        })
    }

    /// Sends `commands`, `replies` of them in one buffer, and hands each reply to `read`, in
    /// order. After any failure the connection is not used again (where it stopped between a
    /// command and its reply is unknown), so the next call makes a new one.
    pub async fn call<T>(
        &self,
        commands: &[u8],
        replies: usize,
        mut read: impl FnMut(Frame<'_>) -> T,
    ) -> Result<Vec<T>, ConnectionError> {
        let mut state = self.state.lock().await;
        let mut conn = match state
            .conn
            .take()
            .and_then(|mut conn| (!conn.is_stale()).then_some(conn))
        {
            Some(conn) => conn,
            None => self.reconnect(&mut state).await?,
        };
        let exchange = async {
            conn.send(commands).await?;
            let mut out = Vec::with_capacity(replies);
            for _ in 0..replies {
                out.push(conn.reply(&mut read).await?);
            }
            Ok(out)
        };
        let out = tokio::time::timeout(response_timeout(commands.len()), exchange)
            .await
            .unwrap_or(Err(ConnectionError::Timeout))?;
        state.conn = Some(conn);
        Ok(out)
    }

    async fn reconnect(&self, state: &mut State) -> Result<Connection, ConnectionError> {
        if state.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(ConnectionError::Down);
        }
        match Connection::open(&self.dialer, Limits::COMMANDS, CONNECT_TIMEOUT).await {
            Ok(conn) => {
                state.retry_at = None;
                state.backoff.reset();
                tracing::info!("redis command connection made again");
                Ok(conn)
            }
            Err(e) => {
                state.retry_at = Some(Instant::now() + state.backoff.next());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_call_has_time_for_its_bytes() {
        assert_eq!(response_timeout(0), RESPONSE_TIMEOUT);
        assert_eq!(response_timeout(100), RESPONSE_TIMEOUT);
        // The largest batch of publishes, 64 MiB: 16 s more at 4 MiB/s.
        assert_eq!(
            response_timeout(64 << 20),
            RESPONSE_TIMEOUT + Duration::from_secs(16)
        );
        assert!(response_timeout(usize::MAX) > RESPONSE_TIMEOUT);
    }
}
