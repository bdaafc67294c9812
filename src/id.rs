//! Random identifiers: Engine.IO session ids and Socket.IO socket ids.
//!
//! Both come straight from the operating system's CSPRNG: 15 random bytes (120 bits), written as
//! 20 URL-safe base64 characters. Nothing else in the id (no counter, no timestamp) so one id says
//! nothing about another, and a socket id says nothing about the session id that authorises polling.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters in an id.
pub const ID_LEN: usize = 20;

/// A random id: 20 URL-safe characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; ID_LEN]);

impl Id {
    /// A fresh id from the OS CSPRNG.
    pub fn random() -> Id {
        let raw = random_bytes();
        let mut out = [0u8; ID_LEN];
        for (chunk, dst) in raw.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
            let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
            for (i, d) in dst.iter_mut().enumerate() {
                *d = URL_SAFE[(n >> (18 - 6 * i)) as usize & 63];
            }
        }
        Id(out)
    }

    /// Parses an id a client sent; anything that is not exactly 20 URL-safe characters is `None`.
    pub fn parse(s: &str) -> Option<Id> {
        let bytes: [u8; ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Id(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII from URL_SAFE is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A map keyed by ids, with [`IdHasher`].
pub type IdMap<V> = std::collections::HashMap<Id, V, BuildHasherDefault<IdHasher>>;

/// A set of ids, with [`IdHasher`].
pub type IdSet = std::collections::HashSet<Id, BuildHasherDefault<IdHasher>>;

/// The hasher of maps keyed by ids. Ids are random and made by this server, never chosen by a
/// peer, so the standard hasher's defence against chosen collisions buys nothing there; this
/// one folds an id in three multiplications instead of a SipHash round per 8 bytes, which counts
/// on the paths that look up every recipient of a broadcast.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const FOLD: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdHasher {
    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(FOLD);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.fold(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.fold(n as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits: bring the well-mixed high ones down.
        self.0 ^ (self.0 >> 31)
    }
}

/// Ids' worth of the OS generator's bytes fetched at once: one system call per
/// `POOL_IDS` ids rather than per id. Each byte is handed out once and then wiped.
const POOL_IDS: usize = 16;

struct Pool {
    bytes: [u8; 15 * POOL_IDS],
    /// Ids still in `bytes` (taken from the end).
    left: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; 15 * POOL_IDS], left: 0 })
    };
}

fn random_bytes() -> [u8; 15] {
    POOL.with_borrow_mut(|pool| {
        if pool.left == 0 {
            // The OS generator failing means the machine cannot hand out secrets at all.
            getrandom::fill(&mut pool.bytes)
                .expect("the operating system's random generator failed");
            pool.left = POOL_IDS;
        }
        pool.left -= 1;
        let chunk = &mut pool.bytes[15 * pool.left..15 * (pool.left + 1)];
        let mut raw = [0u8; 15];
        raw.copy_from_slice(chunk);
        chunk.fill(0);
        raw
    })
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn ids_are_url_safe_distinct_and_parse_back() {
        let a = Id::random();
        let b = Id::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(Id::parse(a.as_str()), Some(a));
        assert_eq!(Id::parse("short"), None);
        assert_eq!(Id::parse("!!!!!!!!!!!!!!!!!!!!"), None);
        assert_eq!(Id::parse(&"A".repeat(10_000)), None);
    }

    #[test]
    fn id_maps_spread_ids_over_their_buckets() {
        // Bucket indexes are the hash's low bits: 4096 ids over 1024 buckets should leave few
        // buckets empty (about 2% for a uniform hash) and none crowded.
        let mut buckets = vec![0u32; 1024];
        for _ in 0..4096 {
            let mut h = IdHasher::default();
            Id::random().hash(&mut h);
            buckets[(h.finish() & 1023) as usize] += 1;
        }
        let empty = buckets.iter().filter(|&&n| n == 0).count();
        assert!(empty < 60, "{empty} empty buckets");
        assert!(buckets.iter().all(|&n| n < 20), "{buckets:?}");
        let mut map: IdMap<u32> = IdMap::default();
        let ids: Vec<Id> = (0..1000).map(|_| Id::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            map.insert(*id, i as u32);
        }
        assert!(ids.iter().enumerate().all(|(i, id)| map[id] == i as u32));
    }

    #[test]
    fn ids_stay_distinct_across_refills_of_the_pool() {
        let ids: std::collections::HashSet<Id> =
            (0..POOL_IDS * 8 + 3).map(|_| Id::random()).collect();
        assert_eq!(ids.len(), POOL_IDS * 8 + 3);
    }
}
