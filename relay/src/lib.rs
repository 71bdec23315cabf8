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
//! * [`batch`]: the socket read and written a batch of datagrams at a time.
#![forbid(unsafe_code)]

pub mod batch;
pub mod rate_limit;
pub mod relay;
pub mod wire;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use batch::Batch;
use relay::{Relay, RelayConfig, Side, Stats};

/// Binds the relay's UDP socket with large kernel buffers (a whole TCP
/// window can arrive as one burst; the kernel caps the size at
/// `net.core.rmem_max`) and UDP GRO where the kernel has it ([`batch`]).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = s.set_send_buffer_size(4 * 1024 * 1024);
    s.bind(&addr.into())?;
    let s: UdpSocket = s.into();
    // Best effort: without it (before Linux 5.0) datagrams come one by one.
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::UdpGroSegment, &true);
    Ok(s)
}

/// Relays on `socket` until `deadline` (the tunnel's expiry) or `stop`.
/// One thread, a batch of datagrams per system call ([`batch`]), no
/// allocation per datagram. `log` gets endpoint changes and
/// a stats line a minute.
pub fn serve(
    socket: &UdpSocket,
    config: &RelayConfig,
    deadline: Instant,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Stats> {
    let start = Instant::now();
    let mut relay = Relay::new(config, start);
    let mut batch = Batch::new(socket);
    let mut last_report = start;
    let mut known = [None, None];
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            return Ok(relay.stats());
        }
        socket.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))))?;
        match batch.receive(socket) {
            Ok(_) => {}
            // With a receive timeout set, Linux ends the call with EINTR
            // when the process is stopped and continued (signal(7)), even
            // without a signal handler: keep relaying.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // ICMP errors from a peer that went away surface here; keep relaying.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        for i in 0..batch.len() {
            let Some((from, d)) = batch.datagram(i) else {
                continue;
            };
            if let Ok(targets) = relay.handle(now, from, d) {
                for to in targets.iter() {
                    batch.forward(i, to);
                }
            }
        }
        batch.send(socket, &mut |to, e| {
            log(&format!("send to {to} failed: {e}"))
        });
        for (i, side) in [Side::Device, Side::Admin].into_iter().enumerate() {
            let ep = relay.endpoint(side);
            if ep != known[i] {
                log(&format!(
                    "{side:?} endpoint is now {}",
                    ep.map_or("-".into(), |e| e.to_string())
                ));
                known[i] = ep;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            log(&format!("{:?}", relay.stats()));
            last_report = Instant::now();
        }
    }
}
