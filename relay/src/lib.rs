//! `support-relay`: the hub's blind relay.
//!
//! WireGuard runs end to end between the admin and the device; the relay
//! only moves their UDP datagrams between the two endpoints of one tunnel. It
//! holds no key that could read or forge traffic: its configuration is the
//! two peers' WireGuard *public* keys, used only to tell which side a
//! handshake message comes from (by its `mac1`, which is keyed with the
//! receiver's public key).
//!
//! * [`wire`]: WireGuard message framing and `mac1` checks.
//! * [`relay`]: the sans-IO core: datagram and time in, forward or drop out.
//! * [`rate_limit`]: token buckets for handshake messages.
#![forbid(unsafe_code)]

pub mod rate_limit;
pub mod relay;
pub mod wire;
