//! The device's request: what it asks for, with the keys and the request tag.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec, FixedBytes};
use crate::codec::Message;
use crate::ids::TunnelId;
use crate::kem::KEM_ENCAPSULATION_KEY_LEN;
use crate::request_tag::{self, RequestTag};
use crate::tunnel_keys::{DevicePublicKeys, DeviceTunnelKeys};

/// The most ports one tunnel can expose.
pub const MAX_PORTS: usize = 16;
/// How long a request stays approvable unless the device says otherwise.
pub const DEFAULT_PENDING_WINDOW_SECS: u32 = 24 * 3600;
/// The shortest pending window the control plane keeps.
pub const MIN_PENDING_WINDOW_SECS: u32 = 60;
/// The longest pending window (DESIGN section 4: 14 days, as the original kept a request).
pub const MAX_PENDING_WINDOW_SECS: u32 = 14 * 24 * 3600;

/// What the device says about itself; shown to the engineer, covered by the tag.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct DeviceFacts {
    /// The device's hostname.
    pub hostname: BoundedString<64>,
    /// The product model.
    pub model: BoundedString<64>,
    /// The firmware (or OS) version.
    pub firmware: BoundedString<64>,
    /// The support agent's version.
    pub agent_version: BoundedString<32>,
}

/// Everything the device asks for, except the tag. The tag covers all of it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct RequestBody {
    /// The tunnel id the device chose.
    pub tunnel_id: TunnelId,
    /// The tunnel's control-channel credential (Noise static public key).
    pub credential: FixedBytes<32>,
    /// The device's WireGuard public key.
    pub wireguard: FixedBytes<32>,
    /// The device's ML-KEM-768 encapsulation key.
    pub kem: FixedBytes<KEM_ENCAPSULATION_KEY_LEN>,
    /// Facts about the device.
    pub facts: DeviceFacts,
    /// The longest the tunnel may live once connected, in seconds.
    pub duration_secs: u32,
    /// The device ports support may reach.
    pub ports: BoundedVec<u16, MAX_PORTS>,
    /// The owner's note to support.
    pub note: BoundedString<256>,
    /// How long the request stays approvable, in seconds (the control plane
    /// keeps it within [`MIN_PENDING_WINDOW_SECS`, `MAX_PENDING_WINDOW_SECS`]).
    pub pending_window_secs: u32,
}

/// The device's request as sent to the control plane.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct TunnelRequest {
    /// What is asked for.
    pub body: RequestBody,
    /// MAC over `body`, keyed from the one-time secret.
    pub tag: RequestTag,
}

impl Message for TunnelRequest {
    const KIND: u8 = 0x01;
    const NAME: &'static str = "tunnel request";
}

impl TunnelRequest {
    /// Builds and tags the request for the tunnel whose keys are `keys`.
    pub fn new(
        keys: &DeviceTunnelKeys,
        facts: DeviceFacts,
        duration_secs: u32,
        ports: BoundedVec<u16, MAX_PORTS>,
        note: BoundedString<256>,
    ) -> Self {
        let public = keys.public_keys();
        let body = RequestBody {
            tunnel_id: keys.tunnel_id(),
            credential: FixedBytes(public.credential),
            wireguard: FixedBytes(public.wireguard),
            kem: public.kem,
            facts,
            duration_secs,
            ports,
            note,
            pending_window_secs: DEFAULT_PENDING_WINDOW_SECS,
        };
        let tag = request_tag::compute(&keys.one_time_secret(), &body);
        Self { body, tag }
    }

    /// The same request, approvable for `secs` instead of the default (tagged again).
    pub fn with_pending_window(mut self, keys: &DeviceTunnelKeys, secs: u32) -> Self {
        self.body.pending_window_secs = secs;
        self.tag = request_tag::compute(&keys.one_time_secret(), &self.body);
        self
    }

    /// The device's public keys as this request states them.
    pub fn device_public_keys(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            credential: self.body.credential.0,
            wireguard: self.body.wireguard.0,
            kem: self.body.kem,
        }
    }
}
