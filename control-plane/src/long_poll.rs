//! Long-poll wake-ups: a `Notify` per tunnel that has waiters, and the
//! count of waiters per client network (an address, an IPv6 /64), so that
//! one network cannot hold every poll the server can keep.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use support_protocol::TunnelId;
use tokio::sync::Notify;

use crate::rate_limit::{NetworkShares, Share};

/// The registry of waiting long-polls.
#[derive(Default)]
pub struct LongPolls {
    tunnels: Mutex<HashMap<TunnelId, Arc<Notify>>>,
    networks: Arc<NetworkShares>,
    waiting: AtomicI64,
    shutdown: Notify,
}

/// One waiting long-poll: holds its tunnel's notifier and its network's
/// share while alive.
pub struct WaitGuard<'a> {
    polls: &'a LongPolls,
    id: TunnelId,
    _share: Share,
    notify: Arc<Notify>,
}

impl WaitGuard<'_> {
    /// The notifier to wait on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.polls.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.polls.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the entry once no other waiter holds it (only the map's
        // reference and this guard's remain).
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.id);
        }
    }
}

impl LongPolls {
    /// Registers a waiter for `id` from client address `addr`; the guard
    /// unregisters it. None when that address's network (an IPv6 /64)
    /// already holds `per_network` waiters.
    pub fn register(
        &self,
        id: TunnelId,
        addr: IpAddr,
        per_network: usize,
    ) -> Option<WaitGuard<'_>> {
        let share = self.networks.take(addr, per_network)?;
        let notify = self
            .tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Some(WaitGuard {
            polls: self,
            id,
            _share: share,
            notify,
        })
    }

    /// Wakes every waiter of `id`.
    pub fn wake(&self, id: TunnelId) {
        let n = self
            .tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// How many tunnels have a notifier now (for tests: entries go with their last waiter).
    pub fn tunnels_tracked(&self) -> usize {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How many long-polls wait now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Ends every wait (shutdown): waiters answer with the current state.
    pub fn shutdown(&self) {
        self.shutdown.notify_waiters();
        self.wake_all();
    }

    /// Wakes every waiter: each looks at its tunnel again (changes from
    /// another replica may have been missed).
    pub fn wake_all(&self) {
        for n in self
            .tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            n.notify_waiters();
        }
    }

    /// A future that resolves on shutdown.
    pub fn shutdown_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.shutdown.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::LongPolls;
    use support_protocol::TunnelId;

    #[test]
    fn a_tunnel_s_notifier_goes_with_its_last_waiter() {
        let polls = LongPolls::default();
        let net = |s: &str| s.parse().expect("ip");
        {
            let _a = polls.register(TunnelId(1), net("10.0.0.1"), 9);
            let _b = polls.register(TunnelId(1), net("10.0.0.2"), 9);
            let _c = polls.register(TunnelId(2), net("10.0.0.1"), 9);
            assert_eq!(polls.tunnels_tracked(), 2);
            assert_eq!(polls.waiting(), 3);
        }
        assert_eq!(
            polls.tunnels_tracked(),
            0,
            "entries leaked after their waiters left"
        );
        assert_eq!(polls.waiting(), 0);
        assert_eq!(polls.networks.networks(), 0, "network shares leaked");
    }

    #[test]
    fn one_network_holds_at_most_its_share() {
        let polls = LongPolls::default();
        let (a, b) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let held: Vec<_> = (0..5)
            .filter_map(|i| polls.register(TunnelId(i), a, 3))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(polls.register(TunnelId(9), a, 3).is_none());
        assert!(
            polls.register(TunnelId(9), b, 3).is_some(),
            "another network waits"
        );
        drop(held);
        assert!(
            polls.register(TunnelId(9), a, 3).is_some(),
            "its share comes back"
        );
    }
}
