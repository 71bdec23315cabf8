//! The engine as other threads see it: [`EngineHandle`] sends commands in
//! (listen, shut down) and wakes the loop; [`Event`]s come out for the log.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

/// What happened, for the agent's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first authenticated datagram arrived: the handshake completed.
    TunnelUp,
    /// A connection through the tunnel opened.
    Opened {
        /// Connection number.
        id: u64,
        /// The device port.
        port: u16,
    },
    /// A connection closed, with its byte counts.
    Closed {
        /// Connection number.
        id: u64,
        /// The device port.
        port: u16,
        /// Bytes from the tunnel to the local side.
        bytes_in: u64,
        /// Bytes from the local side into the tunnel.
        bytes_out: u64,
        /// How long it was open.
        duration: Duration,
    },
    /// A connection was refused (cap reached, or the local target refused).
    Refused {
        /// The device port.
        port: u16,
        /// Why.
        reason: String,
    },
}

/// What a handle asks of the loop.
pub(super) enum Command {
    Listen {
        listener: std::net::TcpListener,
        remote_port: u16,
        /// Closed after its first connection (`open`).
        once: bool,
    },
    Shutdown,
}

/// Controls a running engine from other threads.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) commands: Sender<Command>,
    pub(super) waker: Arc<Waker>,
    /// The UDP address the engine bound.
    pub local_udp: SocketAddr,
}

impl EngineHandle {
    /// Admin role: listens on `local` (e.g. 127.0.0.1:0) and forwards each
    /// accepted connection to `remote_port` on the device. Returns the bound address.
    pub fn forward_local(&self, local: SocketAddr, remote_port: u16) -> io::Result<SocketAddr> {
        self.listen(local, remote_port, false)
    }

    fn listen(&self, local: SocketAddr, remote_port: u16, once: bool) -> io::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(local)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        self.commands
            .send(Command::Listen {
                listener,
                remote_port,
                once,
            })
            .map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel engine has stopped")
            })?;
        self.waker.wake()?;
        Ok(addr)
    }

    /// Admin role, feature `tokio`: a stream to `remote_port` on the device,
    /// implementing tokio's `AsyncRead + AsyncWrite`. It is a loopback
    /// connection into this engine (one internal listener per call, closed
    /// after its one connection).
    #[cfg(feature = "tokio")]
    pub async fn open(&self, remote_port: u16) -> io::Result<tokio::net::TcpStream> {
        let addr = self.listen(SocketAddr::from(([127, 0, 0, 1], 0)), remote_port, true)?;
        tokio::net::TcpStream::connect(addr).await
    }

    /// Stops the engine: every connection is closed.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.waker.wake();
    }
}
