//! A bench binary (no harness) for the protocol's operations, as a device
//! and an admin perform them once per tunnel or per call.
//!
//! `cargo bench -p support-protocol --bench operations`
//! (the bench profile inherits the size-tuned release profile; set
//! `CARGO_PROFILE_BENCH_OPT_LEVEL=3` to compare).

use std::hint::black_box;
use std::time::{Duration, Instant};

use support_protocol::approval_box::Trust;
use support_protocol::bounded::{BoundedString, BoundedVec};
use support_protocol::control_channel::{Api, ClientCall, ServerKeys, StaticKeypair};
use support_protocol::fixtures::{Approvers, Terms};
use support_protocol::ids::ApprovalSeq;
use support_protocol::kem;
use support_protocol::messages::{DeviceFacts, TunnelRequest};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};

fn bench(name: &str, mut f: impl FnMut()) {
    // Warm up, then run for about half a second.
    f();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(500) {
        f();
        n += 1;
    }
    let per = start.elapsed() / n;
    println!(
        "{name:<44} {:>10.1} µs/op  ({n} runs)",
        per.as_nanos() as f64 / 1000.0
    );
}

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).unwrap_or_default()
}

fn main() {
    let device = DeviceTunnelKeys::from_seed([1; 32]);
    let facts = DeviceFacts {
        hostname: text("amplipi"),
        model: text("AmpliPi Pro"),
        firmware: text("0.4.7"),
        agent_version: text("0.1.0"),
    };
    let ports = BoundedVec::try_from(&[22u16][..]).unwrap_or_default();
    let request = TunnelRequest::new(&device, facts.clone(), 86_400, ports, text(""));
    let code = OneTimeCode {
        tunnel_id: device.tunnel_id(),
        secret: device.one_time_secret(),
    };
    let shown = code.to_display_string();
    let approvers = Approvers::new([2; 32], [3; 32], "alice", 0, u64::MAX / 2);
    let admin = AdminTunnelKeys::from_seed([4; 32]);
    let contents = Terms::new(10).contents(&request.body.kem.0, &admin);
    let ct = contents.kem_ciphertext.0;
    let seal = || approvers.seal(&contents, &device, ApprovalSeq(1), [9; 32]);
    let sealed = seal();
    let cas = [approvers.ca_key()];
    let trust = Trust {
        ca_keys: &cas,
        time_floor: 0,
        accepted: None,
    };
    let server = StaticKeypair::from_secret([5; 32]);
    let server_keys = ServerKeys::new(vec![server.clone()]);
    let client = device.credential();

    bench("device: derive all tunnel keys (incl. ML-KEM)", || {
        black_box(DeviceTunnelKeys::from_seed(black_box([7; 32])).public_keys());
    });
    bench("device: build and tag request", || {
        black_box(TunnelRequest::new(
            &device,
            facts.clone(),
            86_400,
            BoundedVec::empty(),
            text(""),
        ));
    });
    bench("admin: parse one-time code", || {
        black_box(OneTimeCode::parse(black_box(&shown)).is_ok());
    });
    bench("admin: ML-KEM-768 encapsulate", || {
        black_box(kem::encapsulate(&request.body.kem.0, &[3; 32]).is_ok());
    });
    bench("admin: seal and sign approval", || {
        black_box(seal());
    });
    bench("device: verify and open approval", || {
        black_box(
            sealed
                .open(
                    device.tunnel_id(),
                    &device.public_keys(),
                    &code.secret,
                    &trust,
                )
                .is_ok(),
        );
    });
    let dk = device.kem();
    bench("device: ML-KEM-768 decapsulate", || {
        black_box(dk.decapsulate(black_box(&ct)));
    });
    bench("control channel: full call round trip", || {
        let Ok((call, body)) =
            ClientCall::start(Api::Device, &client, &server.public, [1; 32], b"poll")
        else {
            return;
        };
        let Ok(incoming) = server_keys.accept(Api::Device, &body, [2; 32]) else {
            return;
        };
        let Ok(answer) = incoming.respond(b"answer") else {
            return;
        };
        black_box(call.finish(&answer).is_ok());
    });
}
