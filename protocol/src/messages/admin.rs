//! The admin's calls to the control plane (`POST /v1/admin`), each
//! authenticated by an enrolled admin key.

use alloc::boxed::Box;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::request::{DeviceFacts, TunnelRequest};
use super::TunnelStateKind;
use crate::approval_box::SealedApproval;
use crate::audit::AuditRecord;
use crate::bounded::{BoundedString, BoundedVec, FixedBytes};
use crate::codec::Message;
use crate::connected_report::SealedReport;
use crate::handoff::{HandoffKey, HandoffPackage};
use crate::ids::{ApprovalSeq, RequestId, TunnelId};
use crate::state::TunnelState;

/// The most tunnels in one list page.
pub const MAX_LIST_PAGE: usize = 100;
/// The most audit records in one page.
pub const MAX_AUDIT_PAGE: usize = 100;

/// An admin call with its request id.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AdminCall {
    /// Random per call; a replay carries the same id.
    pub request_id: RequestId,
    /// The call.
    pub request: AdminRequest,
}

impl Message for AdminCall {
    const KIND: u8 = 0x20;
    const NAME: &'static str = "admin call";
}

/// What the admin asks.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum AdminRequest {
    /// List tunnels in id order, optionally in one state, a page at a time.
    List(ListQuery),
    /// One tunnel in full, with the request and its tag, to verify.
    Show(TunnelId),
    /// Post an approval (compare-and-set on the approval in force).
    Approve(Box<ApproveRequest>),
    /// Stop a tunnel.
    Stop(StopRequest),
    /// Read the audit log.
    Audit(AuditQuery),
    // New calls go below, never between: postcard numbers variants by position.
    /// Publish (or refresh) the caller's signed hand-off key.
    PublishHandoffKey(Box<HandoffKey>),
    /// Look up an enrolled admin by name (to hand a tunnel off to them).
    LookupAdmin(BoundedString<64>),
    /// Post a hand-off package for an enrolled admin (the mailbox).
    Handoff(Box<HandoffPost>),
    /// The hand-offs waiting for the caller.
    ListHandoffs,
    /// Fetch the hand-off of this tunnel waiting for the caller.
    FetchHandoff(TunnelId),
    /// The caller has stored the hand-off: delete it from the mailbox.
    PickedUp(TunnelId),
}

/// The most hand-offs in one list.
pub const MAX_HANDOFF_LIST: usize = 100;

/// A hand-off package for the mailbox.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct HandoffPost {
    /// The receiver's enrolled name.
    pub to: BoundedString<64>,
    /// The sealed, signed package (names the tunnel).
    pub package: HandoffPackage,
}

/// An enrolled admin, as a lookup answers.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AdminInfo {
    /// The enrolled name.
    pub name: BoundedString<64>,
    /// Whether the control plane lets them approve.
    pub approver: bool,
    /// The enrolled control-channel key.
    pub key: FixedBytes<32>,
    /// Their signed hand-off key, once they published one.
    pub handoff_key: Option<HandoffKey>,
}

/// A hand-off waiting in the mailbox.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct HandoffSummary {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// The sender's enrolled name (what the control plane says; the package's
    /// certificate is what counts).
    pub from: BoundedString<64>,
    /// When it was posted (control plane clock).
    pub posted_at: u64,
    /// When the tunnel (and so the hand-off) expires.
    pub expires_at: u64,
}

/// A page of the tunnel list.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ListQuery {
    /// Only tunnels in this state.
    pub state: Option<TunnelStateKind>,
    /// Continue after this tunnel (from the previous page's `next`).
    pub after: Option<TunnelId>,
    /// At most this many (capped at [`MAX_LIST_PAGE`]).
    pub limit: u16,
}

/// An approval, as compare-and-set.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ApproveRequest {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// The approval the admin saw in force (`None`: none yet). The control
    /// plane refuses if another is in force now.
    pub expected: Option<ApprovalSeq>,
    /// The sealed, signed approval. Its sequence number must be the next one.
    pub approval: SealedApproval,
}

/// Stop a tunnel.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct StopRequest {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// A note for the audit log.
    pub note: BoundedString<200>,
}

/// A page of the audit log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AuditQuery {
    /// Only records about this tunnel.
    pub tunnel_id: Option<TunnelId>,
    /// Records after this sequence number.
    pub after_seq: u64,
    /// At most this many (capped at [`MAX_AUDIT_PAGE`]).
    pub limit: u16,
}

/// The control plane's answer to an admin call.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AdminReply {
    /// The call's request id, echoed.
    pub request_id: RequestId,
    /// The answer.
    pub result: Result<AdminResponse, ApiError>,
}

impl Message for AdminReply {
    const KIND: u8 = 0x21;
    const NAME: &'static str = "admin reply";
}

/// One line of the tunnel list.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct TunnelSummary {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// Its state.
    pub state: TunnelState,
    /// What the device says about itself (unverified until the admin checks the tag).
    pub facts: DeviceFacts,
    /// When the request arrived (control plane clock, Unix seconds).
    pub created_at: u64,
    /// When the control plane will expire it (Unix seconds).
    pub expires_at: u64,
}

/// One tunnel in full.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct TunnelDetail {
    /// The summary.
    pub summary: TunnelSummary,
    /// The device's request, with its tag.
    pub request: TunnelRequest,
    /// The approval in force.
    pub approval: Option<SealedApproval>,
    /// The device's sealed connected report.
    pub report: Option<SealedReport>,
}

/// A successful answer to an admin call.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum AdminResponse {
    /// A page of tunnels.
    List {
        /// The tunnels.
        tunnels: BoundedVec<TunnelSummary, MAX_LIST_PAGE>,
        /// Pass as `after` for the next page.
        next: Option<TunnelId>,
    },
    /// One tunnel.
    Show(Box<TunnelDetail>),
    /// The approval is in force.
    Approved(ApprovalSeq),
    /// The tunnel is stopped.
    Stopped,
    /// A page of audit records.
    Audit(BoundedVec<AuditRecord, MAX_AUDIT_PAGE>),
    // New answers go below, never between.
    /// The hand-off key is published.
    HandoffKeyPublished,
    /// The admin looked up.
    AdminInfo(Box<AdminInfo>),
    /// The hand-off is in the mailbox.
    HandedOff,
    /// The hand-offs waiting for the caller.
    Handoffs(BoundedVec<HandoffSummary, MAX_HANDOFF_LIST>),
    /// One hand-off package.
    Handoff(Box<HandoffPackage>),
    /// The hand-off is deleted from the mailbox (or was already).
    PickedUp,
}
