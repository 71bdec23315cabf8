//! The admin API: each call authenticated by an enrolled admin key; viewers
//! may look, only approvers may approve, stop or hand off.
//!
//! Hand-off is a mailbox: a package sealed to the receiver's key and signed
//! by the sender waits here under its tunnel until the receiver (and only
//! the receiver, by the key it calls with) fetches it and says it picked it
//! up; it is deleted then, or when the tunnel ends.

use support_protocol::audit::{Actor, AuditAction};
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::handoff::HandoffKey;
use support_protocol::messages::admin::{
    AdminInfo, ApproveRequest, AuditQuery, HandoffPost, HandoffSummary, ListQuery, StopRequest,
    TunnelDetail, TunnelSummary, MAX_AUDIT_PAGE, MAX_HANDOFF_LIST, MAX_LIST_PAGE,
};
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, ApiError, ErrorCode, StopReason,
};
use support_protocol::state::{Event, TunnelState};
use support_protocol::TunnelId;

use super::{internal, transition_error, Caller, Service};
use crate::store::{AdminRecord, AdminRole, AuditDraft, HandoffRecord, TunnelRecord};

fn err(code: ErrorCode, msg: &str) -> ApiError {
    ApiError::new(code, msg)
}

impl Service {
    /// A tunnel as lists show it. A pending request's expiry is the end of
    /// the device's window: the lease its polls renew is bookkeeping.
    fn summary(&self, r: &TunnelRecord) -> TunnelSummary {
        let expires_at = if r.state == TunnelState::Pending {
            self.request_deadline(r)
        } else {
            r.expires_at
        };
        TunnelSummary {
            tunnel_id: r.id(),
            state: r.state,
            facts: r.request.body.facts.clone(),
            created_at: r.created_at,
            expires_at,
        }
    }

    /// Handles one authenticated admin call.
    pub fn admin_call(&self, caller: Caller, call: AdminCall, now: u64) -> AdminReply {
        let request_id = call.request_id;
        let result = self.admin_call_inner(caller, call.request, now);
        AdminReply { request_id, result }
    }

    fn admin_call_inner(
        &self,
        caller: Caller,
        req: AdminRequest,
        now: u64,
    ) -> Result<AdminResponse, ApiError> {
        let admin = self
            .store
            .admin_by_key(&caller.key)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| {
                err(
                    ErrorCode::Unauthenticated,
                    "this key is not an enrolled admin",
                )
            })?;
        match req {
            AdminRequest::List(q) => self.list(&q),
            AdminRequest::Show(id) => self.show(id),
            AdminRequest::Audit(q) => self.audit(&q),
            AdminRequest::Approve(a) => {
                require_approver(&admin)?;
                self.approve(&admin, &a, now)
            }
            AdminRequest::Stop(s) => {
                require_approver(&admin)?;
                self.admin_stop(&admin, &s, now)
            }
            AdminRequest::PublishHandoffKey(k) => {
                require_approver(&admin)?;
                self.publish_handoff_key(&admin, &k)
            }
            AdminRequest::LookupAdmin(name) => self.lookup_admin(name.as_str()),
            AdminRequest::Handoff(h) => {
                require_approver(&admin)?;
                self.post_handoff(&admin, &h, now)
            }
            AdminRequest::ListHandoffs => self.list_handoffs(&admin),
            AdminRequest::FetchHandoff(id) => {
                require_approver(&admin)?;
                let r = self
                    .store
                    .handoff(id)
                    .map_err(|e| internal(&e))?
                    .filter(|r| r.to == admin.name)
                    .ok_or_else(|| no_handoff(id))?;
                Ok(AdminResponse::Handoff(Box::new(r.package)))
            }
            AdminRequest::PickedUp(id) => {
                require_approver(&admin)?;
                self.picked_up(&admin, id, now)
            }
        }
    }

    /// Keeps the caller's signed hand-off key. Its X25519 key must be the
    /// caller's enrolled key (the control plane checks only that; senders
    /// check the certificate and the signature themselves).
    fn publish_handoff_key(
        &self,
        admin: &AdminRecord,
        k: &HandoffKey,
    ) -> Result<AdminResponse, ApiError> {
        if k.key.0 != admin.key {
            return Err(err(
                ErrorCode::Forbidden,
                "a hand-off key must be your enrolled key",
            ));
        }
        self.store
            .put_handoff_key(&admin.name, k)
            .map_err(|e| internal(&e))?;
        Ok(AdminResponse::HandoffKeyPublished)
    }

    fn lookup_admin(&self, wanted: &str) -> Result<AdminResponse, ApiError> {
        let a = self
            .store
            .admins()
            .map_err(|e| internal(&e))?
            .into_iter()
            .find(|a| a.name == wanted)
            .ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    &format!("no admin named '{wanted}' is enrolled"),
                )
            })?;
        // A key published before a re-enrolment with another key is stale.
        let handoff_key = self
            .store
            .handoff_key(&a.name)
            .map_err(|e| internal(&e))?
            .filter(|k| k.key.0 == a.key);
        Ok(AdminResponse::AdminInfo(Box::new(AdminInfo {
            name: name(&a),
            approver: a.role == AdminRole::Approver,
            key: FixedBytes(a.key),
            handoff_key,
        })))
    }

    fn post_handoff(
        &self,
        admin: &AdminRecord,
        h: &HandoffPost,
        now: u64,
    ) -> Result<AdminResponse, ApiError> {
        let to = self
            .store
            .admins()
            .map_err(|e| internal(&e))?
            .into_iter()
            .find(|a| a.name == h.to.as_str())
            .ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    &format!("no admin named '{}' is enrolled", h.to.as_str()),
                )
            })?;
        if to.role != AdminRole::Approver {
            return Err(err(
                ErrorCode::Forbidden,
                "the receiver is a viewer and cannot take a tunnel",
            ));
        }
        if to.name == admin.name {
            return Err(err(
                ErrorCode::InvalidState,
                "you cannot hand a tunnel off to yourself",
            ));
        }
        if h.package.header.to_key.0 != to.key {
            return Err(err(
                ErrorCode::InvalidState,
                "the package is sealed to another key than the receiver's enrolled key",
            ));
        }
        let id = h.package.header.tunnel_id;
        let record = HandoffRecord {
            tunnel_id: id,
            from: admin.name.clone(),
            to: to.name.clone(),
            package: h.package.clone(),
            posted_at: now,
            expires_at: 0,
        };
        let audit = AuditDraft {
            actor: Actor::Admin(name(admin)),
            tunnel_id: Some(id),
            action: AuditAction::HandedOff(name(&to)),
        };
        self.store
            .post_handoff(&record, audit, now)
            .map_err(|e| internal(&e))??;
        tracing::info!(tunnel = %id, from = %admin.name, to = %to.name, "handed off");
        Ok(AdminResponse::HandedOff)
    }

    fn list_handoffs(&self, admin: &AdminRecord) -> Result<AdminResponse, ApiError> {
        let list = self
            .store
            .handoffs_for(&admin.name, MAX_HANDOFF_LIST)
            .map_err(|e| internal(&e))?
            .into_iter()
            .map(|r| HandoffSummary {
                tunnel_id: r.tunnel_id,
                from: BoundedString::new(&r.from).unwrap_or_default(),
                posted_at: r.posted_at,
                expires_at: r.expires_at,
            })
            .collect();
        Ok(AdminResponse::Handoffs(
            BoundedVec::new(list).map_err(|_| err(ErrorCode::Internal, "list too large"))?,
        ))
    }

    fn picked_up(
        &self,
        admin: &AdminRecord,
        id: TunnelId,
        now: u64,
    ) -> Result<AdminResponse, ApiError> {
        let Some(r) = self
            .store
            .handoff(id)
            .map_err(|e| internal(&e))?
            .filter(|r| r.to == admin.name)
        else {
            // Already picked up (a replay), or never there: nothing to delete.
            return Ok(AdminResponse::PickedUp);
        };
        let audit = AuditDraft {
            actor: Actor::Admin(name(admin)),
            tunnel_id: Some(id),
            action: AuditAction::PickedUp(BoundedString::new(&r.from).unwrap_or_default()),
        };
        if self
            .store
            .take_handoff(id, &admin.name, audit, now)
            .map_err(|e| internal(&e))?
        {
            tracing::info!(tunnel = %id, from = %r.from, to = %admin.name, "hand-off picked up");
        }
        Ok(AdminResponse::PickedUp)
    }

    fn list(&self, q: &ListQuery) -> Result<AdminResponse, ApiError> {
        let limit = usize::from(q.limit).clamp(1, MAX_LIST_PAGE);
        let records = self
            .store
            .list_tunnels(q.state, q.after, limit)
            .map_err(|e| internal(&e))?;
        let next = if records.len() == limit {
            records.last().map(TunnelRecord::id)
        } else {
            None
        };
        let tunnels = BoundedVec::new(records.iter().map(|r| self.summary(r)).collect())
            .map_err(|_| err(ErrorCode::Internal, "page too large"))?;
        Ok(AdminResponse::List { tunnels, next })
    }

    fn show(&self, id: TunnelId) -> Result<AdminResponse, ApiError> {
        let r = self
            .store
            .tunnel(id)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such tunnel"))?;
        Ok(AdminResponse::Show(Box::new(TunnelDetail {
            summary: self.summary(&r),
            request: r.request.clone(),
            approval: r.approval.clone(),
            report: r.report.clone(),
        })))
    }

    fn audit(&self, q: &AuditQuery) -> Result<AdminResponse, ApiError> {
        let limit = usize::from(q.limit).clamp(1, MAX_AUDIT_PAGE);
        let records = self
            .store
            .audit_page(q.tunnel_id, q.after_seq, limit)
            .map_err(|e| internal(&e))?;
        Ok(AdminResponse::Audit(
            BoundedVec::new(records).map_err(|_| err(ErrorCode::Internal, "page too large"))?,
        ))
    }

    fn approve(
        &self,
        admin: &AdminRecord,
        a: &ApproveRequest,
        now: u64,
    ) -> Result<AdminResponse, ApiError> {
        let seq = a.approval.approval_seq;
        let expected_seq = match a.expected {
            None => support_protocol::ApprovalSeq::FIRST,
            Some(prev) => prev
                .next()
                .ok_or_else(|| err(ErrorCode::StaleApproval, "approval numbers exhausted"))?,
        };
        if seq != expected_seq {
            return Err(err(
                ErrorCode::StaleApproval,
                "the approval's number must follow the one it replaces",
            ));
        }
        let window = self.config.approval_window_secs;
        let cas = &self.config.support_ca_keys;
        self.change_tunnel(a.tunnel_id, now, &mut |r| {
            if r.approval.as_ref() == Some(&a.approval) {
                // The same approval again (a replay): already in force.
                return Ok(None);
            }
            if !cas.is_empty() {
                check_signer(&a.approval, r, admin, cas, now)?;
            }
            if r.state.approval() != a.expected {
                return Err(err(
                    ErrorCode::StaleApproval,
                    "another approval is in force now; fetch the tunnel again",
                ));
            }
            r.state = r
                .state
                .apply(Event::Approve(seq))
                .map_err(transition_error)?;
            r.approval = Some(a.approval.clone());
            r.expires_at = now + window;
            Ok(Some(AuditDraft {
                actor: Actor::Admin(name(admin)),
                tunnel_id: Some(a.tunnel_id),
                action: AuditAction::Approved(seq),
            }))
        })?;
        tracing::info!(tunnel = %a.tunnel_id, approval = %seq, admin = %admin.name, "approved");
        Ok(AdminResponse::Approved(seq))
    }

    fn admin_stop(
        &self,
        admin: &AdminRecord,
        s: &StopRequest,
        now: u64,
    ) -> Result<AdminResponse, ApiError> {
        self.change_tunnel(s.tunnel_id, now, &mut |r| {
            if r.state == TunnelState::Stopped {
                return Ok(None);
            }
            r.state = r.state.apply(Event::Stop).map_err(transition_error)?;
            r.stop_reason = Some(StopReason::Admin);
            Ok(Some(AuditDraft {
                actor: Actor::Admin(name(admin)),
                tunnel_id: Some(s.tunnel_id),
                action: AuditAction::Stopped(StopReason::Admin),
            }))
        })?;
        tracing::info!(tunnel = %s.tunnel_id, admin = %admin.name, "stopped by admin");
        Ok(AdminResponse::Stopped)
    }
}

fn require_approver(admin: &AdminRecord) -> Result<(), ApiError> {
    if admin.role != AdminRole::Approver {
        return Err(err(
            ErrorCode::Forbidden,
            "viewers cannot approve or stop tunnels",
        ));
    }
    Ok(())
}

fn name(admin: &AdminRecord) -> BoundedString<64> {
    BoundedString::new(&admin.name).unwrap_or_default()
}

fn no_handoff(id: TunnelId) -> ApiError {
    err(
        ErrorCode::NotFound,
        &format!("no hand-off of tunnel {id} is waiting for you"),
    )
}

/// The approval's certificate chain and signature, by this server's clock,
/// and that the certified approver is the admin who posts it: an enrolled
/// admin whose certificate expired (or who posts another's approval) is
/// refused here, whatever the poster's clock said when it signed.
fn check_signer(
    approval: &support_protocol::approval_box::SealedApproval,
    r: &crate::store::TunnelRecord,
    admin: &AdminRecord,
    cas: &[[u8; 32]],
    now: u64,
) -> Result<(), ApiError> {
    let device = r.request.device_public_keys();
    let signer = approval
        .verify_signer(r.request.body.tunnel_id, &device, cas, now)
        .map_err(|e| {
            err(
                ErrorCode::Forbidden,
                &format!("the approval is refused: {e}"),
            )
        })?;
    if signer != admin.name {
        return Err(err(
            ErrorCode::Forbidden,
            &format!(
                "the approval is signed by the key certified for {signer}, not by {}'s",
                admin.name
            ),
        ));
    }
    Ok(())
}
