//! The environment the protocol runs in: its clock and its source of random ids.
//!
//! Everything nondeterministic comes through [`Env`], so a test or the simulator can make a
//! whole run reproducible from one seed with [`SimEnv`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Clock and random ids.
pub trait Env: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// 16 random bytes (family, replica and packet ids).
    fn random_id(&self) -> [u8; 16];
    /// 32 random bytes: the seed of a new Ed25519 signing key.
    fn secret_key(&self) -> [u8; 32];
}

/// The real clock and operating-system randomness.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn random_id(&self) -> [u8; 16] {
        *uuid::Uuid::new_v4().as_bytes()
    }

    fn secret_key(&self) -> [u8; 32] {
        use rand_core::RngCore;
        let mut k = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut k);
        k
    }
}

/// A deterministic environment: a clock that advances by one millisecond per reading (and
/// can be moved by hand), and ids drawn from a seeded generator. Clones share state.
#[derive(Clone, Debug)]
pub struct SimEnv {
    clock: Arc<AtomicU64>,
    rng: Arc<AtomicU64>,
}

impl SimEnv {
    /// A new environment; the same seed gives the same sequence of times and ids.
    pub fn new(seed: u64) -> Self {
        SimEnv {
            clock: Arc::new(AtomicU64::new(1_700_000_000_000)),
            rng: Arc::new(AtomicU64::new(seed ^ 0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn next_u64(&self) -> u64 {
        // splitmix64
        let z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Env for SimEnv {
    fn now_ms(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn random_id(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }

    fn secret_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

/// Milliseconds since the Unix epoch as a UTC time: `2026-12-02T14:13:25.123Z`.
pub fn utc_millis(ms: u64) -> String {
    format!("{}.{:03}Z", utc_civil(ms), ms % 1000)
}

/// Milliseconds since the Unix epoch as a UTC time to the second: `2026-12-02T14:13:25Z`.
pub fn utc_seconds(ms: u64) -> String {
    format!("{}Z", utc_civil(ms))
}

/// `YYYY-MM-DDTHH:MM:SS` of a time in milliseconds since the Unix epoch, in UTC; exact for
/// every `u64` (Howard Hinnant's civil-from-days).
fn utc_civil(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}")
}

/// An incarnation for people. Incarnations are clock readings in milliseconds, set by
/// `restorereplica`: one is shown as the UTC time it was set; 0 (a replica never restored) as
/// `0 (never restored)`. Machine-readable output keeps the number.
pub fn incarnation_text(incarnation: u64) -> String {
    if incarnation == 0 {
        "0 (never restored)".to_string()
    } else {
        utc_millis(incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_env_is_reproducible() {
        let a = SimEnv::new(42);
        let b = SimEnv::new(42);
        assert_eq!(a.random_id(), b.random_id());
        assert_eq!(a.now_ms(), b.now_ms());
        assert_ne!(a.random_id(), SimEnv::new(43).random_id());
        let t = a.now_ms();
        assert!(a.now_ms() > t);
    }

    #[test]
    fn times_and_incarnations_read_as_utc() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert!(utc_millis(u64::MAX).ends_with(".615Z"));
        assert_eq!(utc_seconds(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(incarnation_text(0), "0 (never restored)");
        assert_eq!(
            incarnation_text(1_795_678_569_423),
            "2026-11-26T07:36:09.423Z"
        );
    }
}
