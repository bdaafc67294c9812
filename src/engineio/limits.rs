//! Admission limits: how many sessions the server and each client address may hold, and how fast
//! one address may open them. They keep one source from exhausting memory or file descriptors
//! that every other client shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use super::config::EngineConfig;
use super::error::RequestError;
use crate::rate_limit::TokenBucket;

#[derive(Debug)]
struct PerIp {
    sessions: usize,
    handshakes: TokenBucket,
}

/// Session counts and handshake rates per client address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
}

impl Admission {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, PerIp>> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new session from `ip` (when known) while `open` sessions exist; the caller must
    /// call [`release`](Self::release) with the same address when the session ends.
    pub(crate) fn admit(
        &self,
        config: &EngineConfig,
        ip: Option<IpAddr>,
        open: usize,
    ) -> Result<(), RequestError> {
        if open >= config.max_sessions {
            return Err(RequestError::ServerFull);
        }
        let Some(ip) = ip else { return Ok(()) };
        let mut per_ip = self.lock();
        let entry = per_ip.entry(ip).or_insert_with(|| PerIp {
            sessions: 0,
            handshakes: TokenBucket::new(
                config.handshake_burst_per_ip,
                config.handshakes_per_second_per_ip,
            ),
        });
        if entry.sessions >= config.max_sessions_per_ip || !entry.handshakes.try_take() {
            return Err(RequestError::TooManyRequests);
        }
        entry.sessions += 1;
        Ok(())
    }

    /// A session from `ip` ended.
    pub(crate) fn release(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut per_ip = self.lock();
        if let Some(entry) = per_ip.get_mut(&ip) {
            entry.sessions = entry.sessions.saturating_sub(1);
            // Forget idle addresses so the table only holds current clients; a fresh bucket is
            // full, so forgetting never tightens a limit.
            if entry.sessions == 0 && entry.handshakes.is_full() {
                per_ip.remove(&ip);
            }
        }
    }
}
