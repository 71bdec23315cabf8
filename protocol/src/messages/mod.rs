//! Every call of the flow and its answer.
//!
//! * [`request`]: what the device asks for (facts, ports, duration, keys, tag).
//! * [`device`]: the device's calls (create, long-poll, connected, stopped).
//! * [`admin`]: the admin's calls (list, show, approve, stop, audit).
//! * [`error`]: stable error codes shared by both APIs.

pub mod admin;
pub mod device;
pub mod error;
pub mod request;

pub use admin::{AdminCall, AdminReply, AdminRequest, AdminResponse};
pub use device::{DeviceCall, DeviceReply, DeviceRequest, DeviceResponse};
pub use error::{ApiError, ErrorCode};
pub use request::{
    DeviceFacts, TunnelRequest, DEFAULT_PENDING_WINDOW_SECS, MAX_PENDING_WINDOW_SECS, MAX_PORTS,
    MIN_PENDING_WINDOW_SECS,
};

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedString;

/// Where a tunnel is in its life, as the control plane reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum TunnelStateKind {
    /// Requested by the device, not approved yet.
    Pending,
    /// Approved; the device has not reported connected yet.
    Approved,
    /// The device reported connected.
    Connected,
    /// Stopped by the owner or an admin.
    Stopped,
    /// Its time ran out (or a pending request went stale).
    Expired,
    /// The device reported a failure.
    Failed,
}

impl TunnelStateKind {
    /// Every state, in the order of a tunnel's life.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Approved,
        Self::Connected,
        Self::Stopped,
        Self::Expired,
        Self::Failed,
    ];

    /// The state's one name, as the CLI prints it, `status --json` and the
    /// metrics give it and the store counts it ("connected").
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Connected => "connected",
            Self::Stopped => "stopped",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// True for states a tunnel never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Expired | Self::Failed)
    }
}

/// Why a tunnel ended, as reported by whoever ended it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum StopReason {
    /// The device owner pressed stop.
    Owner,
    /// An admin stopped it.
    Admin,
    /// The tunnel's duration ran out.
    Expired,
    /// The device refused the approval (with what it found wrong).
    Refused(BoundedString<200>),
    /// The device failed to bring the tunnel up.
    Failed(BoundedString<200>),
}

#[cfg(test)]
mod tests {
    use super::TunnelStateKind;

    #[test]
    fn each_state_has_its_own_lowercase_name() {
        let names = TunnelStateKind::ALL.map(TunnelStateKind::name);
        assert_eq!(
            names,
            [
                "pending",
                "approved",
                "connected",
                "stopped",
                "expired",
                "failed"
            ]
        );
    }
}
