//! The admin API: each call authenticated by an enrolled admin key; viewers
//! may look, only approvers may approve or stop.

use support_protocol::audit::{Actor, AuditAction};
use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::messages::admin::{
    ApproveRequest, AuditQuery, ListQuery, StopRequest, TunnelDetail, TunnelSummary,
    MAX_AUDIT_PAGE, MAX_LIST_PAGE,
};
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, ApiError, ErrorCode, StopReason,
};
use support_protocol::state::{Event, TunnelState};
use support_protocol::TunnelId;

use super::{internal, transition_error, Caller, Service};
use crate::store::{AdminRecord, AdminRole, AuditDraft, TunnelRecord};

fn err(code: ErrorCode, msg: &str) -> ApiError {
    ApiError::new(code, msg)
}

fn summary(r: &TunnelRecord) -> TunnelSummary {
    TunnelSummary {
        tunnel_id: r.id(),
        state: r.state,
        facts: r.request.body.facts.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
    }
}

impl Service {
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
        }
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
        let tunnels = BoundedVec::new(records.iter().map(summary).collect())
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
            summary: summary(&r),
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
        self.change_tunnel(a.tunnel_id, now, &mut |r| {
            if r.approval.as_ref() == Some(&a.approval) {
                // The same approval again (a replay): already in force.
                return Ok(None);
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
