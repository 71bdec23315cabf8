//! Our two peers through a lossy, distant network (the WAN stage in front of
//! the relay): transfers complete intact in both directions. Speed is the
//! benchmark's business (`cargo bench -p support-tunnel --bench wan`); these
//! only wait for the transfers, with a generous bound so a collapse fails
//! instead of hanging.

mod common;

use std::time::Duration;

use common::*;

const MB: usize = 1024 * 1024;

/// A 50 ms round trip and 1% loss at each crossing of the stage, like the
/// loss "at each input" of issue 20: each datagram crosses twice (peer ->
/// relay -> peer), so about 2% are lost end to end, each way.
fn lossy_50ms() -> Impairment {
    Impairment {
        one_way_delay: Duration::from_micros(12_500),
        loss: 0.01,
        ..Impairment::NONE
    }
}

#[test]
fn twenty_mb_through_one_percent_loss_and_50_ms_arrive_intact_both_ways() {
    let (pair, stage) = Pair::through_wan(Keys::new(), lossy_50ms());
    assert!(
        pair.wait_up(Duration::from_secs(30)),
        "the tunnel did not come up through the lossy path"
    );
    let limit = Duration::from_secs(300);
    let down = fetch(pair.forward(22), 11, 20 * MB, limit).expect("device -> admin transfer");
    assert_eq!(down, pattern_sha(11, 20 * MB), "device -> admin checksum");
    let up = push(pair.forward(24), 12, 20 * MB, limit).expect("admin -> device transfer");
    assert_eq!(up, pattern_sha(12, 20 * MB), "admin -> device checksum");
    // The path really was lossy: the stage dropped datagrams on the way.
    assert!(
        stage.dropped() > 100,
        "only {} datagrams were dropped",
        stage.dropped()
    );
}
