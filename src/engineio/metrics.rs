//! Counters of the Engine.IO layer, read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{CloseReason, RequestError};

/// Every request error, in a fixed order for the counters.
pub const REQUEST_ERRORS: [RequestError; 9] = [
    RequestError::UnknownTransport,
    RequestError::UnknownSid,
    RequestError::BadHandshakeMethod,
    RequestError::BadRequest,
    RequestError::Forbidden,
    RequestError::UnsupportedProtocolVersion,
    RequestError::PayloadTooLarge,
    RequestError::TooManyRequests,
    RequestError::ServerFull,
];

/// Every close reason, in a fixed order for the counters.
pub const CLOSE_REASONS: [CloseReason; 7] = [
    CloseReason::TransportClose,
    CloseReason::TransportError,
    CloseReason::PingTimeout,
    CloseReason::ParseError,
    CloseReason::SlowConsumer,
    CloseReason::ForcedClose,
    CloseReason::ServerShutdown,
];

/// Monotonic counters; gauges (sessions by transport) are read from the sessions themselves.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Packets received from clients.
    pub packets_in: AtomicU64,
    /// Bytes received in packets.
    pub bytes_in: AtomicU64,
    /// Packets written to clients.
    pub packets_out: AtomicU64,
    /// Bytes written in packets.
    pub bytes_out: AtomicU64,
    /// Volatile packets dropped for clients that were behind.
    pub volatile_drops: AtomicU64,
    /// Sessions opened.
    pub sessions_opened: AtomicU64,
    request_errors: [AtomicU64; 9],
    closes: [AtomicU64; 7],
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl EngineMetrics {
    pub(crate) fn packet_in(&self, bytes: usize) {
        bump(&self.packets_in, 1);
        bump(&self.bytes_in, bytes as u64);
    }

    pub(crate) fn packets_out(&self, packets: usize, bytes: usize) {
        bump(&self.packets_out, packets as u64);
        bump(&self.bytes_out, bytes as u64);
    }

    pub(crate) fn request_error(&self, err: RequestError) {
        if let Some(i) = REQUEST_ERRORS.iter().position(|e| *e == err) {
            bump(&self.request_errors[i], 1);
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == reason) {
            bump(&self.closes[i], 1);
        }
    }

    /// Refused requests, per error.
    pub fn request_errors(&self) -> impl Iterator<Item = (RequestError, u64)> + '_ {
        REQUEST_ERRORS
            .iter()
            .zip(&self.request_errors)
            .map(|(e, c)| (*e, c.load(Ordering::Relaxed)))
    }

    /// Ended sessions, per reason.
    pub fn closes(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CLOSE_REASONS
            .iter()
            .zip(&self.closes)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
    }
}
