//! A node's command connections: one for publishes, one for the questions it asks Redis
//! about the cluster (`PUBSUB NUMSUB`, `PUBSUB CHANNELS`), so that a question never waits
//! behind publishes that wait for a slow Redis.
//!
//! Each is one connection, used by one caller at a time, each sending its commands in one write and
//! reading their replies. It is made when the node starts, and again after a loss; while Redis
//! cannot be reached, attempts are spaced out (100 ms doubling to 2 s) and calls in between
//! fail at once, so nothing queues up behind an unreachable Redis. A failed call says whether
//! its commands may have reached Redis, so that the publisher knows what it may send again.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::connection::{Backoff, CONNECT_TIMEOUT, Connection, ConnectionError, Dialer};
use super::resp::{Frame, Limits};

/// How long a question may take to send its commands and read their replies (the caller
/// gives its own wait for publishes), plus, for any call, the time its bytes take at the
/// slowest rate a working link is taken to have: a large batch of publishes on a slow link is
/// not a Redis that stopped answering.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const SLOWEST_LINK_BYTES_PER_SEC: u64 = 4 << 20;

fn response_timeout(wait: Duration, bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    wait + Duration::from_millis(bytes.saturating_mul(1000) / SLOWEST_LINK_BYTES_PER_SEC)
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be had: nothing was sent.
    #[error(transparent)]
    Unreachable(ConnectionError),
    /// The exchange failed: Redis may have carried out some of the commands, or all.
    #[error(transparent)]
    Failed(ConnectionError),
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
    /// order, giving Redis `wait` (and the time the bytes take) to answer. After any failure
    /// the connection is not used again (where it stopped between a command and its reply is
    /// unknown), so the next call makes a new one.
    pub async fn call<T>(
        &self,
        commands: &[u8],
        replies: usize,
        wait: Duration,
        mut read: impl FnMut(Frame<'_>) -> T,
    ) -> Result<Vec<T>, CallError> {
        let mut state = self.state.lock().await;
        let mut conn = self
            .usable(&mut state)
            .await
            .map_err(CallError::Unreachable)?;
        // The write of a large batch takes its share of the time given.
        let exchange = async {
            conn.send_unbounded(commands).await?;
            let mut out = Vec::with_capacity(replies);
            for _ in 0..replies {
                out.push(conn.reply(&mut read).await?);
            }
            Ok(out)
        };
        let out = tokio::time::timeout(response_timeout(wait, commands.len()), exchange)
            .await
            .unwrap_or(Err(ConnectionError::Timeout))
            .map_err(CallError::Failed)?;
        state.conn = Some(conn);
        Ok(out)
    }

    /// Makes sure there is a connection (making one if its time has come), without sending
    /// anything.
    pub async fn connect(&self) -> Result<(), ConnectionError> {
        let mut state = self.state.lock().await;
        let conn = self.usable(&mut state).await?;
        state.conn = Some(conn);
        Ok(())
    }

    /// The connection held, unless Redis has left it; else a new one, if its time has come.
    async fn usable(&self, state: &mut State) -> Result<Connection, ConnectionError> {
        match state
            .conn
            .take()
            .and_then(|mut conn| (!conn.is_stale()).then_some(conn))
        {
            Some(conn) => Ok(conn),
            None => self.reconnect(state).await,
        }
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
        let wait = RESPONSE_TIMEOUT;
        assert_eq!(response_timeout(wait, 0), wait);
        assert_eq!(response_timeout(wait, 100), wait);
        // The largest batch of publishes, 64 MiB: 16 s more at 4 MiB/s.
        assert_eq!(
            response_timeout(wait, 64 << 20),
            wait + Duration::from_secs(16)
        );
        assert!(response_timeout(wait, usize::MAX) > wait);
    }
}
