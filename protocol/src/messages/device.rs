//! The device's calls to the control plane (`POST /v1/device`), each
//! authenticated by the tunnel's credential, which can touch only its tunnel.

use alloc::boxed::Box;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::request::TunnelRequest;
use super::StopReason;
use crate::approval_box::SealedApproval;
use crate::codec::Message;
use crate::connected_report::SealedReport;
use crate::ids::{ApprovalSeq, RequestId, TunnelId};
use crate::state::TunnelState;

/// A device call with its request id.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct DeviceCall {
    /// Random per call; a replay carries the same id.
    pub request_id: RequestId,
    /// The call.
    pub request: DeviceRequest,
}

impl Message for DeviceCall {
    const KIND: u8 = 0x10;
    const NAME: &'static str = "device call";
}

/// What the device asks.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum DeviceRequest {
    /// Register a tunnel request. Idempotent: the same request again returns the same answer.
    Create(Box<TunnelRequest>),
    /// Wait (up to `wait_secs`) until the tunnel's state or approval differs from what the device knows.
    Poll(PollRequest),
    /// The device accepted an approval and its tunnel is up.
    Connected(ConnectedNotice),
    /// The device ended the tunnel.
    Stopped(StoppedNotice),
}

/// The long-poll.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct PollRequest {
    /// The tunnel (must be the credential's own).
    pub tunnel_id: TunnelId,
    /// The state the device knows; the poll answers as soon as the state differs.
    pub known: TunnelState,
    /// How long to hold the poll, in seconds (the server caps it).
    pub wait_secs: u16,
}

/// "Connected", with the sealed report for the admin.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ConnectedNotice {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// The approval the device accepted.
    pub approval_seq: ApprovalSeq,
    /// The report sealed under the one-time secret.
    pub report: SealedReport,
}

/// "Stopped", with why.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct StoppedNotice {
    /// The tunnel.
    pub tunnel_id: TunnelId,
    /// Why it ended.
    pub reason: StopReason,
}

/// The control plane's answer to a device call.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct DeviceReply {
    /// The call's request id, echoed.
    pub request_id: RequestId,
    /// The answer.
    pub result: Result<DeviceResponse, ApiError>,
}

impl Message for DeviceReply {
    const KIND: u8 = 0x11;
    const NAME: &'static str = "device reply";
}

/// A successful answer to a device call.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum DeviceResponse {
    /// The request is registered.
    Created {
        /// The tunnel id (the one the device chose).
        tunnel_id: TunnelId,
        /// Seconds until the request goes stale if nobody approves it.
        stale_after_secs: u32,
    },
    /// The tunnel's state and, when approved, the approval in force.
    Poll {
        /// The current state.
        state: TunnelState,
        /// The approval in force, if the state has one.
        approval: Option<Box<SealedApproval>>,
    },
    /// The notice is recorded.
    Ack,
}
