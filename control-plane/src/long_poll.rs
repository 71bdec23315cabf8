//! Long-poll wake-ups: a `Notify` per tunnel that has waiters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use support_protocol::TunnelId;
use tokio::sync::Notify;

/// The registry of waiting long-polls.
#[derive(Default)]
pub struct LongPolls {
    map: Mutex<HashMap<TunnelId, Arc<Notify>>>,
    waiting: AtomicI64,
    shutdown: Notify,
}

/// One waiting long-poll: holds its tunnel's notifier while alive.
pub struct WaitGuard<'a>(&'a LongPolls, TunnelId, Arc<Notify>);

impl WaitGuard<'_> {
    /// The notifier to wait on.
    pub fn notify(&self) -> &Notify {
        &self.2
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.0.map.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the entry once no other waiter holds it (only the map's
        // reference and this guard's remain).
        if Arc::strong_count(&self.2) <= 2 {
            map.remove(&self.1);
        }
    }
}

impl LongPolls {
    /// Registers a waiter for `id`; the guard unregisters it.
    pub fn register(&self, id: TunnelId) -> WaitGuard<'_> {
        let n = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id).or_default().clone()
        };
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard(self, id, n)
    }

    /// Wakes every waiter of `id`.
    pub fn wake(&self, id: TunnelId) {
        let n = self
            .map
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
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How many long-polls wait now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Ends every wait (shutdown): waiters answer with the current state.
    pub fn shutdown(&self) {
        self.shutdown.notify_waiters();
        for n in self.map.lock().unwrap_or_else(|p| p.into_inner()).values() {
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
        {
            let _a = polls.register(TunnelId(1));
            let _b = polls.register(TunnelId(1));
            let _c = polls.register(TunnelId(2));
            assert_eq!(polls.tunnels_tracked(), 2);
            assert_eq!(polls.waiting(), 3);
        }
        assert_eq!(
            polls.tunnels_tracked(),
            0,
            "entries leaked after their waiters left"
        );
        assert_eq!(polls.waiting(), 0);
    }
}
