//! Our device peer and our admin peer through our relay.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use support_tunnel::Event;

const MB: usize = 1024 * 1024;

#[test]
fn a_100_mb_transfer_from_device_to_admin_arrives_intact() {
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(
        pair.wait_up(Duration::from_secs(10)),
        "the tunnel did not come up"
    );
    let local = pair.forward(22);
    let start = Instant::now();
    let got = fetch(local, 7, 100 * MB, Duration::from_secs(60)).expect("transfer");
    let took = start.elapsed();
    assert_eq!(got, pattern_sha(7, 100 * MB), "checksum mismatch");
    eprintln!(
        "100 MB device->relay->admin in {took:?} ({:.1} MB/s, {} build)",
        100.0 / took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

#[test]
fn twenty_parallel_connections_all_succeed() {
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(22);
    let workers: Vec<_> = (0..20u64)
        .map(|i| {
            std::thread::spawn(move || (i, fetch(local, 100 + i, MB, Duration::from_secs(60))))
        })
        .collect();
    for w in workers {
        let (i, r) = w.join().expect("worker");
        assert_eq!(
            r.expect("connection succeeded"),
            pattern_sha(100 + i, MB),
            "connection {i}"
        );
    }
}

#[test]
fn a_port_not_on_the_allowlist_is_refused() {
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(23);
    let mut s = TcpStream::connect(local).expect("local connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 16];
    let start = Instant::now();
    let r = s.read(&mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "got data from a port that is not allowlisted: {r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_wrong_psk_never_connects() {
    let (pair, anat, _) = Pair::start(Keys::new(), Some(random32()), true, false);
    let anat = anat.expect("nat");
    // A connection asked for at once: it waits for a session that never comes.
    let local = pair.forward(22);
    let fetching = std::thread::spawn(move || fetch(local, 1, 1000, Duration::from_secs(60)));
    support_testkit::world::wait_for(
        "the admin to refuse the device's handshake response and start over",
        Duration::from_secs(30),
        || anat.started_over(),
    );
    let events: Vec<_> = pair
        .device_events
        .try_iter()
        .chain(pair.admin_events.try_iter())
        .collect();
    assert!(
        !events.contains(&Event::TunnelUp),
        "the tunnel came up with the wrong PSK: {events:?}"
    );
    // The admin's TCP gives up on the connection (its 20 s timeout): EOF
    // before a byte, never data.
    let r = fetching.join().expect("fetch");
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::UnexpectedEof),
        "{r:?}"
    );
    let device: Vec<_> = pair.device_events.try_iter().collect();
    assert!(
        !device
            .iter()
            .any(|e| matches!(e, Event::Opened { .. } | Event::TunnelUp)),
        "{device:?}"
    );
}

#[test]
fn after_the_relay_restarts_traffic_flows_again_within_60_s() {
    let (mut pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(22);
    assert_eq!(
        fetch(local, 1, MB, Duration::from_secs(30)).expect("before"),
        pattern_sha(1, MB)
    );
    pair.relay.restart();
    let took = recovers_within(local, 2, Duration::from_secs(60))
        .expect("no traffic within 60 s of the relay restart");
    eprintln!("traffic flowed again {took:?} after the relay restarted");
}

#[test]
fn a_peer_whose_source_port_changes_keeps_working() {
    let (pair, anat, _) = Pair::start(Keys::new(), None, true, false);
    let anat = anat.expect("nat");
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(22);
    assert_eq!(
        fetch(local, 3, MB, Duration::from_secs(30)).expect("before"),
        pattern_sha(3, MB)
    );
    anat.rebind();
    let took = recovers_within(local, 4, Duration::from_secs(60))
        .expect("no traffic within 60 s of the source port change");
    eprintln!("traffic flowed again {took:?} after the admin's source port changed");
}

#[test]
fn when_the_device_dies_the_admin_side_gets_an_error_not_a_hang() {
    let (pair, _, dnat) = Pair::start(Keys::new(), None, false, true);
    let dnat = dnat.expect("nat");
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(22);
    let mut s = TcpStream::connect(local).expect("connect");
    s.write_all(&1u64.to_le_bytes()).expect("writes");
    s.write_all(&(u64::MAX / 2).to_le_bytes()).expect("writes");
    let mut buf = vec![0u8; 65536];
    assert!(s.read(&mut buf).expect("data flows") > 0);
    // The device vanishes mid-transfer (its path goes dark, nothing is sent).
    dnat.cut();
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let start = Instant::now();
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break "hung"
            }
            Err(_) => break "error",
        }
    };
    assert_ne!(ended, "hung", "the admin side hung after the device died");
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "took {:?}",
        start.elapsed()
    );
    eprintln!(
        "admin side saw the dead device ({ended}) after {:?}",
        start.elapsed()
    );
}

#[test]
fn a_third_party_cannot_get_datagrams_forwarded_or_disturb_the_tunnel() {
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let local = pair.forward(22);
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
    stranger
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let flood = std::thread::spawn({
        let relay = pair.relay.addr;
        let admin_udp = pair.admin.local_udp;
        move || {
            let mut d = vec![0u8; 200];
            for i in 0..20_000u32 {
                d[0] = (i % 5) as u8;
                d[4..8].copy_from_slice(&i.to_le_bytes());
                let _ = stranger.send_to(&d[..if i % 3 == 0 { 148 } else { 200 }], relay);
                let _ = stranger.send_to(&d, admin_udp);
            }
            let mut buf = [0u8; 2048];
            stranger.recv_from(&mut buf)
        }
    });
    assert_eq!(
        fetch(local, 5, 10 * MB, Duration::from_secs(60)).expect("transfer under flood"),
        pattern_sha(5, 10 * MB)
    );
    // Nothing came back within the stranger's 300 ms read timeout.
    let got = flood.join().expect("flood");
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the stranger received a datagram: {got:?}"
    );
}

#[test]
fn the_admin_side_offers_an_in_process_tokio_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pair, _, _) = Pair::start(Keys::new(), None, false, false);
    assert!(pair.wait_up(Duration::from_secs(10)));
    let rt = runtime();
    let hash = rt.block_on(async {
        let mut s = pair.admin.open(22).await.expect("opens");
        s.write_all(&9u64.to_le_bytes()).await.expect("writes");
        s.write_all(&(MB as u64).to_le_bytes())
            .await
            .expect("writes");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect("reads");
        use sha2::Digest;
        let h: [u8; 32] = sha2::Sha256::digest(&got).into();
        h
    });
    assert_eq!(hash, pattern_sha(9, MB));
    // The device side logs the connection with its byte counts once it closes.
    let closed = next_event(&pair.device_events, Duration::from_secs(10), |e| {
        matches!(e, Event::Closed { .. })
    });
    assert!(
        matches!(closed, Some(Event::Closed { port: 22, bytes_in: 16, bytes_out, .. }) if bytes_out == MB as u64),
        "{closed:?}"
    );
}
