//! The tunnel's TCP through a simulated bottleneck (`tests/sim`): a rate,
//! a drop-tail queue, a round trip and random loss, on a simulated clock.
//! What these check is deterministic (the same run every time), not timed:
//! the queue a bulk transfer builds, the latency next to it, that loss does
//! not collapse it, and that what is sent again was lost.
//!
//! The WAN bench (`benches/wan.rs`) measures the same on real sockets
//! against kernel TCP; `benches/tcp_sim.rs` prints this simulation's table.

mod sim;

use sim::{acks_for_a_burst, run, Path};
use support_tunnel::ingress::ACK_EVERY;

/// A shorter run than the bench's: the debug build simulates more slowly.
fn path(rtt_ms: i64, loss: f64) -> Path {
    Path {
        secs: 4.0,
        ..Path::new(rtt_ms, loss)
    }
}

#[test]
fn a_bulk_transfer_keeps_the_queue_it_builds_short_and_the_link_full() {
    // Upstream smoltcp keeps the whole receive window in flight: through a
    // 25 MB/s bottleneck that is 80 ms of queue for everyone else.
    let o = run(&path(1, 0.0), None);
    assert!(
        o.max_queue_ms < 15.0,
        "the bottleneck queue reached {:.1} ms (5 ms allowed, plus a round's overshoot)",
        o.max_queue_ms
    );
    assert!(o.mb_s > 0.9 * 25.0, "{:.2} MB/s of 25", o.mb_s);
    assert_eq!(o.overflowed, 0, "the queue overflowed");
}

#[test]
fn an_exchange_next_to_a_bulk_transfer_stays_within_two_round_trips_and_50_ms() {
    // With loss too: a lost 16-byte segment has no later data to reveal
    // it, and the retransmission timer alone would take longer than this.
    for (rtt, loss) in [(1, 0.0), (50, 0.0), (150, 0.0), (1, 0.01), (50, 0.01)] {
        let o = run(&path(rtt, loss), None);
        let p99 = o.echo(0.99);
        let bound = 2.0 * rtt as f64 + 50.0;
        assert!(
            p99 < bound,
            "rtt {rtt} ms, {}% loss: echo p99 {p99:.1} ms, over {bound} ms ({} exchanges)",
            loss * 100.0,
            o.echo_ms.len()
        );
        assert!(
            o.echo_ms.len() > 10,
            "too few exchanges: {}",
            o.echo_ms.len()
        );
    }
}

#[test]
fn loss_slows_a_transfer_but_never_collapses_it_and_needs_no_timeout() {
    let clean = run(&path(50, 0.0), None).mb_s;
    for (loss, least) in [(0.01, 0.5), (0.03, 0.35)] {
        let o = run(&path(50, loss), None);
        assert!(
            o.mb_s > least * clean,
            "{}% loss: {:.2} MB/s, under {least} of the {clean:.2} without loss ({:?})",
            loss * 100.0,
            o.mb_s,
            o.stats
        );
        // Lost retransmissions are found by the clock a round trip later
        // (RACK), not by the retransmission timer.
        assert_eq!(o.stats.timeouts, 0, "{}% loss: {:?}", loss * 100.0, o.stats);
    }
}

#[test]
fn what_is_sent_again_was_lost() {
    // A segment that reaches the receiver holding nothing new was sent
    // again needlessly: the scoreboard forgot what the receiver holds, or
    // a retransmission was judged lost while on its way.
    for (rtt, loss) in [(1, 0.01), (50, 0.002), (50, 0.01)] {
        let o = run(&path(rtt, loss), None);
        let share = o.needless as f64 / o.arrived as f64;
        assert!(
            share < 0.01,
            "rtt {rtt} ms, {}% loss: {} of {} segments sent again needlessly ({:?})",
            loss * 100.0,
            o.needless,
            o.arrived,
            o.stats
        );
        assert!(o.stats.hole_retransmits > 0, "no loss was repaired");
    }
}

#[test]
fn a_burst_taken_in_one_turn_is_acknowledged_every_sixteen_segments() {
    // smoltcp alone answers a turn with one ACK however much it took in;
    // the sender's window grows per ACK, so a burst of 64 answered once
    // held a bulk transfer through a train-forwarding relay to a third.
    assert_eq!(acks_for_a_burst(64), 64 / ACK_EVERY);
    assert_eq!(acks_for_a_burst(100), 100 / ACK_EVERY + 1);
    assert_eq!(acks_for_a_burst(ACK_EVERY - 1), 1);
}

#[test]
fn a_short_fast_path_stays_full_while_the_receiver_pauses() {
    // A device whose CPU is busy elsewhere a tenth of the time, on a
    // 100 us round trip. The delay window's rounds were that short, and
    // their delivery rate was computed as if each lasted a millisecond:
    // pacing (a quarter above that rate) then held the transfer at 70-100
    // of 200 MB/s here, and at 20-30 of 300 MB/s in one throughput bench
    // run in three.
    for pauses in [(20_000, 2_000), (100_000, 10_000)] {
        let p = Path {
            rate_mb_s: 200.0,
            secs: 2.0,
            pauses: Some(pauses),
            ..Path::new(0, 0.0)
        };
        let o = run(&p, None);
        assert!(
            o.mb_s > 150.0,
            "paused {pauses:?}: {:.1} MB/s of 200 ({:?})",
            o.mb_s,
            o.stats
        );
    }
}
