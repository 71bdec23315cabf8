//! The device API: each call authenticated by the tunnel's credential, which
//! can touch only its own tunnel.

use support_protocol::audit::{Actor, AuditAction};
use support_protocol::messages::device::{ConnectedNotice, PollRequest, StoppedNotice};
use support_protocol::messages::{
    ApiError, DeviceCall, DeviceReply, DeviceRequest, DeviceResponse, ErrorCode, StopReason,
    TunnelRequest, MAX_PENDING_WINDOW_SECS, MIN_PENDING_WINDOW_SECS,
};
use support_protocol::state::{Event, TunnelState};
use support_protocol::TunnelId;

use super::{internal, transition_error, Caller, Service};
use crate::store::{AuditDraft, TunnelRecord};

/// What to do with a device call.
pub enum DeviceOutcome {
    /// Answer now.
    Reply(DeviceReply),
    /// A long-poll whose state has not changed: wait, then ask [`Service::poll_now`] again.
    Wait {
        /// The tunnel.
        tunnel_id: TunnelId,
        /// How long to hold it.
        wait_secs: u64,
    },
}

fn err(code: ErrorCode, msg: &str) -> ApiError {
    ApiError::new(code, msg)
}

impl Service {
    /// Handles one authenticated device call.
    pub fn device_call(&self, caller: Caller, call: DeviceCall, now: u64) -> DeviceOutcome {
        let request_id = call.request_id;
        let result = match call.request {
            DeviceRequest::Create(req) => self.create(caller, &req, now),
            DeviceRequest::Poll(p) => match self.poll_check(caller, &p, now) {
                Ok(None) => {
                    let wait_secs = u64::from(p.wait_secs).min(self.config.long_poll_max_secs);
                    return DeviceOutcome::Wait {
                        tunnel_id: p.tunnel_id,
                        wait_secs,
                    };
                }
                Ok(Some(r)) => Ok(r),
                Err(e) => Err(e),
            },
            DeviceRequest::Connected(n) => self.connected(caller, &n, now),
            DeviceRequest::Stopped(n) => self.stopped(caller, &n, now),
        };
        DeviceOutcome::Reply(DeviceReply { request_id, result })
    }

    /// The answer to a long-poll now, whatever the state.
    pub fn poll_now(
        &self,
        caller: Caller,
        tunnel_id: TunnelId,
    ) -> Result<DeviceResponse, ApiError> {
        let r = self.own_tunnel(caller, tunnel_id)?;
        Ok(poll_response(&r))
    }

    /// How long a request is kept: the device's window, within the
    /// protocol's bounds and the operator's cap.
    fn pending_window(&self, req: &TunnelRequest) -> u32 {
        req.body
            .pending_window_secs
            .clamp(MIN_PENDING_WINDOW_SECS, MAX_PENDING_WINDOW_SECS)
            .min(self.config.max_pending_window_secs)
    }

    /// When the device's request stops being approvable, whether or not
    /// it keeps polling.
    pub(super) fn request_deadline(&self, r: &TunnelRecord) -> u64 {
        r.created_at + u64::from(self.pending_window(&r.request))
    }

    /// How long a pending request lives without another poll from its device.
    fn pending_lease(&self, r: &TunnelRecord, now: u64) -> u64 {
        self.request_deadline(r)
            .min(now.saturating_add(self.config.pending_heartbeat_secs))
    }

    /// A poll renews its pending request's lease, once a quarter of the
    /// heartbeat has passed (one write per device every few minutes, not per poll).
    fn renew_pending(&self, r: &TunnelRecord, now: u64) -> Result<(), ApiError> {
        let lease = self.pending_lease(r, now);
        if r.state != TunnelState::Pending
            || lease <= r.expires_at + self.config.pending_heartbeat_secs / 4
        {
            return Ok(());
        }
        // No long-poll is woken: nothing the device waits for has changed.
        self.store
            .update_tunnel(r.id(), now, &mut |t| {
                if t.state == TunnelState::Pending && t.expires_at < lease {
                    t.expires_at = lease;
                }
                Ok(None)
            })
            .map_err(|e| internal(&e))?;
        Ok(())
    }

    fn own_tunnel(&self, caller: Caller, id: TunnelId) -> Result<TunnelRecord, ApiError> {
        let r = self
            .store
            .tunnel(id)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such tunnel"))?;
        check_credential(&r, &caller)?;
        Ok(r)
    }

    fn create(
        &self,
        caller: Caller,
        req: &TunnelRequest,
        now: u64,
    ) -> Result<DeviceResponse, ApiError> {
        if req.body.credential.0 != caller.key {
            return Err(err(
                ErrorCode::Forbidden,
                "the request's credential is not the key that made the call",
            ));
        }
        let id = req.body.tunnel_id;
        let created = |r: &TunnelRecord| DeviceResponse::Created {
            tunnel_id: id,
            stale_after_secs: u32::try_from(self.request_deadline(r).saturating_sub(now))
                .unwrap_or(u32::MAX),
        };
        // A replayed create answers again without counting against any limit.
        if let Some(existing) = self.store.tunnel(id).map_err(|e| internal(&e))? {
            return if existing.request == *req {
                Ok(created(&existing))
            } else {
                Err(err(
                    ErrorCode::AlreadyExists,
                    "a different tunnel has this id; draw a new one",
                ))
            };
        }
        if req.body.ports.is_empty() {
            return Err(err(
                ErrorCode::Malformed,
                "a request must name at least one port",
            ));
        }
        if req.body.duration_secs == 0 || req.body.duration_secs > self.config.max_duration_secs {
            return Err(err(
                ErrorCode::Malformed,
                &format!(
                    "duration must be 1 to {} seconds",
                    self.config.max_duration_secs
                ),
            ));
        }
        // The limiter counts on the monotonic clock: a wall-clock step (which
        // `now` would follow) must neither refill nor drain it.
        if !self
            .create_limiter
            .allow(caller.addr, std::time::Instant::now())
        {
            return Err(err(
                ErrorCode::RateLimited,
                "too many requests from this address; try again later",
            ));
        }
        if self.store.live_tunnels().map_err(|e| internal(&e))? >= self.config.max_live_tunnels {
            return Err(err(
                ErrorCode::Unavailable,
                "the control plane is at its tunnel limit; try again later",
            ));
        }
        let mut record = TunnelRecord {
            request: req.clone(),
            state: TunnelState::Pending,
            created_at: now,
            expires_at: 0,
            approval: None,
            report: None,
            stop_reason: None,
        };
        // The device decides how long its request stays approvable (the
        // owner may send the code tonight, support approve tomorrow), as
        // long as it keeps polling.
        record.expires_at = self.pending_lease(&record, now);
        let audit = AuditDraft {
            actor: Actor::Device,
            tunnel_id: Some(id),
            action: AuditAction::Requested,
        };
        let stored = self
            .store
            .insert_tunnel(&record, audit, now)
            .map_err(|e| internal(&e))?;
        if stored.request != *req {
            return Err(err(
                ErrorCode::AlreadyExists,
                "a different tunnel has this id; draw a new one",
            ));
        }
        tracing::info!(tunnel = %id, "tunnel requested");
        Ok(created(&stored))
    }

    fn poll_check(
        &self,
        caller: Caller,
        p: &PollRequest,
        now: u64,
    ) -> Result<Option<DeviceResponse>, ApiError> {
        let r = self.own_tunnel(caller, p.tunnel_id)?;
        self.renew_pending(&r, now)?;
        // An ended tunnel never changes again: holding its poll would only
        // let one replayed message occupy connections.
        if r.state != p.known || p.wait_secs == 0 || r.state.kind().is_terminal() {
            return Ok(Some(poll_response(&r)));
        }
        Ok(None)
    }

    fn connected(
        &self,
        caller: Caller,
        n: &ConnectedNotice,
        now: u64,
    ) -> Result<DeviceResponse, ApiError> {
        self.own_tunnel(caller, n.tunnel_id)?;
        self.change_tunnel(n.tunnel_id, now, &mut |r| {
            if r.state == TunnelState::Connected(n.approval_seq) {
                // A replayed report changes nothing.
                return Ok(None);
            }
            r.state = r
                .state
                .apply(Event::Connect(n.approval_seq))
                .map_err(transition_error)?;
            r.report = Some(n.report.clone());
            r.expires_at = now + u64::from(r.request.body.duration_secs);
            Ok(Some(AuditDraft {
                actor: Actor::Device,
                tunnel_id: Some(n.tunnel_id),
                action: AuditAction::Connected(n.approval_seq),
            }))
        })?;
        tracing::info!(tunnel = %n.tunnel_id, approval = %n.approval_seq, "device connected");
        Ok(DeviceResponse::Ack)
    }

    fn stopped(
        &self,
        caller: Caller,
        n: &StoppedNotice,
        now: u64,
    ) -> Result<DeviceResponse, ApiError> {
        self.own_tunnel(caller, n.tunnel_id)?;
        self.change_tunnel(n.tunnel_id, now, &mut |r| {
            if r.state.kind().is_terminal() {
                // Already ended (a replay, or the sweeper was first): nothing to do.
                return Ok(None);
            }
            let event = match n.reason {
                StopReason::Failed(_) | StopReason::Refused(_) => Event::Fail,
                StopReason::Expired => Event::Expire,
                StopReason::Owner | StopReason::Admin => Event::Stop,
            };
            r.state = r.state.apply(event).map_err(transition_error)?;
            r.stop_reason = Some(n.reason.clone());
            Ok(Some(AuditDraft {
                actor: Actor::Device,
                tunnel_id: Some(n.tunnel_id),
                action: AuditAction::Stopped(n.reason.clone()),
            }))
        })?;
        tracing::info!(tunnel = %n.tunnel_id, reason = ?n.reason, "device ended the tunnel");
        Ok(DeviceResponse::Ack)
    }
}

fn check_credential(r: &TunnelRecord, caller: &Caller) -> Result<(), ApiError> {
    if r.request.body.credential.0 != caller.key {
        return Err(err(
            ErrorCode::Forbidden,
            "this credential belongs to another tunnel",
        ));
    }
    Ok(())
}

fn poll_response(r: &TunnelRecord) -> DeviceResponse {
    let approval = match r.state {
        TunnelState::Approved(_) | TunnelState::Connected(_) => r.approval.clone().map(Box::new),
        _ => None,
    };
    DeviceResponse::Poll {
        state: r.state,
        approval,
    }
}
