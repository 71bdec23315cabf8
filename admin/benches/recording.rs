//! What session recording costs, on the assembled system: scp of 100 MB
//! up to the device (SFTP, the default) through the tunnel, RUNS times
//! (default 3), with sshd as shipped and with the recording drop-in; then a
//! 100 MB `cat` to a recorded terminal. Reports scp's median MB/s both ways
//! and the cost, the agent daemon's peak resident memory (VmHWM) and the
//! session recorder's (sampled). Needs root, sshd and the workspace's
//! binaries (see the tests); the release ones with
//! `cargo build --release --workspace` first.
//!
//! `cargo bench -p support-admin --bench recording [-- RUNS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::recorded::{recorded_lab, ssh_config};
use common::*;

fn kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the largest VmRSS of any session recorder until stopped.
fn recorder_sampler() -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), peak.clone());
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if cmd.split(|b| *b == 0).any(|a| a == b"record-session") {
                    let pid = e.file_name().to_string_lossy().into_owned();
                    p.fetch_max(kib(&pid, "VmRSS:"), Ordering::SeqCst);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    (stop, peak, t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let scratch = tempdir();
    let big = random_file(scratch.path(), "big", 100);
    let mut rows = Vec::new();
    for recorded in [false, true] {
        let w = recorded_lab("", recorded);
        let lab = &w.lab;
        let (id, _) = lab.approve(&[], &["--yes"]);
        let cfg = ssh_config(lab, &id);
        let (stop, peak, sampler) = recorder_sampler();
        let mut speeds = Vec::new();
        for i in 0..runs {
            let t = Instant::now();
            let out = Command::new("scp")
                .args(["-F", &cfg, "-o", "BatchMode=yes", "-q"])
                .arg(&big)
                .arg(format!("support-{id}:work/big{i}"))
                .stdin(Stdio::null())
                .output()
                .expect("scp");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            speeds.push(100.0 / t.elapsed().as_secs_f64());
        }
        let scp_peak = kib(&lab.device.pid().to_string(), "VmHWM:");
        let scp_recorder = peak.load(Ordering::SeqCst);
        let t = Instant::now();
        let out = Command::new("ssh")
            .args([
                "-F",
                &cfg,
                "-o",
                "BatchMode=yes",
                "-tt",
                &format!("support-{id}"),
            ])
            .arg("head -c 100000000 /dev/zero | tr '\\0' a")
            .stdin(Stdio::null())
            .output()
            .expect("ssh");
        assert!(out.stdout.len() >= 100_000_000);
        let cat_mbps = 100.0 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let _ = sampler.join();
        let daemon_peak = kib(&lab.device.pid().to_string(), "VmHWM:");
        rows.push((
            recorded,
            median(speeds),
            scp_peak,
            daemon_peak,
            scp_recorder,
            peak.load(Ordering::SeqCst),
            cat_mbps,
        ));
        ok(&lab.eng.run(&["stop", &id]));
    }
    println!(
        "recording bench ({runs} scp runs of 100 MB each way; agent {})",
        agent_bin()
    );
    for (recorded, scp, scp_peak, peak, rec_scp, rec_peak, cat) in &rows {
        println!(
            "  {:<13} scp up {scp:>6.1} MB/s (median); daemon VmHWM {scp_peak} KiB after scp, {peak} KiB after a 100 MB cat to a terminal ({cat:.1} MB/s); recorder peak RSS {rec_scp} KiB (scp), {rec_peak} KiB (all)",
            if *recorded { "recorded" } else { "not recorded" }
        );
    }
    if let [plain, rec] = rows.as_slice() {
        println!(
            "  recording costs {:.1}% of scp's throughput",
            (1.0 - rec.1 / plain.1) * 100.0
        );
    }
}
