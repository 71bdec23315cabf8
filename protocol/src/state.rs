//! The tunnel state machine, shared by the control plane and the device.
//!
//! ```text
//! pending ──approve──▶ approved ──connect──▶ connected
//!    │                  │   ▲ re-approve          │
//!    │                  └───┘ (newer seq only)    │
//!    └────────── stop / expire / fail ────────────┴──▶ stopped | expired | failed
//! ```
//!
//! States only move forward. An approval may be replaced while not connected
//! (a hub relaunch), but only by one with a higher sequence number; a device
//! connects only with the approval currently in force.

use serde::{Deserialize, Serialize};

use crate::ids::ApprovalSeq;
use crate::messages::TunnelStateKind;

/// A tunnel's state, with the approval in force where there is one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum TunnelState {
    /// Requested, waiting for approval.
    Pending,
    /// Approved with this approval; the device has not connected yet.
    Approved(ApprovalSeq),
    /// Connected with this approval.
    Connected(ApprovalSeq),
    /// Stopped by the owner or an admin.
    Stopped,
    /// Expired (duration over, or a pending request went stale).
    Expired,
    /// The device failed or refused.
    Failed,
}

/// Something that happens to a tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Event {
    /// An approval with this sequence number is posted.
    Approve(ApprovalSeq),
    /// The device reports connected with this approval.
    Connect(ApprovalSeq),
    /// The owner or an admin stops it.
    Stop,
    /// Its time is up.
    Expire,
    /// The device reports a failure.
    Fail,
}

/// Why a transition is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransitionError {
    /// The tunnel has ended; nothing changes it any more.
    Ended(TunnelState),
    /// An approval at or below the one in force.
    StaleApproval {
        /// The approval in force.
        current: ApprovalSeq,
        /// The one offered.
        offered: ApprovalSeq,
    },
    /// Approving a connected tunnel (its approval can no longer be replaced).
    AlreadyConnected,
    /// Connecting with an approval other than the one in force, or before any.
    NotApproved,
}

impl core::fmt::Display for TransitionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ended(s) => write!(f, "the tunnel has ended ({:?})", TunnelState::kind(*s)),
            Self::StaleApproval { current, offered } => {
                write!(
                    f,
                    "approval {offered} is not newer than the approval in force {current}"
                )
            }
            Self::AlreadyConnected => {
                f.write_str("the tunnel is connected; its approval can no longer be replaced")
            }
            Self::NotApproved => f.write_str("the tunnel is not approved with that approval"),
        }
    }
}

impl TunnelState {
    /// The state without its approval number.
    pub fn kind(self) -> TunnelStateKind {
        match self {
            Self::Pending => TunnelStateKind::Pending,
            Self::Approved(_) => TunnelStateKind::Approved,
            Self::Connected(_) => TunnelStateKind::Connected,
            Self::Stopped => TunnelStateKind::Stopped,
            Self::Expired => TunnelStateKind::Expired,
            Self::Failed => TunnelStateKind::Failed,
        }
    }

    /// The approval in force, if any.
    pub fn approval(self) -> Option<ApprovalSeq> {
        match self {
            Self::Approved(s) | Self::Connected(s) => Some(s),
            _ => None,
        }
    }

    /// The state after `event`, or why `event` is not allowed now.
    pub fn apply(self, event: Event) -> Result<TunnelState, TransitionError> {
        use Event as E;
        use TunnelState as S;
        match (self, event) {
            (S::Stopped | S::Expired | S::Failed, _) => Err(TransitionError::Ended(self)),
            (S::Pending, E::Approve(seq)) => Ok(S::Approved(seq)),
            (S::Approved(current), E::Approve(offered)) if offered > current => {
                Ok(S::Approved(offered))
            }
            (S::Approved(current), E::Approve(offered)) => {
                Err(TransitionError::StaleApproval { current, offered })
            }
            (S::Connected(_), E::Approve(_)) => Err(TransitionError::AlreadyConnected),
            (S::Approved(current), E::Connect(seq)) if seq == current => Ok(S::Connected(seq)),
            // A repeated connect report for the approval in force changes nothing.
            (S::Connected(current), E::Connect(seq)) if seq == current => Ok(S::Connected(seq)),
            (_, E::Connect(_)) => Err(TransitionError::NotApproved),
            (_, E::Stop) => Ok(S::Stopped),
            (_, E::Expire) => Ok(S::Expired),
            (_, E::Fail) => Ok(S::Failed),
        }
    }
}
