//! Per client network (an address, an IPv6 /64): token buckets for tunnel
//! creates (one per network and one overall; time is an argument, through
//! the shared sans-IO bucket of `support-token-bucket`, so the limits test
//! deterministically), and [`NetworkShares`], the caps on what a network
//! holds at once (connections, long-polls).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support_token_bucket::{Bucket, Rate};

/// Past this many addresses, those whose buckets are full again are forgotten.
const MAX_ADDRESSES: usize = 100_000;

const MINUTE: Duration = Duration::from_secs(60);

/// The network a client address counts as: an IPv4 address alone, an
/// IPv6 address as its /64 (one home or host gets a whole /64 to pick
/// addresses from), an IPv4-mapped IPv6 address as its IPv4 address.
pub fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// How many of something (connections, long-polls) each client network
/// holds now, each network up to a cap.
#[derive(Default)]
pub struct NetworkShares(Mutex<HashMap<IpAddr, usize>>);

/// One thing held by a network, given back on drop.
pub struct Share {
    shares: Arc<NetworkShares>,
    network: IpAddr,
}

impl NetworkShares {
    /// A share for the network of `addr`, or None when it holds `cap` already.
    pub fn take(self: &Arc<Self>, addr: IpAddr, cap: usize) -> Option<Share> {
        let network = network_of(addr);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.get(&network).copied().unwrap_or(0);
        if held >= cap {
            return None;
        }
        map.insert(network, held + 1);
        Some(Share {
            shares: self.clone(),
            network,
        })
    }

    /// How many networks hold a share now (entries go with their last share).
    pub fn networks(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = self.shares.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.network);
            }
        }
    }
}

/// A per-address (per /64 for IPv6) and global rate limit.
pub struct RateLimiter {
    per_addr: Rate,
    global: Rate,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_addr: HashMap<IpAddr, Bucket<Instant>>,
    global: Bucket<Instant>,
}

impl RateLimiter {
    /// `per_addr_per_min` per address (bursts of `burst`), `global_per_min`
    /// overall; every bucket starts full at `now`.
    pub fn new(per_addr_per_min: u32, burst: u32, global_per_min: u32, now: Instant) -> Self {
        let global = Rate::new(global_per_min, MINUTE, global_per_min.max(1));
        Self {
            per_addr: Rate::new(per_addr_per_min, MINUTE, burst.max(1)),
            global,
            buckets: Mutex::new(Buckets {
                by_addr: HashMap::new(),
                global: Bucket::full(&global, now),
            }),
        }
    }

    /// Takes a token for `addr` and one globally at `now` if both have
    /// one; takes neither otherwise.
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets {
            by_addr: map,
            global,
        } = &mut *guard;
        global.refill(&self.global, now);
        if map.len() > MAX_ADDRESSES {
            let per_addr = &self.per_addr;
            map.retain(|_, b| {
                b.refill(per_addr, now);
                !b.is_full(per_addr)
            });
        }
        let b = map
            .entry(network_of(addr))
            .or_insert(Bucket::full(&self.per_addr, now));
        b.refill(&self.per_addr, now);
        if !b.has_token() || !global.has_token() {
            return false;
        }
        b.spend() && global.spend()
    }

    /// How many addresses have a bucket now.
    pub fn addresses_tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_addr
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::{RateLimiter, MAX_ADDRESSES};
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn allowed(l: &RateLimiter, addr: IpAddr, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| l.allow(addr, now)).count()
    }

    #[test]
    fn an_address_gets_its_burst_then_one_per_interval() {
        let t0 = Instant::now();
        // 10 a minute (one every 6 s), bursts of 5.
        let l = RateLimiter::new(10, 5, 1000, t0);
        assert_eq!(allowed(&l, ip(1), t0, 20), 5);
        assert!(!l.allow(ip(1), t0 + Duration::from_secs(3)));
        assert!(l.allow(ip(1), t0 + Duration::from_secs(6)));
        assert!(!l.allow(ip(1), t0 + Duration::from_secs(6)));
        // Other addresses are not affected.
        assert_eq!(allowed(&l, ip(2), t0, 20), 5);
        // A long pause fills the bucket to its burst, no more.
        assert_eq!(allowed(&l, ip(1), t0 + Duration::from_secs(3600), 20), 5);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        use super::network_of;
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(network_of(a), network_of(b));
        assert_ne!(network_of(a), network_of(c));
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        assert_eq!(
            network_of(mapped),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        let t0 = Instant::now();
        let l = RateLimiter::new(10, 5, 1000, t0);
        let one_64 = (0..100u16)
            .filter(|n| l.allow(format!("2001:db8:1:2::{n:x}").parse().expect("ip"), t0))
            .count();
        assert_eq!(one_64, 5, "one /64 shares one bucket");
    }

    #[test]
    fn the_global_limit_bounds_all_addresses_together() {
        let t0 = Instant::now();
        let l = RateLimiter::new(10, 5, 3, t0);
        let n = (0..20).filter(|i| l.allow(ip(*i), t0)).count();
        assert_eq!(n, 3);
        // One global token every 20 s.
        assert!(!l.allow(ip(100), t0 + Duration::from_secs(10)));
        assert!(l.allow(ip(101), t0 + Duration::from_secs(20)));
    }

    #[test]
    fn a_refusal_by_either_bucket_takes_from_neither() {
        let t0 = Instant::now();
        // Each address may create once, ever; all together once a minute.
        let l = RateLimiter::new(0, 1, 1, t0);
        assert!(l.allow(ip(1), t0));
        // The global bucket is empty: address 2 is refused and keeps its token.
        assert!(!l.allow(ip(2), t0));
        // A minute on, the global bucket has a token again. Address 1's own
        // bucket refuses and leaves it; address 2 still has the one token it
        // will ever have.
        let t1 = t0 + Duration::from_secs(60);
        assert!(!l.allow(ip(1), t1));
        assert!(l.allow(ip(2), t1));
    }

    #[test]
    fn forgotten_addresses_are_only_those_with_full_buckets() {
        let t0 = Instant::now();
        let l = RateLimiter::new(1, 1, u32::MAX, t0);
        let many = u32::try_from(MAX_ADDRESSES).expect("fits") + 1;
        for i in 0..many {
            assert!(l.allow(ip(i), t0));
        }
        assert_eq!(l.addresses_tracked(), MAX_ADDRESSES + 1);
        // A minute on, every bucket is full again: all are forgotten but the caller's.
        assert!(l.allow(ip(0), t0 + Duration::from_secs(60)));
        assert_eq!(l.addresses_tracked(), 1);
        // Nothing is forgotten while its bucket is still refilling.
        let t1 = t0 + Duration::from_secs(60);
        for i in 1..many {
            assert!(l.allow(ip(i), t1));
        }
        assert!(!l.allow(ip(0), t1 + Duration::from_secs(1)));
        assert_eq!(l.addresses_tracked(), MAX_ADDRESSES + 1);
    }
}
