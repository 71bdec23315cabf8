//! Load for the benchmarks: iperf3 endpoints, and what a process spent
//! under it (CPU time and memory from `/proc`).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

/// A running `iperf3 -s`, stopped when dropped (also when a bench panics).
pub struct Iperf3Server(Child);

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iperf3 -s` from `cmd` (e.g. `Command::new("env")`, or a host's
/// `exec`) on `bind:port`, and returns once it says it listens.
pub fn iperf3_server(mut cmd: Command, bind: Ipv4Addr, port: u16) -> Iperf3Server {
    let mut child = cmd
        .args(["iperf3", "-s", "--forceflush", "-B"])
        .arg(bind.to_string())
        .args(["-p", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("iperf3 server output");
        assert!(n > 0, "iperf3 server exited before listening");
        if line.contains("Server listening") {
            break;
        }
    }
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Iperf3Server(child)
}

/// One iperf3 run from `cmd` to `to` for `secs` seconds (`reverse`: the
/// server sends): the bytes the receiver got, and its seconds.
pub fn iperf3_client(mut cmd: Command, to: SocketAddr, secs: u64, reverse: bool) -> (u64, f64) {
    cmd.args(["iperf3", "-J", "-c"])
        .arg(to.ip().to_string())
        .args(["-p", &to.port().to_string(), "-t", &secs.to_string()]);
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd.output().expect("iperf3 client runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let sum = &report["end"]["sum_received"];
    match (sum["bytes"].as_u64(), sum["seconds"].as_f64()) {
        (Some(b), Some(s)) if out.status.success() => (b, s),
        _ => panic!(
            "iperf3 to {to} failed: {} {}",
            report["error"],
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// A `/proc/PID/status` memory field in KiB (`"VmRSS:"`, `"VmHWM:"`);
/// panics if the process or the field is gone (a bench must not print 0).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field")
}

/// One direction of an iperf3 run, as seen from the device side.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// MiB per second the receiver got.
    pub mb_s: f64,
    /// The device-side process's CPU seconds per GiB moved.
    pub cpu_s_gb: f64,
}

/// Runs iperf3 from `client` to `to` one way and measures process `pid`
/// (the device side's peer) over it.
pub fn iperf3_run(client: Command, to: SocketAddr, pid: u32, secs: u64, reverse: bool) -> Run {
    let c0 = cpu_secs(pid);
    let (bytes, took) = iperf3_client(client, to, secs, reverse);
    let c1 = cpu_secs(pid);
    Run {
        mb_s: bytes as f64 / 1048576.0 / took,
        cpu_s_gb: (c1 - c0) / (bytes as f64 / 1073741824.0),
    }
}
