//! Domain-separation labels. Every key derivation, MAC and signature in the
//! protocol uses its own label, so no output of one can be replayed as another.

pub(crate) const DEVICE_KEYS: &[u8] = b"support-tunnel v1 device tunnel keys";
pub(crate) const ADMIN_KEYS: &[u8] = b"support-tunnel v1 admin tunnel keys";
pub(crate) const REQUEST_TAG: &[u8] = b"support-tunnel v1 request tag";
pub(crate) const CERTIFICATE: &[u8] = b"support-tunnel v1 approver certificate";
pub(crate) const APPROVAL_BOX: &[u8] = b"support-tunnel v1 approval box";
pub(crate) const APPROVAL_SIGNATURE: &[u8] = b"support-tunnel v1 approval signature";
pub(crate) const CONNECTED_REPORT: &[u8] = b"support-tunnel v1 connected report";
pub(crate) const HYBRID_PSK: &[u8] = b"support-tunnel v1 hybrid psk";
pub(crate) const BOX_HASH: &[u8] = b"support-tunnel v1 box hash";
pub(crate) const KEM_KEY_HASH: &[u8] = b"support-tunnel v1 kem key hash";
pub(crate) const KEM_CIPHERTEXT_HASH: &[u8] = b"support-tunnel v1 kem ciphertext hash";
pub(crate) const AUDIT_CHAIN: &[u8] = b"support-tunnel v1 audit chain";
pub(crate) const CHANNEL_KEY_ID: &[u8] = b"support-tunnel v1 control key id";
pub(crate) const CHANNEL_EPHEMERAL: &[u8] = b"support-tunnel v1 control ephemeral";
pub(crate) const HANDOFF_KEY: &[u8] = b"support-tunnel v1 handoff key";
pub(crate) const HANDOFF_BOX: &[u8] = b"support-tunnel v1 handoff package";
pub(crate) const HANDOFF_SIGNATURE: &[u8] = b"support-tunnel v1 handoff signature";

/// SHA-256 over a label and a list of parts, each length-prefixed so that
/// no two different part lists hash the same bytes.
pub(crate) fn labelled_hash(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((label.len() as u32).to_be_bytes());
    h.update(label);
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}
