//! The connection pump: each tunnel connection is a smoltcp socket paired
//! with a local TCP stream, and bytes move between them by reading straight
//! into smoltcp's send buffer and writing straight out of its receive
//! buffer. Both roles register their connections here.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::{smol_now, Engine, Event};
use crate::profile::BufferProfile;

/// A connection whose peer stops acknowledging is aborted after this.
const TCP_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on tunnel connections, so a dead peer is noticed while idle.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// The queueing delay a bulk transfer may add to the path (or a quarter of
/// the path's round trip, if more): an SSH keystroke next to a transfer
/// waits behind at most this much of it.
const QUEUE_DELAY_TARGET: Duration = Duration::from_millis(5);
/// A bulk stream from the tunnel is written to the local stream once this
/// much has arrived (or `WRITE_HOLD` after its first byte), so the local
/// side wakes once per 64 KiB rather than once per turn of the engine.
const WRITE_BATCH: usize = 64 * 1024;
/// Less than this waiting is not a bulk stream (a keystroke, a command's
/// answer): it is written at once.
const WRITE_AT_ONCE_BELOW: usize = 8 * 1024;
/// How long a bulk stream's bytes may wait to fill a batch.
const WRITE_HOLD: Duration = Duration::from_millis(1);

/// A TCP socket as every tunnel connection has it: the profile's buffers,
/// Nagle off, the congestion controller, the timeout and the keepalive.
/// Public so the simulations (`benches/tcp_sim.rs`) run the same sockets.
pub fn tcp_socket(p: &BufferProfile) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; p.tcp_rx]),
        tcp::SocketBuffer::new(vec![0; p.tcp_tx]),
    );
    s.set_congestion_control(tcp::CongestionControl::Reno);
    s.set_timeout(Some(TCP_TIMEOUT.into()));
    s.set_keep_alive(Some(TCP_KEEPALIVE.into()));
    s.set_nagle_enabled(false);
    s.set_queue_delay_target(Some(QUEUE_DELAY_TARGET.into()));
    s
}

/// One tunnel connection and its local stream.
pub(super) struct Conn {
    id: u64,
    port: u16,
    handle: SocketHandle,
    stream: TcpStream,
    opened: Instant,
    last_active: Instant,
    bytes_in: u64,
    bytes_out: u64,
    local_eof: bool,
    remote_eof: bool,
    /// mio said the stream is readable, and a read has not yet run dry.
    readable: bool,
    /// mio said the stream is writable, and a write has not yet been refused.
    writable: bool,
    /// Since when bytes from the tunnel wait to fill a write batch.
    held_since: Option<Instant>,
}

impl Conn {
    /// Records readiness from a mio event (edge-triggered: kept until a
    /// call would block).
    pub(super) fn note_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }
}

impl Engine {
    /// Pairs the smoltcp socket `handle` with its local `stream`.
    pub(super) fn register_conn(
        &mut self,
        handle: SocketHandle,
        mut stream: TcpStream,
        port: u16,
    ) -> io::Result<()> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            token,
            Conn {
                id,
                port,
                handle,
                stream,
                opened: Instant::now(),
                last_active: Instant::now(),
                bytes_in: 0,
                bytes_out: 0,
                local_eof: false,
                remote_eof: false,
                readable: true,
                writable: true,
                held_since: None,
            },
        );
        self.emit(Event::Opened { id, port });
        Ok(())
    }

    /// Pumps every connection, closes the finished and the idle ones.
    /// Returns whether anything moved; `self.write_hold` becomes the
    /// earliest time a held write is due.
    pub(super) fn pump_all(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut done = Vec::new();
        let idle_timeout = self.config.profile.idle_timeout;
        self.write_hold = None;
        for (t, c) in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            let (moved, mut finished) = pump(c, s, now);
            if let Some(since) = c.held_since {
                let due = since + WRITE_HOLD;
                self.write_hold = Some(self.write_hold.map_or(due, |d| d.min(due)));
            }
            if moved {
                c.last_active = now;
            } else if now.saturating_duration_since(c.last_active) >= idle_timeout {
                s.abort();
                finished = true;
            }
            progress |= moved;
            if finished {
                done.push(*t);
            }
        }
        for t in done {
            if let Some(mut c) = self.conns.remove(&t) {
                let _ = self.poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(Shutdown::Both);
                // Removed after the next egress poll, so a reset still goes out.
                self.reap.push(c.handle);
                let e = Event::Closed {
                    id: c.id,
                    port: c.port,
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                    duration: c.opened.elapsed(),
                };
                self.emit(e);
                progress = true;
            }
        }
        progress
    }

    /// Resets every connection and sends the resets (shutdown).
    pub(super) fn close_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.remove(&t) {
                let _ = c.stream.shutdown(Shutdown::Both);
                self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            }
        }
        let _ = self
            .iface
            .poll_egress(smol_now(self.started), &mut self.dev, &mut self.sockets);
        let _ = self.encrypt_outgoing();
    }
}

/// What one smoltcp `send` or `recv` that read from or wrote to the local
/// stream came to.
enum Step {
    /// This many bytes moved (0: the local stream is at its end, or took nothing).
    Moved(usize),
    /// The stream or the socket has no more for now.
    Blocked,
    /// Interrupted: try again.
    Again,
    /// The stream or the socket failed: the connection is aborted.
    Failed,
}

impl Step {
    fn of<E>(r: Result<io::Result<usize>, E>) -> Step {
        match r {
            Ok(Ok(n)) => Step::Moved(n),
            Ok(Err(e))
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::NotConnected =>
            {
                Step::Blocked
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Ok(Err(_)) | Err(_) => Step::Failed,
        }
    }
}

/// Whether bytes from the tunnel wait for more before they are written:
/// a bulk stream's, until a batch has arrived or for `WRITE_HOLD`.
fn hold_write(c: &mut Conn, s: &tcp::Socket<'static>, now: Instant) -> bool {
    let queued = s.recv_queue();
    let bulk = (WRITE_AT_ONCE_BELOW..WRITE_BATCH).contains(&queued) && s.may_recv();
    if !bulk {
        c.held_since = None;
        return false;
    }
    let since = *c.held_since.get_or_insert(now);
    if now.saturating_duration_since(since) < WRITE_HOLD {
        return true;
    }
    c.held_since = None;
    false
}

/// Moves bytes both ways between a tunnel socket and its local stream.
/// Returns (bytes moved?, connection finished?).
fn pump(c: &mut Conn, s: &mut tcp::Socket<'static>, now: Instant) -> (bool, bool) {
    let mut moved = false;
    // Local -> tunnel, read straight into smoltcp's send buffer, no further
    // ahead than the window needs (a later write, a keystroke after a burst
    // of output, does not wait behind megabytes of it).
    while c.readable && !c.local_eof && s.can_send() && s.send_queue() < s.send_backlog_hint() {
        let r = s.send(|buf| match c.stream.read(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match Step::of(r) {
            Step::Moved(0) => {
                c.local_eof = true;
                s.close();
            }
            Step::Moved(n) => {
                c.bytes_out += n as u64;
                moved = true;
            }
            Step::Blocked => {
                c.readable = false;
                break;
            }
            Step::Again => continue,
            Step::Failed => {
                s.abort();
                return (true, true);
            }
        }
    }
    // Tunnel -> local.
    while c.writable && s.can_recv() && !hold_write(c, s, now) {
        let r = s.recv(|buf| match c.stream.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match Step::of(r) {
            Step::Moved(0) => break,
            Step::Blocked => {
                c.writable = false;
                break;
            }
            Step::Moved(n) => {
                c.bytes_in += n as u64;
                moved = true;
            }
            Step::Again => continue,
            Step::Failed => {
                s.abort();
                return (true, true);
            }
        }
    }
    if !c.remote_eof
        && !s.may_recv()
        && s.recv_queue() == 0
        && s.state() != tcp::State::SynSent
        && s.state() != tcp::State::SynReceived
        && s.state() != tcp::State::Listen
    {
        c.remote_eof = true;
        let _ = c.stream.shutdown(Shutdown::Write);
        moved = true;
    }
    let finished = match s.state() {
        tcp::State::Closed => true,
        tcp::State::TimeWait => c.local_eof,
        _ => c.local_eof && c.remote_eof && !s.is_active(),
    };
    (moved, finished)
}
