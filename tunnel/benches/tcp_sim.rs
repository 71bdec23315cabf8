//! The tunnel's TCP (smoltcp as patched in third_party/smoltcp, with the
//! sockets the engine makes) on a simulated path (`tests/sim`): a bottleneck
//! with a rate and a 2 MiB queue, a propagation delay and random loss, on a
//! simulated clock. No sockets, no threads, no encryption: it measures the
//! TCP alone, the same numbers on every run and every machine, so a change
//! to loss recovery or the window can be judged in seconds.
//!
//! `cargo bench -p support-tunnel --bench tcp_sim`. `SIM_CELLS=50:0.01`
//! picks cells (round trip in ms : loss per crossing, each packet crossing
//! twice each way like the WAN bench), `SIM_RATE` the bottleneck in MB/s
//! (default 25, about what the wireguard-go pair reaches in the WAN bench),
//! `SIM_SECS` the simulated seconds per cell (default 10), `SIM_WINDOW_KIB`
//! another window (the sender's send and the receiver's receive buffer),
//! `SIM_TRACE=1` a line per 100 ms, `SIM_TCP_LOG=1` smoltcp's recovery
//! events counted.

#[path = "../tests/sim/mod.rs"]
mod sim;

use sim::Path;

/// Counts smoltcp's debug messages by their first words (`SIM_TCP_LOG=1`).
struct Counter(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl log::Log for Counter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("smoltcp")
    }
    fn log(&self, r: &log::Record) {
        let msg = r.args().to_string();
        let key: String = msg
            .split(|c: char| c.is_ascii_digit() || c == '(' || c == '+')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key).or_default() += 1;
        }
    }
    fn flush(&self) {}
}

static COUNTER: Counter = Counter(std::sync::Mutex::new(std::collections::BTreeMap::new()));

fn take_counts() -> String {
    let m = COUNTER
        .0
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    m.iter()
        .filter(|(k, _)| !k.starts_with("sending sACK") && !k.starts_with("received duplicate"))
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

fn cells() -> Vec<(i64, f64)> {
    let spec = env("SIM_CELLS");
    if spec.is_empty() {
        let mut v = Vec::new();
        for rtt_ms in [1, 50, 150] {
            for loss in [0.0, 0.002, 0.01, 0.03] {
                v.push((rtt_ms, loss));
            }
        }
        return v;
    }
    spec.split(',')
        .filter_map(|c| {
            let (r, l) = c.split_once(':')?;
            Some((r.parse().ok()?, l.parse().ok()?))
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rate: f64 = env("SIM_RATE").parse().unwrap_or(25.0);
    let secs: f64 = env("SIM_SECS").parse().unwrap_or(10.0);
    let window = env("SIM_WINDOW_KIB")
        .parse::<usize>()
        .ok()
        .map(|k| k * 1024);
    let trace = env("SIM_TRACE") == "1";
    let count = env("SIM_TCP_LOG") == "1" && log::set_logger(&COUNTER).is_ok();
    if count {
        log::set_max_level(log::LevelFilter::Debug);
    }
    println!(
        "simulated: {rate} MB/s bottleneck with a 2 MiB queue, {secs} s per cell, loss per crossing (two crossings each way){}",
        window.map_or(String::new(), |w| format!(", {} KiB windows", w / 1024))
    );
    println!(
        "{:>6} {:>6} | {:>7} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>10}",
        "rtt ms",
        "loss",
        "MB/s",
        "echo p50",
        "echo p99",
        "queue ms",
        "recovered",
        "holes",
        "needless",
        "timeouts",
        "overflowed"
    );
    for (i, (rtt_ms, loss)) in cells().into_iter().enumerate() {
        let path = Path {
            rate_mb_s: rate,
            secs,
            window,
            ..Path::new(rtt_ms, loss)
        };
        let mut print = |line: String| println!("{line}");
        let o = sim::run(&path, (trace && i == 0).then_some(&mut print));
        println!(
            "{rtt_ms:>6} {:>5.1}% | {:>7.2} {:>8.1} {:>8.1} {:>8.1} | {:>8} {:>8} {:>8} {:>8} {:>10}",
            loss * 100.0,
            o.mb_s,
            o.echo(0.5),
            o.echo(0.99),
            o.max_queue_ms,
            o.stats.fast_retransmits,
            o.stats.hole_retransmits,
            o.needless,
            o.stats.timeouts,
            o.overflowed
        );
        if count {
            println!("    smoltcp: {}", take_counts());
        }
    }
}
