//! Resident memory of the agent daemon (the binary of this profile, so
//! `cargo bench` measures the optimized one; `SUPPORT_AGENT_BIN` measures
//! another, e.g. the static release build): idle, then with a tunnel up and
//! one SSH session, then the peak while that session moves 100 MB through
//! the tunnel; then iperf3 through the tunnel to a device port for
//! `BENCH_SECS` (default 10) each way, with the daemon's CPU seconds per GiB
//! and its peak over everything. Needs root, sshd and the control-plane
//! binary (see tests), and iperf3 for the last part.
//!
//! `cargo bench -p support-agent --bench footprint`

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::*;
use support_testkit::load::{iperf3_run, iperf3_server, status_kib as kib};
use support_testkit::{have, world::free_tcp_port};

/// The device port the approval allows for iperf3.
const IPERF_DEVICE_PORT: u16 = 5201;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let iperf_port = free_tcp_port();
    let iperf =
        have("iperf3").then(|| iperf3_server(Command::new("env"), Ipv4Addr::LOCALHOST, iperf_port));
    let settings = DeviceSettings {
        ports: vec![(IPERF_DEVICE_PORT, format!("127.0.0.1:{iperf_port}"))],
        ..DeviceSettings::default()
    };
    let w = World::new(&settings, None);
    let pid = w.device.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = kib(pid, "VmRSS:");

    let terms = Terms {
        ports: vec![22, IPERF_DEVICE_PORT],
        ..Terms::default()
    };
    let s = w.connect(&["--ports", "22,5201"], &terms);
    let out = ssh(&w.eng, &s, &w.sshd.host_key, "true");
    assert!(out.status.success());
    let mut ssh_held = ssh_command(&w.eng, &s, &w.sshd.host_key, "sleep 30", 15);
    let mut held = ssh_held
        .command
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh");
    std::thread::sleep(Duration::from_secs(3));
    let session = kib(pid, "VmRSS:");

    let started = std::time::Instant::now();
    let out = ssh(&w.eng, &s, &w.sshd.host_key, "head -c 100000000 /dev/zero");
    let took = started.elapsed();
    assert_eq!(out.stdout.len(), 100_000_000);
    let peak = kib(pid, "VmHWM:");
    let _ = held.kill();
    let _ = held.wait();

    let p = support_tunnel::BufferProfile::DEVICE;
    println!(
        "support-agent daemon ({}), buffer profile {:?}: TCP {} KiB rx / {} KiB tx per connection, at most {} connections, UDP socket buffers {} KiB",
        agent_bin(),
        p.name,
        p.tcp_rx / 1024,
        p.tcp_tx / 1024,
        p.max_connections,
        p.udp_buffer / 1024
    );
    println!("  idle daemon (VmRSS):                          {idle:>6} KiB");
    println!("  tunnel up + one SSH session (VmRSS):          {session:>6} KiB");
    println!(
        "  peak (VmHWM) with a 100 MB transfer over SSH: {peak:>6} KiB  ({:.1} MB/s through sshd)",
        100.0 / took.as_secs_f64()
    );
    match iperf {
        Some(server) => {
            let secs = std::env::var("BENCH_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            let to = s
                .peer
                .as_ref()
                .expect("admin peer")
                .forward_local("127.0.0.1:0".parse().expect("addr"), IPERF_DEVICE_PORT)
                .expect("forward");
            let up = iperf3_run(Command::new("env"), to, pid, secs, false);
            let down = iperf3_run(Command::new("env"), to, pid, secs, true);
            println!(
                "  iperf3 through the tunnel, {secs} s each way:   up {:.1} MB/s, down {:.1} MB/s; daemon CPU {:.2} s/GB up, {:.2} s/GB down",
                up.mb_s, down.mb_s, up.cpu_s_gb, down.cpu_s_gb
            );
            println!(
                "  peak (VmHWM) over all of the above:           {:>6} KiB",
                kib(pid, "VmHWM:")
            );
            drop(server);
        }
        None => println!("  iperf3: not measured (scripts/setup installs it)"),
    }
    let _ = w.device.run(&["stop", "--all"]);
}
