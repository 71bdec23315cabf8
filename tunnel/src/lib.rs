//! The userspace WireGuard peer shared by the agent (device role) and the
//! admin CLI (admin role): boringtun's `noise` state machine and smoltcp's
//! TCP/IP over one UDP socket. No TUN device, no root, no kernel module.
//!
//! | module | owns |
//! |---|---|
//! | [`profile`] | named buffer profiles (device: home uplink, admin: bulk) |
//! | [`wireguard`] | the WireGuard session, its timers and the re-handshake rule (sans-IO) |
//! | [`virtual_device`] | smoltcp's `Device` over recycled packet buffers |
//! | [`ingress`] | packets into smoltcp, with an ACK every 16 |
//! | [`udp`] | the socket to the relay: connected, GRO trains or `recvmmsg` batches in, UDP GSO out |
//! | [`engine`] | the I/O loop: UDP, smoltcp, forwarded connections, events |
//!
//! The device side forwards allowlisted tunnel ports to local targets; the
//! admin side opens connections to the device, as a local listener for any
//! tool or (feature `tokio`) as an in-process stream.
#![forbid(unsafe_code)]

pub mod engine;
pub mod ingress;
pub mod profile;
pub mod udp;
pub mod virtual_device;
pub mod wireguard;

/// The MTU inside the tunnel (WireGuard's overhead under a 1500-byte path MTU).
pub const TUNNEL_MTU: usize = 1420;

pub use engine::{tcp_socket, Engine, EngineConfig, EngineHandle, Event, Forward, Role};
pub use profile::BufferProfile;
