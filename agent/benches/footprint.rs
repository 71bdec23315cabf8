//! Resident memory of the agent daemon (the binary of this profile, so
//! `cargo bench` measures the optimized one; `SUPPORT_AGENT_BIN` measures
//! another, e.g. the static release build): idle, then with a tunnel up and
//! one SSH session, then the peak while that session moves 100 MB through
//! the tunnel. Needs root, sshd and the control-plane binary (see tests).
//!
//! `cargo bench -p support-agent --bench footprint`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;

fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let w = World::new(&DeviceSettings::default(), None);
    let pid = w.device.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = kib(pid, "VmRSS:");

    let s = w.connect(&[], &Terms::default());
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
    let _ = w.device.run(&["stop", "--all"]);
}
