//! Our relay (`support-relay`'s library) on loopback, in a thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support_relay::relay::RelayConfig;

/// Our relay on loopback, in a thread; restartable on the same port.
pub struct RelayThread {
    /// Where it listens.
    pub addr: SocketAddr,
    config: RelayConfig,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RelayThread {
    /// Starts a relay for the device and admin WireGuard public keys.
    pub fn start(device: [u8; 32], admin: [u8; 32]) -> RelayThread {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), device, admin)
    }

    /// The same, on a given address.
    pub fn start_on(addr: SocketAddr, device: [u8; 32], admin: [u8; 32]) -> RelayThread {
        let config = RelayConfig {
            device_key: device,
            admin_key: admin,
            handshakes_per_source: 20,
            handshakes_total: 200,
        };
        let mut r = RelayThread {
            addr,
            config,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let socket = support_relay::bind(self.addr).expect("relay binds");
        self.addr = socket.local_addr().expect("addr");
        let (config, stop) = (self.config.clone(), Arc::new(AtomicBool::new(false)));
        self.stop = stop.clone();
        self.thread = Some(std::thread::spawn(move || {
            let _ = support_relay::serve(
                &socket,
                &config,
                Instant::now() + Duration::from_secs(6 * 3600),
                &stop,
                &mut |_| {},
            );
        }));
    }

    /// Stops the relay (it forgets both endpoints) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.halt();
        self.launch();
    }

    /// Stops it.
    pub fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        self.halt();
    }
}
