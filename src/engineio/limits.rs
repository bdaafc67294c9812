//! Admission limits: how many sessions the server and each client address may hold, and how fast
//! one address may open them. They keep one source from exhausting memory or file descriptors
//! that every other client shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use super::config::EngineConfig;
use super::error::RequestError;
use crate::rate_limit::{TokenBucket, sweep_when_grown};

#[derive(Debug)]
struct PerIp {
    sessions: usize,
    handshakes: TokenBucket,
}

impl PerIp {
    /// Whether the address still counts for something: an open session, or handshakes that
    /// have not refilled its bucket yet.
    fn holds_anything(&self) -> bool {
        self.sessions > 0 || !self.handshakes.is_full()
    }
}

/// Session counts and handshake rates per client address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    per_ip: Mutex<PerIpTable>,
}

#[derive(Debug, Default)]
struct PerIpTable {
    addresses: HashMap<IpAddr, PerIp>,
    /// The size at which addresses that hold nothing are swept out.
    sweep_at: usize,
}

/// The source a client address counts as, for every per-address limit. An IPv4 client of a
/// server listening on `::` arrives as an IPv4-mapped IPv6 address: it counts as its IPv4
/// address. An IPv6 client counts by its /64, the block one subscriber is given, or a single
/// host could take a fresh address for every session.
pub(crate) fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::from(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl Admission {
    fn lock(&self) -> MutexGuard<'_, PerIpTable> {
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
        let Some(ip) = ip.map(source) else {
            return Ok(());
        };
        let mut table = self.lock();
        let PerIpTable {
            addresses,
            sweep_at,
        } = &mut *table;
        // An address whose last session ended before its bucket refilled is not forgotten
        // then: it goes here, once it holds nothing.
        sweep_when_grown(addresses, sweep_at, |_, entry| entry.holds_anything());
        let entry = addresses.entry(ip).or_insert_with(|| PerIp {
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
        let Some(ip) = ip.map(source) else { return };
        let addresses = &mut self.lock().addresses;
        if let Some(entry) = addresses.get_mut(&ip) {
            entry.sessions = entry.sessions.saturating_sub(1);
            // Forget idle addresses so the table only holds current clients; a fresh bucket is
            // full, so forgetting never loosens a limit.
            if !entry.holds_anything() {
                addresses.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::SWEEP_MIN;
    use std::time::Duration;

    #[test]
    fn an_ipv6_block_counts_as_one_source_and_a_mapped_ipv4_as_itself() {
        let config = EngineConfig {
            max_sessions_per_ip: 2,
            ..EngineConfig::default()
        };
        let admission = Admission::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        admission.admit(&config, ip("2001:db8:1:2::1"), 0).unwrap();
        admission
            .admit(&config, ip("2001:db8:1:2:ffff::9"), 0)
            .unwrap();
        assert!(
            admission.admit(&config, ip("2001:db8:1:2::3"), 0).is_err(),
            "a third address of the same /64"
        );
        admission.admit(&config, ip("2001:db8:1:3::1"), 0).unwrap();
        admission.release(ip("2001:db8:1:2::7"));
        admission.admit(&config, ip("2001:db8:1:2::8"), 0).unwrap();

        admission.admit(&config, ip("192.0.2.1"), 0).unwrap();
        admission.admit(&config, ip("::ffff:192.0.2.1"), 0).unwrap();
        assert!(admission.admit(&config, ip("192.0.2.1"), 0).is_err());
        admission.release(ip("::ffff:192.0.2.1"));
        admission.admit(&config, ip("192.0.2.1"), 0).unwrap();
        assert_eq!(
            source("::1".parse().unwrap()),
            "::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn addresses_that_hold_nothing_back_are_forgotten() {
        let config = EngineConfig {
            handshake_burst_per_ip: 1,
            handshakes_per_second_per_ip: 1000.0,
            ..EngineConfig::default()
        };
        let admission = Admission::default();
        for i in 0..10_000u32 {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            admission.admit(&config, ip, 0).unwrap();
            // Its session ends before its bucket refilled (a millisecond): it stays for now.
            admission.release(ip);
            if i % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let kept = admission.lock().addresses.len();
        assert!(kept <= 2 * SWEEP_MIN, "{kept} addresses kept");
        // One that holds a session back is kept whatever the sweeps.
        let held = IpAddr::from([10, 0, 0, 1]);
        admission.admit(&config, Some(held), 0).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        for i in 10_000..20_000u32 {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            admission.admit(&config, ip, 0).unwrap();
            admission.release(ip);
        }
        assert_eq!(admission.lock().addresses[&held].sessions, 1);
    }
}
