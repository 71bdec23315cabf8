//! Identifiers: tunnel ids, approval sequence numbers, request ids.

use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// A tunnel's identity: 64 random bits chosen by the device, never sequential,
/// so one tunnel's id says nothing about another's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct TunnelId(pub u64);

impl TunnelId {
    /// Builds an id from 8 random bytes.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    /// Big-endian bytes, as bound into MACs and boxes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The name of the device's ephemeral support user for this tunnel:
    /// `support-` and the id's 16 hex digits. Random (the id is), at most 32
    /// characters as `useradd` wants, and known to the admin from the code
    /// alone, so nothing has to tell it the name.
    pub fn support_user(self) -> alloc::string::String {
        alloc::format!("support-{self}")
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({self})")
    }
}

/// A tunnel id that is not 16 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseTunnelIdError;

impl fmt::Display for ParseTunnelIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tunnel id is 16 hexadecimal digits, e.g. 3f2a9c0e11d4b7a5")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseTunnelIdError {}

impl FromStr for TunnelId {
    type Err = ParseTunnelIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseTunnelIdError);
        }
        u64::from_str_radix(s, 16)
            .map(TunnelId)
            .map_err(|_| ParseTunnelIdError)
    }
}

/// The sequence number of an approval of one tunnel. An approval may be
/// replaced (a hub relaunch) only by one with a higher number; the control
/// plane accepts a new approval only as a compare-and-set on the current one,
/// and the device never accepts a number at or below one it accepted before.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ApprovalSeq(pub u32);

impl ApprovalSeq {
    /// The first approval of a tunnel.
    pub const FIRST: ApprovalSeq = ApprovalSeq(1);

    /// The number an approval replacing this one carries.
    pub fn next(self) -> Option<ApprovalSeq> {
        self.0.checked_add(1).map(ApprovalSeq)
    }
}

impl fmt::Display for ApprovalSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A caller-chosen random id per call; a replayed call carries the same id,
/// so the control plane can answer it again instead of acting twice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct RequestId(pub u64);
