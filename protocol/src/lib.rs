//! The protocol core of support-tunnel.
//!
//! Everything the device agent, the control plane, the relay and the admin CLI
//! say to each other is defined here, together with the cryptography that makes
//! the control plane untrusted bookkeeping rather than a root of trust:
//!
//! | module | what it owns |
//! |---|---|
//! | [`bounded`] | length-bounded containers used by every message field |
//! | [`codec`] | the versioned, size-limited envelope around postcard |
//! | [`ids`] | tunnel ids, approval sequence numbers, request ids |
//! | [`tunnel_keys`] | per-tunnel device and admin key material, derived from seeds |
//! | [`one_time_code`] | the code the owner passes to support out of band |
//! | [`request_tag`] | the MAC that lets the admin detect a lying control plane |
//! | [`key_text`] | 32-byte keys as 64 hexadecimal characters: the one parser |
//! | [`certificate`] | the support CA and approver certificates |
//! | [`sealing`] | the HKDF + ChaCha20-Poly1305 construction shared by boxes |
//! | [`approval_box`] | the signed, sealed approval the device verifies |
//! | [`connected_report`] | the device's sealed "connected" report with its SSH host keys |
//! | [`handoff`] | a tunnel's secrets sealed from one engineer to another |
//! | [`kem`] | ML-KEM-768 wrappers |
//! | [`hybrid_psk`] | the WireGuard PSK from the one-time secret and ML-KEM |
//! | [`control_channel`] | Noise IK request/response halves (sans-IO) |
//! | [`messages`] | every call of the flow and its answer, with stable error codes |
//! | [`state`] | the forward-only tunnel state machine |
//! | [`audit`] | the hash chain over audit records |
//!
//! With the `test-fixtures` feature, `fixtures` holds the support CA, approver
//! and approval that the workspace's tests, benches and examples share.
//!
//! Nothing here performs I/O or reads a clock: randomness and time are
//! arguments, so every function is deterministic and testable.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod approval_box;
pub mod audit;
pub mod bounded;
pub mod certificate;
pub mod codec;
pub mod connected_report;
pub mod control_channel;
pub mod duration_text;
pub mod failover;
#[cfg(feature = "test-fixtures")]
pub mod fixtures;
pub mod handoff;
pub mod hybrid_psk;
pub mod ids;
pub mod kem;
pub mod key_text;
pub mod messages;
pub mod one_time_code;
pub mod request_tag;
pub mod sealing;
pub mod state;
pub mod time_text;
pub mod tunnel_keys;

mod labels;

pub use codec::{decode, encode, CodecError, Message, MAX_MESSAGE_LEN, PROTOCOL_VERSION};
pub use ids::{ApprovalSeq, RequestId, TunnelId};
