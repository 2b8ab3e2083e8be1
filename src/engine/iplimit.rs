//! Per-client-address limits across all shards: concurrent connections and handshake rate.
//!
//! One mutex-guarded map, like the [directory](super::directory), taken twice per connection
//! (on accept and on removal) and never on the message path; with both limits off it is not
//! taken at all. IPv6 clients are counted per /64, the block one subscriber usually gets, so a
//! single host cannot escape the limits by rotating addresses; IPv4-mapped IPv6 addresses count
//! as their IPv4 address.
//!
//! The map holds an entry per address with open connections or a bucket still refilling. An
//! entry whose connections are gone and whose bucket is full is worth nothing (a new entry would
//! be identical), so it is dropped on removal when possible and by a sweep when the map has
//! doubled since the last one: memory stays proportional to the addresses actually active, and
//! the sweep's cost is amortized over the insertions that made it necessary.
//!
//! Sans-IO: `now` is nanoseconds on the caller's monotonic clock (shared by all shards).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};

use super::ratelimit::Bucket;

/// Entries below which the map is never swept.
const MIN_SWEEP: usize = 1024;

/// The address a limit applies to: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(IpAddr);

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// The address opened handshakes faster than `handshakes_per_ip_per_sec` allows (429).
    Rate,
    /// The address already has `max_connections_per_ip` connections (429).
    Concurrency,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    level: u64,
    last: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<IpKey, Entry>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

/// The shared per-address table. See the module docs.
#[derive(Debug)]
pub struct IpLimits {
    max_conns: u32,
    handshakes: Bucket,
    inner: Mutex<Inner>,
}

impl IpLimits {
    /// Limits of `max_conns` connections (0: unlimited) and a handshake bucket (rate 0: off).
    pub fn new(max_conns: usize, handshakes: Bucket) -> Self {
        Self {
            max_conns: u32::try_from(max_conns).unwrap_or(u32::MAX),
            handshakes,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Whether any limit is on; if not, [`admit`](Self::admit) and
    /// [`release`](Self::release) do nothing and take no lock.
    pub fn is_on(&self) -> bool {
        self.max_conns > 0 || self.handshakes.is_on()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every update is a single store.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `ip` at `now`, counting it, or says why not. Every admitted
    /// connection must be [`release`](Self::release)d exactly once.
    pub fn admit(&self, ip: IpAddr, now: u64) -> Result<(), IpRefusal> {
        if !self.is_on() {
            return Ok(());
        }
        let key = IpKey::from(ip);
        let mut inner = self.lock();
        if inner.map.len() >= inner.sweep_at {
            let hs = self.handshakes;
            inner
                .map
                .retain(|_, e| e.conns > 0 || !hs.is_full(e.level, e.last, now));
            inner.sweep_at = (inner.map.len() * 2).max(MIN_SWEEP);
        }
        let e = inner.map.entry(key).or_insert(Entry {
            conns: 0,
            level: self.handshakes.full(),
            last: now,
        });
        if self.max_conns > 0 && e.conns >= self.max_conns {
            return Err(IpRefusal::Concurrency);
        }
        if !self.handshakes.take(&mut e.level, &mut e.last, now, 1) {
            return Err(IpRefusal::Rate);
        }
        e.conns += 1;
        Ok(())
    }

    /// Forgets one admitted connection from `ip`.
    pub fn release(&self, ip: IpAddr, now: u64) {
        if !self.is_on() {
            return;
        }
        let key = IpKey::from(ip);
        let mut inner = self.lock();
        if let Some(e) = inner.map.get_mut(&key) {
            e.conns = e.conns.saturating_sub(1);
            if e.conns == 0 && self.handshakes.is_full(e.level, e.last, now) {
                inner.map.remove(&key);
            }
        }
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ratelimit::seconds;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn concurrent_connections_are_capped_per_address() {
        let l = IpLimits::new(2, Bucket::new(0, 0));
        assert_eq!(l.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(l.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(l.admit(ip("10.0.0.1"), 0), Err(IpRefusal::Concurrency));
        assert_eq!(l.admit(ip("10.0.0.2"), 0), Ok(()), "another address");
        l.release(ip("10.0.0.1"), 0);
        assert_eq!(l.admit(ip("10.0.0.1"), 0), Ok(()));
    }

    #[test]
    fn handshakes_are_rate_limited_per_address() {
        let l = IpLimits::new(0, Bucket::new(2, 3));
        for _ in 0..3 {
            assert_eq!(l.admit(ip("10.0.0.1"), 0), Ok(()));
        }
        assert_eq!(l.admit(ip("10.0.0.1"), 0), Err(IpRefusal::Rate));
        // 2 per second: one more after 500 ms.
        assert_eq!(l.admit(ip("10.0.0.1"), seconds(1) / 2), Ok(()));
        assert_eq!(
            l.admit(ip("10.0.0.1"), seconds(1) / 2),
            Err(IpRefusal::Rate)
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = IpLimits::new(1, Bucket::new(0, 0));
        assert_eq!(l.admit(ip("2001:db8:1:2::1"), 0), Ok(()));
        assert_eq!(
            l.admit(ip("2001:db8:1:2:ffff::9"), 0),
            Err(IpRefusal::Concurrency)
        );
        assert_eq!(l.admit(ip("2001:db8:1:3::1"), 0), Ok(()));
        assert_eq!(l.admit(ip("192.0.2.7"), 0), Ok(()));
        assert_eq!(
            l.admit(ip("::ffff:192.0.2.7"), 0),
            Err(IpRefusal::Concurrency)
        );
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let l = IpLimits::new(10, Bucket::new(1, 1));
        l.admit(ip("10.0.0.1"), 0).unwrap();
        l.release(ip("10.0.0.1"), 0);
        assert_eq!(l.tracked(), 1, "the bucket is still refilling");
        // Many one-off addresses, long after: the sweep drops every full, unused entry.
        for i in 0..(3 * MIN_SWEEP as u32) {
            let t = seconds(10 + u64::from(i));
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.admit(a, t).unwrap();
            l.release(a, t);
        }
        assert!(
            l.tracked() <= 2 * MIN_SWEEP,
            "{} entries tracked",
            l.tracked()
        );
        // With connections still open an entry stays, whatever its bucket.
        let l = IpLimits::new(10, Bucket::new(0, 0));
        l.admit(ip("10.0.0.9"), 0).unwrap();
        assert_eq!(l.tracked(), 1);
        l.release(ip("10.0.0.9"), 0);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn with_both_limits_off_nothing_is_tracked() {
        let l = IpLimits::new(0, Bucket::new(0, 0));
        assert!(!l.is_on());
        for _ in 0..10 {
            l.admit(ip("10.0.0.1"), 0).unwrap();
        }
        assert_eq!(l.tracked(), 0);
    }
}
