//! Time to shell on the assembled system, over N runs (default 10): from
//! the approval being posted to the device reporting connected (as
//! `support-admin approve` measures it), and from `support-agent request`
//! to the first byte of `support-admin exec` output. Needs root, sshd and
//! the workspace's binaries (see the tests).
//!
//! `cargo bench -p support-admin --bench time_to_shell [-- RUNS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, *v.last().unwrap_or(&0.0))
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lab = Lab::new(&DeviceSettings::default());
    let (mut connect, mut first) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let (_, code) = lab.device.request(&[]);
        let out = lab.eng.run(&["approve", &code, "--provider", "local"]);
        let id = ok(&out).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let secs: f64 = err
            .lines()
            .find_map(|l| l.strip_prefix("approval to connected: "))
            .and_then(|l| l.split('s').next())
            .and_then(|v| v.parse().ok())
            .expect("approve reports its time");
        connect.push(secs);
        let mut child = Command::new(ADMIN)
            .arg("--home")
            .arg(lab.eng.home.path())
            .args(["exec", &id, "--", "hostname"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("exec");
        let mut byte = [0u8; 1];
        child
            .stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut byte)
            .expect("output");
        first.push(t0.elapsed().as_secs_f64());
        let _ = child.wait();
        ok(&lab.eng.run(&["stop", &id]));
        wait_for("teardown", Duration::from_secs(15), || {
            !user_exists(&format!("support-{id}"))
        });
    }
    let (cm, cx) = stats(connect);
    let (fm, fx) = stats(first);
    println!("time to shell over {runs} runs (release build, local hub on loopback; approve polls every 200 ms):");
    println!("  approval posted -> device connected:   median {cm:.2} s, max {cx:.2} s");
    println!("  request -> first exec output:          median {fm:.2} s, max {fx:.2} s");
}
