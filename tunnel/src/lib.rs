//! The userspace WireGuard peer shared by the agent (device role) and the
//! admin CLI (admin role): boringtun's `noise` state machine and smoltcp over
//! one UDP socket, no TUN device, no root.
//!
//! Not built yet (the data-plane issue). What exists: the tunnel MTU both
//! roles will use, so the workspace's layout is in place.
#![forbid(unsafe_code)]

/// The MTU inside the tunnel (WireGuard's overhead under a 1500-byte path MTU).
pub const TUNNEL_MTU: usize = 1420;
