//! The audit log's hash chain.
//!
//! Each record's hash covers the previous record's hash and the record's own
//! canonical bytes, so editing, deleting or reordering any record breaks
//! every hash after it. The control plane keeps the chain; anyone holding an
//! export can check it with [`verify_chain`].

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, FixedBytes};
use crate::codec::{encode_body, Message};
use crate::ids::{ApprovalSeq, TunnelId};
use crate::labels;
use crate::messages::StopReason;

/// Who did something.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum Actor {
    /// An enrolled admin, by name.
    Admin(BoundedString<64>),
    /// The device of the tunnel the record is about.
    Device,
    /// The control plane itself (expiry sweeper, operator commands).
    System,
}

/// What happened.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub enum AuditAction {
    /// A device requested a tunnel.
    Requested,
    /// An admin approved (or re-approved).
    Approved(ApprovalSeq),
    /// The device reported connected.
    Connected(ApprovalSeq),
    /// The tunnel was stopped.
    Stopped(StopReason),
    /// The tunnel expired.
    Expired,
    /// An admin key was enrolled.
    AdminAdded(BoundedString<64>),
    /// An admin key was removed.
    AdminRemoved(BoundedString<64>),
    /// The actor handed the tunnel off to this admin (a sealed package waits
    /// in the mailbox).
    HandedOff(BoundedString<64>),
    /// The actor picked up the tunnel handed off by this admin.
    PickedUp(BoundedString<64>),
}

/// One audit record, without its hash.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The control plane's time, Unix seconds.
    pub at: u64,
    /// Who.
    pub actor: Actor,
    /// Which tunnel, if any.
    pub tunnel_id: Option<TunnelId>,
    /// What.
    pub action: AuditAction,
}

/// An audit record with its place in the chain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct AuditRecord {
    /// The record.
    pub entry: AuditEntry,
    /// The previous record's hash (zeros for the first).
    pub prev_hash: FixedBytes<32>,
    /// This record's hash.
    pub hash: FixedBytes<32>,
}

impl Message for AuditRecord {
    const KIND: u8 = 0x07;
    const NAME: &'static str = "audit record";
}

/// The hash of `entry` following `prev_hash`.
pub fn chain_hash(prev_hash: &[u8; 32], entry: &AuditEntry) -> [u8; 32] {
    labels::labelled_hash(labels::AUDIT_CHAIN, &[prev_hash, &encode_body(entry)])
}

impl AuditRecord {
    /// Appends `entry` after the record whose hash is `prev_hash`.
    pub fn link(prev_hash: [u8; 32], entry: AuditEntry) -> Self {
        let hash = chain_hash(&prev_hash, &entry);
        Self {
            entry,
            prev_hash: FixedBytes(prev_hash),
            hash: FixedBytes(hash),
        }
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBreak {
    /// The `seq` of the first record that does not fit.
    pub seq: u64,
}

impl core::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "the audit chain breaks at record {}: a record was edited, removed or reordered",
            self.seq
        )
    }
}

/// Checks that `records` form an unbroken chain starting after `start_hash`.
pub fn verify_chain<'a>(
    start_hash: [u8; 32],
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<[u8; 32], ChainBreak> {
    let mut prev = start_hash;
    let mut expected_seq: Option<u64> = None;
    for r in records {
        let seq_ok = expected_seq.is_none_or(|s| s == r.entry.seq);
        if !seq_ok || r.prev_hash.0 != prev || chain_hash(&prev, &r.entry) != r.hash.0 {
            return Err(ChainBreak { seq: r.entry.seq });
        }
        prev = r.hash.0;
        expected_seq = r.entry.seq.checked_add(1);
    }
    Ok(prev)
}
