//! The device role: a pool of listening smoltcp sockets per allowlisted
//! port (smoltcp has no accept backlog), each one that gets a SYN promoted
//! to a connection to the port's local target.

use mio::net::TcpStream;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::pump::tcp_socket;
use super::{Engine, Event, Role};

impl Engine {
    /// Fills each allowlisted port's pool of listening sockets.
    pub(super) fn open_pools(&mut self) {
        if let Role::Device { forwards } = self.config.role.clone() {
            for f in forwards {
                for _ in 0..self.config.profile.listen_pool {
                    self.add_listening(f.port);
                }
            }
        }
    }

    fn add_listening(&mut self, port: u16) {
        let mut s = tcp_socket(&self.config.profile);
        if s.listen(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.config.local_ip)),
            port,
        })
        .is_ok()
        {
            let h = self.sockets.add(s);
            self.pool.push((port, h));
        }
    }

    /// A listening socket that got a SYN becomes a connection to the
    /// port's local target, and the pool is refilled.
    pub(super) fn promote_accepted(&mut self) {
        let Role::Device { forwards } = &self.config.role else {
            return;
        };
        // Runs after every ingress packet: nothing is allocated or cloned
        // unless a socket left Listen (a Vec allocates on its first push).
        let mut promoted = Vec::new();
        for (i, (port, h)) in self.pool.iter().enumerate() {
            let s = self.sockets.get::<tcp::Socket>(*h);
            if s.state() != tcp::State::Listen {
                let target = forwards.iter().find(|f| f.port == *port).map(|f| f.target);
                promoted.push((i, *port, *h, target));
            }
        }
        for (i, port, h, target) in promoted.into_iter().rev() {
            self.pool.remove(i);
            let ok = match target {
                Some(target) if self.conns.len() < self.config.profile.max_connections => {
                    match TcpStream::connect(target) {
                        Ok(stream) => self.register_conn(h, stream, port).is_ok(),
                        Err(e) => {
                            self.emit(Event::Refused {
                                port,
                                reason: format!("local target {target}: {e}"),
                            });
                            false
                        }
                    }
                }
                _ => {
                    self.emit(Event::Refused {
                        port,
                        reason: "connection cap reached".into(),
                    });
                    false
                }
            };
            if !ok {
                // Reset the peer's connection; the socket goes after the RST is sent.
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.reap.push(h);
            }
            self.add_listening(port);
        }
    }
}
