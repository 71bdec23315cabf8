//! Buffer profiles: how much memory each connection may use, chosen per role.

/// Per-connection TCP buffers and connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferProfile {
    /// A name for logs and benchmarks.
    pub name: &'static str,
    /// TCP receive buffer per connection (bytes): the most in flight towards us.
    pub tcp_rx: usize,
    /// TCP send buffer per connection (bytes).
    pub tcp_tx: usize,
    /// The most connections at once; more are refused.
    pub max_connections: usize,
    /// Listening sockets kept per port (smoltcp has no accept backlog).
    pub listen_pool: usize,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// UDP socket buffers asked of the kernel (it caps them at
    /// `net.core.rmem_max`/`wmem_max`): a full TCP window arrives as one
    /// burst, and a dropped burst costs a retransmission timeout.
    pub udp_buffer: usize,
}

impl BufferProfile {
    /// The device's default. A window must cover the bandwidth-delay
    /// product and the round trip or two a repair takes: 2 MiB keeps
    /// 0.7× kernel TCP or better up to 150 ms and 1% loss (the WAN bench,
    /// ARCHITECTURE.md "The tunnel peer"); 4 MiB was measured too and gains
    /// little but 2 MiB more resident memory during a bulk transfer. The
    /// send buffer is 1.5 MiB: a device's uplink is the slower side of a
    /// home connection, 1.5 MiB still covers 80 Mbit/s at 150 ms, and a
    /// bulk send through a fast path laps the whole ring (the agent's peak
    /// under iperf3 stays within its 4 MB; cross/FOOTPRINT.md). The buffers
    /// are allocated zeroed and the rings start again at their beginning
    /// whenever they empty, so an SSH session costs what it moves; a bulk
    /// transfer holds up to its window while it runs.
    pub const DEVICE: BufferProfile = BufferProfile {
        name: "device",
        tcp_rx: 2 * 1024 * 1024,
        tcp_tx: 3 * 512 * 1024,
        max_connections: 32,
        listen_pool: 4,
        idle_timeout: std::time::Duration::from_secs(2 * 3600),
        udp_buffer: 4 * 1024 * 1024,
    };

    /// The admin's: a laptop moving logs or images, also far away.
    pub const ADMIN: BufferProfile = BufferProfile {
        name: "admin",
        tcp_rx: 2 * 1024 * 1024,
        tcp_tx: 2 * 1024 * 1024,
        max_connections: 64,
        listen_pool: 4,
        idle_timeout: std::time::Duration::from_secs(2 * 3600),
        udp_buffer: 4 * 1024 * 1024,
    };
}
