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

mod common;
#[path = "../tests/sim/mod.rs"]
mod sim;

use sim::Path;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
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
    let count = env("SIM_TCP_LOG") == "1" && common::count_tcp_events();
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
    for (i, (rtt_ms, loss)) in common::cells("SIM_CELLS").into_iter().enumerate() {
        let rtt_ms = rtt_ms as i64;
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
            println!("    smoltcp: {}", common::take_tcp_events());
        }
    }
}
