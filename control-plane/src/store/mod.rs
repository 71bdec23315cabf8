//! Storage behind a small trait with two engines: [`redb_store::RedbStore`],
//! one embedded file (the default, for one machine), and
//! [`postgres::PgStore`], one PostgreSQL database that several replicas
//! share.
//!
//! Every acknowledged write is committed durably before the caller answers,
//! and every state change appends its audit record in the same transaction.
//!
//! The trait is synchronous: the service calls it from tokio's blocking
//! pool, as a redb commit blocks on fsync anyway.

pub mod postgres;
pub mod redb_store;
#[doc(hidden)]
pub mod sample;

use serde::{Deserialize, Serialize};
use support_protocol::approval_box::SealedApproval;
use support_protocol::audit::{Actor, AuditAction, AuditRecord, ChainBreak};
use support_protocol::connected_report::SealedReport;
use support_protocol::handoff::{HandoffKey, HandoffPackage};
use support_protocol::messages::TunnelStateKind;
use support_protocol::messages::{ApiError, ErrorCode, StopReason, TunnelRequest};
use support_protocol::state::TunnelState;
use support_protocol::TunnelId;

/// The on-disk schema version; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A storage failure (I/O, corruption, a full disk). Callers answer "internal error".
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the control plane knows about one tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// The device's request, with its tag (only the admin can verify it).
    pub request: TunnelRequest,
    /// The current state.
    pub state: TunnelState,
    /// When the request arrived (control plane clock, Unix seconds).
    pub created_at: u64,
    /// When the control plane expires the tunnel unless it changes state first.
    pub expires_at: u64,
    /// The approval in force.
    pub approval: Option<SealedApproval>,
    /// The device's sealed connected report.
    pub report: Option<SealedReport>,
    /// Why it ended.
    pub stop_reason: Option<StopReason>,
}

impl TunnelRecord {
    /// The tunnel's id.
    pub fn id(&self) -> TunnelId {
        self.request.body.tunnel_id
    }
}

/// An enrolled admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// The admin's name, as the audit log shows it.
    pub name: String,
    /// The admin's control-channel public key.
    pub key: [u8; 32],
    /// What the admin may do.
    pub role: AdminRole,
}

/// What an admin may do at the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRole {
    /// List, show, audit, approve, stop.
    Approver,
    /// List, show, audit.
    Viewer,
}

/// A hand-off waiting in the mailbox for its receiver. The control plane
/// cannot open or forge the package; it only keeps it for the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffRecord {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// The sender's enrolled name.
    pub from: String,
    /// The receiver's enrolled name: only they may fetch it.
    pub to: String,
    /// The sealed, signed package.
    pub package: HandoffPackage,
    /// When it was posted.
    pub posted_at: u64,
    /// The tunnel's expiry when it was posted (it is deleted when the tunnel ends).
    pub expires_at: u64,
}

/// Why a hand-off could not be posted (beyond a store failure).
pub type HandoffOutcome = Result<(), ApiError>;

/// An audit record to append (the store numbers, timestamps and chains it).
#[derive(Clone, Debug)]
pub struct AuditDraft {
    /// Who.
    pub actor: Actor,
    /// Which tunnel.
    pub tunnel_id: Option<TunnelId>,
    /// What.
    pub action: AuditAction,
}

/// The outcome of an update closure: keep the record as changed (with an
/// audit record, if the change deserves one), or refuse with an API error.
pub type UpdateOutcome = Result<Option<AuditDraft>, ApiError>;

/// What posting a hand-off does, decided the same way by both stores from
/// what they read in the post's transaction: the record to store (with
/// the tunnel's expiry), or the answer to give without storing anything.
pub(crate) fn handoff_to_store(
    record: &HandoffRecord,
    tunnel: Option<&TunnelRecord>,
    waiting: Option<&HandoffRecord>,
) -> Result<HandoffRecord, HandoffOutcome> {
    let Some(tunnel) = tunnel else {
        return Err(Err(ApiError::new(ErrorCode::NotFound, "no such tunnel")));
    };
    if tunnel.state.kind().is_terminal() {
        return Err(Err(ApiError::new(
            ErrorCode::InvalidState,
            "the tunnel has ended; there is nothing to hand off",
        )));
    }
    if let Some(e) = waiting {
        if e.package == record.package && e.to == record.to {
            // A replay of the same post: already in the mailbox.
            return Err(Ok(()));
        }
        if e.from != record.from {
            return Err(Err(ApiError::new(
                ErrorCode::AlreadyExists,
                &format!(
                    "a hand-off of this tunnel from {} is waiting for {}",
                    e.from, e.to
                ),
            )));
        }
    }
    let mut stored = record.clone();
    stored.expires_at = tunnel.expires_at;
    Ok(stored)
}

/// Walks the audit log in order, as both stores' `verify_audit` do: each
/// record must decode, carry the next number and extend the chain.
#[derive(Default)]
pub(crate) struct ChainWalk {
    prev: [u8; 32],
    /// Records checked so far.
    pub(crate) count: u64,
}

impl ChainWalk {
    /// Checks the record stored under `seq`.
    pub(crate) fn next(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ChainBreak> {
        let Ok(r) = postcard::from_bytes::<AuditRecord>(bytes) else {
            return Err(ChainBreak { seq });
        };
        if r.entry.seq != seq || seq != self.count + 1 {
            return Err(ChainBreak { seq });
        }
        self.prev = support_protocol::audit::verify_chain(self.prev, [&r])?;
        self.count += 1;
        Ok(())
    }
}

/// An admin's name as the audit log holds it (cut to its bound).
pub(crate) fn admin_name(name: &str) -> support_protocol::bounded::BoundedString<64> {
    support_protocol::bounded::BoundedString::new(name).unwrap_or_default()
}

/// Called with a tunnel whose record another replica changed, or with
/// `None` when changes may have been missed (all waiters should look again).
pub type ChangeWaker = std::sync::Arc<dyn Fn(Option<TunnelId>) + Send + Sync>;

/// The storage operations the service needs.
pub trait Store: Send + Sync + 'static {
    /// Calls `wake` whenever another process sharing this store changes a
    /// tunnel, so long-polls held here wake for it. One process alone
    /// wakes its own waiters, so an embedded store does nothing here.
    fn watch_changes(&self, wake: ChangeWaker) {
        let _ = wake;
    }

    /// One tunnel.
    fn tunnel(&self, id: TunnelId) -> StoreResult<Option<TunnelRecord>>;
    /// Inserts `record` unless its id exists; returns the record now stored.
    fn insert_tunnel(
        &self,
        record: &TunnelRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<TunnelRecord>;
    /// Reads, changes and writes one tunnel in one transaction.
    fn update_tunnel(
        &self,
        id: TunnelId,
        now: u64,
        change: &mut dyn FnMut(&mut TunnelRecord) -> UpdateOutcome,
    ) -> StoreResult<Option<Result<TunnelRecord, ApiError>>>;
    /// A page of tunnels in id order after `after`, optionally in one state.
    fn list_tunnels(
        &self,
        state: Option<TunnelStateKind>,
        after: Option<TunnelId>,
        limit: usize,
    ) -> StoreResult<Vec<TunnelRecord>>;
    /// Ids of live tunnels whose expiry is at or before `now`.
    fn due_for_expiry(&self, now: u64, limit: usize) -> StoreResult<Vec<TunnelId>>;
    /// How many tunnels are live (not ended).
    fn live_tunnels(&self) -> StoreResult<u64>;
    /// Tunnel counts by state (kept up to date with every change; no scan).
    fn count_by_state(&self) -> StoreResult<Vec<(TunnelStateKind, u64)>>;
    /// Deletes up to `limit` tunnels that ended before `ended_before`, or
    /// before `unapproved_ended_before` if they were never approved (the
    /// audit log keeps their history); returns how many went.
    fn purge_ended(
        &self,
        ended_before: u64,
        unapproved_ended_before: u64,
        limit: usize,
    ) -> StoreResult<usize>;

    /// Enrolls (or re-keys) an admin.
    fn put_admin(&self, admin: &AdminRecord, by: Actor, now: u64) -> StoreResult<()>;
    /// Removes an admin; false if there was none by that name.
    fn remove_admin(&self, name: &str, by: Actor, now: u64) -> StoreResult<bool>;
    /// All admins.
    fn admins(&self) -> StoreResult<Vec<AdminRecord>>;
    /// The admin with this key.
    fn admin_by_key(&self, key: &[u8; 32]) -> StoreResult<Option<AdminRecord>>;

    /// Stores `name`'s signed hand-off key (replacing an older one).
    fn put_handoff_key(&self, name: &str, key: &HandoffKey) -> StoreResult<()>;
    /// `name`'s signed hand-off key, if published.
    fn handoff_key(&self, name: &str) -> StoreResult<Option<HandoffKey>>;
    /// Posts a hand-off for a live tunnel, with its audit record, in one
    /// transaction (an identical replay changes nothing). The entry is
    /// deleted when the tunnel ends.
    fn post_handoff(
        &self,
        record: &HandoffRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<HandoffOutcome>;
    /// Up to `limit` hand-offs waiting for `to`.
    fn handoffs_for(&self, to: &str, limit: usize) -> StoreResult<Vec<HandoffRecord>>;
    /// The hand-off of tunnel `id`, if one waits.
    fn handoff(&self, id: TunnelId) -> StoreResult<Option<HandoffRecord>>;
    /// Deletes the hand-off of `id` if it waits for `to`, with `audit`, in
    /// one transaction; false if there was none for `to`.
    fn take_handoff(
        &self,
        id: TunnelId,
        to: &str,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<bool>;

    /// Audit records after `after_seq`, optionally about one tunnel.
    fn audit_page(
        &self,
        tunnel: Option<TunnelId>,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// Checks the whole audit chain; returns the number of records.
    fn verify_audit(&self) -> StoreResult<Result<u64, support_protocol::audit::ChainBreak>>;
    /// Writes a consistent copy of the store to `path` while serving.
    fn backup(&self, path: &std::path::Path) -> StoreResult<()>;
}
