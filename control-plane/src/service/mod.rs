//! The control plane's logic, independent of HTTP: authenticated calls in,
//! replies out. It only does bookkeeping: it cannot open a box, verify a
//! request tag or derive a PSK, because it never holds a one-time secret.

mod admin;
mod device;

use std::net::IpAddr;
use std::sync::Arc;

use support_protocol::messages::{ApiError, ErrorCode};
use support_protocol::state::TransitionError;

use crate::long_poll::LongPolls;
use crate::rate_limit::RateLimiter;
use crate::store::{Store, StoreError};

pub use device::DeviceOutcome;

/// Tunables of the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How long an approval the device has not acted on stays live.
    pub approval_window_secs: u64,
    /// The longest a pending request is kept; the device asks for its own window within it.
    pub max_pending_window_secs: u32,
    /// The longest duration a device may request.
    pub max_duration_secs: u32,
    /// The most live (not ended) tunnels at once: nobody can fill the store.
    pub max_live_tunnels: u64,
    /// The longest a long-poll is held.
    pub long_poll_max_secs: u64,
    /// How long an ended tunnel's record is kept (its audit records stay).
    pub retention_secs: u64,
    /// How long the record of a tunnel that ended without ever being
    /// approved is kept (a flood of creates does not sit out the retention).
    pub unapproved_retention_secs: u64,
    /// A pending request whose device has not polled for this long expires:
    /// a device waiting for its approval polls all the time (its retries
    /// back off to a minute at most), a flood's requests never do.
    pub pending_heartbeat_secs: u64,
    /// Long-polls one client address (IPv6: its /64) may hold at once;
    /// past it a poll is answered `rate_limited` at once.
    pub max_polls_per_address: usize,
    /// The support CA's public keys. When set, an approval is stored only
    /// with a certificate they signed, of the approver role, valid by this
    /// server's clock, naming the admin who posts it (devices check it all
    /// again; this is defence in depth, never the root of trust).
    pub support_ca_keys: Vec<[u8; 32]>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            approval_window_secs: 3600,
            max_pending_window_secs: support_protocol::messages::MAX_PENDING_WINDOW_SECS,
            max_duration_secs: 30 * 24 * 3600,
            max_live_tunnels: 50_000,
            long_poll_max_secs: 25,
            retention_secs: 30 * 24 * 3600,
            unapproved_retention_secs: 3600,
            pending_heartbeat_secs: 1800,
            max_polls_per_address: 1_000,
            support_ca_keys: Vec::new(),
        }
    }
}

/// The current time, Unix seconds (the control plane's clock; devices never depend on it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The control plane's logic over a store.
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServiceConfig,
    pub(crate) polls: Arc<LongPolls>,
    pub(crate) create_limiter: RateLimiter,
}

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServiceConfig, create_limiter: RateLimiter) -> Self {
        let polls = Arc::new(LongPolls::default());
        // Long-polls held here wake for changes other replicas make.
        let waiters = Arc::downgrade(&polls);
        store.watch_changes(Arc::new(move |id| {
            if let Some(polls) = waiters.upgrade() {
                match id {
                    Some(id) => polls.wake(id),
                    None => polls.wake_all(),
                }
            }
        }));
        Self {
            store,
            config,
            polls,
            create_limiter,
        }
    }

    /// The long-poll registry (the HTTP layer waits on it).
    pub fn polls(&self) -> &Arc<LongPolls> {
        &self.polls
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Deletes tunnels that ended more than the retention period ago (the
    /// never-approved ones after their shorter one), so the store does not
    /// grow without bound.
    pub fn purge_ended(&self, now: u64) -> Result<usize, StoreError> {
        self.store.purge_ended(
            now.saturating_sub(self.config.retention_secs),
            now.saturating_sub(self.config.unapproved_retention_secs),
            1000,
        )
    }

    /// Moves every live tunnel whose time is up to expired and wakes its long-polls.
    pub fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        let due = self.store.due_for_expiry(now, 1000)?;
        let mut expired = 0;
        for id in due {
            // Another replica may have expired it since `due` was read:
            // count only what this call changed.
            let mut expired_here = false;
            let outcome = self.store.update_tunnel(id, now, &mut |r| {
                if r.state.kind().is_terminal() || r.expires_at > now {
                    return Ok(None);
                }
                expired_here = true;
                r.state = r
                    .state
                    .apply(support_protocol::state::Event::Expire)
                    .map_err(transition_error)?;
                r.stop_reason = Some(support_protocol::messages::StopReason::Expired);
                Ok(Some(crate::store::AuditDraft {
                    actor: support_protocol::audit::Actor::System,
                    tunnel_id: Some(id),
                    action: support_protocol::audit::AuditAction::Expired,
                }))
            })?;
            if let Some(Ok(_)) = outcome {
                if expired_here {
                    expired += 1;
                    self.polls.wake(id);
                }
            }
        }
        Ok(expired)
    }
}

impl Service {
    /// Runs `change` on tunnel `id` in one store transaction and wakes the
    /// tunnel's long-polls (harmless when the change was a no-op replay).
    pub(crate) fn change_tunnel(
        &self,
        id: support_protocol::TunnelId,
        now: u64,
        change: &mut dyn FnMut(&mut crate::store::TunnelRecord) -> crate::store::UpdateOutcome,
    ) -> Result<crate::store::TunnelRecord, ApiError> {
        match self
            .store
            .update_tunnel(id, now, change)
            .map_err(|e| internal(&e))?
        {
            Some(Ok(r)) => {
                self.polls.wake(id);
                Ok(r)
            }
            Some(Err(e)) => Err(e),
            None => Err(ApiError::new(ErrorCode::NotFound, "no such tunnel")),
        }
    }
}

/// Maps a refused transition to its stable error code.
pub(crate) fn transition_error(e: TransitionError) -> ApiError {
    let code = match e {
        TransitionError::StaleApproval { .. } => ErrorCode::StaleApproval,
        _ => ErrorCode::InvalidState,
    };
    ApiError::new(code, &e.to_string())
}

/// A store failure as the caller sees it (details go to the log only).
pub(crate) fn internal(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::new(
        ErrorCode::Internal,
        "the control plane could not complete the call; try again",
    )
}

/// Who made a call, as the HTTP layer authenticated it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The caller's control-channel static key.
    pub key: [u8; 32],
    /// The client address (from a trusted proxy's header where configured).
    pub addr: IpAddr,
}
