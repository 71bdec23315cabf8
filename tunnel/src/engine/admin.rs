//! The admin role: local listeners (`forward_local`, and `open`'s one-shot
//! ones) whose accepted clients become tunnel connections to the device.

use std::io;

use mio::net::TcpListener;
use mio::{Interest, Token};
use smoltcp::wire::IpAddress;

use super::pump::tcp_socket;
use super::{Engine, Event};

/// A local listener and the device port its connections go to.
pub(super) struct Listener {
    listener: TcpListener,
    remote_port: u16,
    /// `open`'s listener: closed after its first connection.
    once: bool,
    /// mio said it is readable, and `accept` has not yet run dry.
    pub(super) ready: bool,
}

impl Engine {
    /// Starts polling a listener a handle bound.
    pub(super) fn add_listener(
        &mut self,
        listener: std::net::TcpListener,
        remote_port: u16,
        once: bool,
    ) -> io::Result<()> {
        let mut l = TcpListener::from_std(listener);
        let t = Token(self.next_listener);
        self.next_listener += 1;
        self.poll
            .registry()
            .register(&mut l, t, Interest::READABLE)?;
        self.listeners.insert(
            t,
            Listener {
                listener: l,
                remote_port,
                once,
                ready: true,
            },
        );
        Ok(())
    }

    /// Local clients become tunnel connections to the device.
    pub(super) fn accept_local(&mut self) -> bool {
        let mut accepted = Vec::new();
        let mut spent = Vec::new();
        for (t, l) in self.listeners.iter_mut().filter(|(_, l)| l.ready) {
            loop {
                match l.listener.accept() {
                    Ok((s, _)) => {
                        accepted.push((s, l.remote_port));
                        if l.once {
                            // `open`'s listener: one connection, then gone.
                            spent.push(*t);
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        l.ready = false;
                        break;
                    }
                    // Out of descriptors or the like: tried again next turn.
                    Err(_) => break,
                }
            }
        }
        for t in spent {
            if let Some(mut l) = self.listeners.remove(&t) {
                let _ = self.poll.registry().deregister(&mut l.listener);
            }
        }
        let any = !accepted.is_empty();
        for (stream, port) in accepted {
            if self.conns.len() >= self.config.profile.max_connections {
                self.emit(Event::Refused {
                    port,
                    reason: "connection cap reached".into(),
                });
                continue;
            }
            let mut s = tcp_socket(&self.config.profile);
            self.next_port = if self.next_port >= 65000 {
                49152
            } else {
                self.next_port + 1
            };
            let remote = (IpAddress::Ipv4(self.config.peer_ip), port);
            if s.connect(self.iface.context(), remote, self.next_port)
                .is_err()
            {
                continue;
            }
            let h = self.sockets.add(s);
            if self.register_conn(h, stream, port).is_err() {
                self.sockets.remove(h);
            }
        }
        any
    }
}
