//! Each `open` on the admin side leaves nothing behind, counted in this
//! process's file descriptors: a test binary of its own, since any other
//! test running beside it would open and close descriptors in the same
//! table.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn each_open_leaves_no_listener_behind() {
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let rt = runtime();
    let fds = || std::fs::read_dir("/proc/self/fd").expect("fds").count();
    rt.block_on(async {
        // Warm up (the first connection may set things up for good).
        drop(pair.admin.open(22).await.expect("opens"));
    });
    let before = fds();
    rt.block_on(async {
        for _ in 0..100 {
            drop(pair.admin.open(22).await.expect("opens"));
        }
    });
    // Each open's one-shot listener goes once its connection is accepted,
    // and each connection once both ends have closed: nothing accumulates
    // (a listener per open, kept, made every later turn of the engine
    // slower; scp fell to 0.4 MB/s next to a forward fetched in a loop).
    support_testkit::world::wait_for(
        "the engine to let go of closed connections",
        Duration::from_secs(20),
        || fds() <= before + 5,
    );
}
