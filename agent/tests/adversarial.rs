//! DESIGN invariants 1 and 2 on the device: a control plane that lies, or
//! someone holding a leaked code without a CA-certified key, gets nothing:
//! the device refuses before it changes anything.

mod common;

use std::time::Duration;

use common::fake_cp::{FakeControlPlane, Mode};
use common::*;
use support_protocol::approval_box::SealedApproval;
use support_protocol::bounded::BoundedString;
use support_protocol::certificate::Role;
use support_protocol::messages::{StopReason, TunnelRequest};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::{ApprovalSeq, TunnelId};

struct Lab {
    _sshd: Sshd,
    fake: FakeControlPlane,
    eng: Engineer,
    device: Device,
}

fn lab() -> Lab {
    require_root_and_sshd();
    let sshd = Sshd::start(None);
    let fake = FakeControlPlane::start();
    let eng = Engineer::offline();
    let mut device = Device::new(
        &fake.url,
        &fake.public,
        &eng.ca_public(),
        &sshd,
        &DeviceSettings::default(),
    );
    device.start_daemon(None);
    Lab {
        _sshd: sshd,
        fake,
        eng,
        device,
    }
}

impl Lab {
    /// A new request; returns its code as support (or a thief) would have it.
    fn request(&self) -> OneTimeCode {
        self.fake.clear();
        let (_, code) = self.device.request(&["--ports", "22", "--duration", "30m"]);
        OneTimeCode::parse(&code).expect("parses")
    }

    /// An approval of `request` sealed with `code` and signed by `signer`
    /// (its own admin keys, a relay address nobody listens on).
    fn seal_as(
        &self,
        signer: &Engineer,
        code: &OneTimeCode,
        request: &TunnelRequest,
        terms: &Terms,
    ) -> SealedApproval {
        let admin = AdminTunnelKeys::from_seed(random32());
        seal_for(
            signer,
            code,
            request,
            &admin,
            "127.0.0.1:9".parse().expect("addr"),
            terms,
        )
        .0
    }

    /// A correct approval by the certified engineer.
    fn honest(&self, code: &OneTimeCode, terms: &Terms) -> SealedApproval {
        self.seal_as(
            &self.eng,
            code,
            &self.fake.request_of(code.tunnel_id),
            terms,
        )
    }

    /// Serves `approval`, then checks the device refused it and changed nothing.
    fn assert_refused(&self, id: TunnelId, approval: SealedApproval, why: &str) {
        let seq = approval.approval_seq;
        self.fake.serve(TunnelState::Approved(seq), approval);
        wait_for(why, Duration::from_secs(15), || {
            self.fake
                .seen
                .lock()
                .expect("lock")
                .stopped
                .iter()
                .any(|(t, _)| *t == id)
        });
        // The stop notice says refused, and why, naming the approval once.
        let notice = self
            .fake
            .seen
            .lock()
            .expect("lock")
            .stopped
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, r)| r.clone());
        let Some(StopReason::Refused(text)) = notice else {
            panic!("{why}: the stop notice says {notice:?}, not refused")
        };
        let text = text.as_str();
        assert!(text.starts_with(&format!("approval {seq}: ")), "{text}");
        assert!(text.contains(why), "{why}: {text}");
        let user = id.support_user();
        assert_no_access_left(&user);
        assert!(
            !self.fake.seen.lock().expect("lock").connected.contains(&id),
            "{why}: the refused tunnel reported itself connected"
        );
        let log =
            String::from_utf8_lossy(&self.device.run(&["log", &id.to_string()]).stdout).to_string();
        assert!(
            log.contains(&format!("REFUSED, nothing changed: {text}\n")),
            "{why}: {log}"
        );
        assert!(log.contains(&format!("ended (refused: {text})")), "{log}");
        assert!(!log.contains("access open"), "{log}");
    }

    /// Waits for the device to report `id` connected.
    fn wait_connected(&self, id: TunnelId, what: &str, timeout: Duration) {
        wait_for(what, timeout, || {
            self.fake.seen.lock().expect("lock").connected.contains(&id)
        });
    }

    /// Waits until the device has handled an answer to `id`'s polls that
    /// carried what the fake serves now. A tunnel handles its poll answers
    /// one at a time and in order, so once its status shows the garbage
    /// the fake answers next, it has handled every answer before.
    fn wait_served_answer_handled(&self, id: TunnelId) {
        wait_for(
            "a poll answer with what is served",
            Duration::from_secs(15),
            || self.fake.answers_served(id) > 0,
        );
        self.fake.set_mode(Mode::Garbage);
        wait_for(
            "the device to handle the answers before the garbage",
            Duration::from_secs(15),
            || {
                let out = self.device.run(&["status", "--json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                v["tunnels"].as_array().expect("tunnels").iter().any(|t| {
                    t["id"] == id.to_string().as_str()
                        && t["control_plane_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("invalid answer"))
                })
            },
        );
        self.fake.set_mode(Mode::Normal);
    }
}

#[test]
fn a_lying_control_plane_and_a_leaked_code_get_nothing() {
    let lab = lab();

    // The control plane alters one byte of the sealed box.
    let code = lab.request();
    let mut a = lab.honest(&code, &Terms::default());
    let mut ct = a.ciphertext.clone().into_inner();
    ct[10] ^= 1;
    a.ciphertext = support_protocol::bounded::BoundedBytes::new(ct).expect("fits");
    lab.assert_refused(code.tunnel_id, a, "signature");

    // It holds the leaked code and seals its own box (its own admin key and
    // relay), signed by a key its own "CA" certified.
    let code = lab.request();
    let request = lab.fake.request_of(code.tunnel_id);
    let mut thief = Engineer::offline();
    let forged = lab.seal_as(&thief, &code, &request, &Terms::default());
    lab.assert_refused(code.tunnel_id, forged, "not from a pinned support CA");

    // Same, but it attaches the real engineer's certificate to its own signature.
    let code = lab.request();
    let request = lab.fake.request_of(code.tunnel_id);
    thief.cert = lab.eng.cert.clone();
    let forged = lab.seal_as(&thief, &code, &request, &Terms::default());
    lab.assert_refused(code.tunnel_id, forged, "signature");

    // A certificate from the pinned CA, but for the viewer role.
    let code = lab.request();
    let request = lab.fake.request_of(code.tunnel_id);
    let mut viewer = Engineer::offline();
    viewer.cert = lab.eng.ca.certify(
        BoundedString::new("mallory").expect("fits"),
        viewer.signing.public(),
        Role::Viewer,
        9,
        now() - 60,
        now() + 86400,
    );
    let forged = lab.seal_as(&viewer, &code, &request, &Terms::default());
    lab.assert_refused(code.tunnel_id, forged, "role");

    // The control plane showed support a request with its own KEM and
    // WireGuard keys (swapped facts and keys); support approved that. The
    // box is bound to the keys support saw, so the real device refuses it.
    let code = lab.request();
    let mut swapped = lab.fake.request_of(code.tunnel_id);
    let other = support_protocol::tunnel_keys::DeviceTunnelKeys::from_seed(random32());
    swapped.body.kem = other.public_keys().kem;
    swapped.body.wireguard = support_protocol::bounded::FixedBytes(other.public_keys().wireguard);
    let approval = lab.seal_as(&lab.eng, &code, &swapped, &Terms::default());
    lab.assert_refused(code.tunnel_id, approval, "signature");

    // An honest signature over more than the device asked for: a port it did
    // not request, or a longer time. The device never accepts more.
    let code = lab.request();
    let wider = lab.honest(
        &code,
        &Terms {
            ports: vec![22, 80],
            ..Terms::default()
        },
    );
    lab.assert_refused(code.tunnel_id, wider, "port 80");
    let code = lab.request();
    let longer = lab.honest(
        &code,
        &Terms {
            duration_secs: 3600,
            ..Terms::default()
        },
    );
    lab.assert_refused(code.tunnel_id, longer, "duration");

    // An approval of another tunnel, replayed for this one. A is stopped
    // first: the fake serves the approval to every poll, and A would take
    // its own.
    let code_a = lab.request();
    let for_a = lab.honest(&code_a, &Terms::default());
    let stopped = lab.device.run(&["stop", &code_a.tunnel_id.to_string()]);
    assert!(stopped.status.success(), "{stopped:?}");
    let code_b = lab.request();
    lab.assert_refused(code_b.tunnel_id, for_a, "signature");

    // Control: the honest approval is accepted (so the refusals above are real).
    let code = lab.request();
    let ok = lab.honest(&code, &Terms::default());
    lab.fake.serve(TunnelState::Approved(ApprovalSeq(1)), ok);
    lab.wait_connected(
        code.tunnel_id,
        "the honest approval to connect",
        Duration::from_secs(15),
    );
    let user = code.tunnel_id.support_user();
    assert!(user_exists(&user));

    // Once connected, an older approval served again changes nothing.
    let older = lab.honest(&code, &Terms::default());
    lab.fake.serve(TunnelState::Approved(ApprovalSeq(1)), older);
    lab.wait_served_answer_handled(code.tunnel_id);
    assert!(user_exists(&user));
    let status = String::from_utf8_lossy(&lab.device.run(&["status", "--json"]).stdout).to_string();
    assert!(status.contains("\"phase\": \"connected\""), "{status}");
    let log =
        String::from_utf8_lossy(&lab.device.run(&["log", &code.tunnel_id.to_string()]).stdout)
            .to_string();
    assert_eq!(log.matches("approved (#1)").count(), 1, "{log}");
    assert!(!log.contains("REFUSED"), "{log}");
    assert!(lab.device.run(&["stop", "--all"]).status.success());
    assert_no_access_left(&user);
}

#[test]
fn garbage_and_an_unreachable_control_plane_are_clear_errors() {
    let lab = lab();
    for (mode, expect) in [
        (Mode::Garbage, "invalid answer"),
        (Mode::Huge, "larger than"),
        (Mode::ServerError, "HTTP 500"),
    ] {
        lab.fake.set_mode(mode);
        let out = lab.device.run(&["request"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success());
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Nothing half-made stays behind.
    let n = std::fs::read_dir(lab.device.state_dir().join("tunnels"))
        .expect("dir")
        .count();
    assert_eq!(n, 0, "no record of failed requests");

    // A pending tunnel rides out a misbehaving control plane.
    lab.fake.set_mode(Mode::Normal);
    let code = lab.request();
    lab.fake.set_mode(Mode::Garbage);
    wait_for(
        "status to show the problem",
        Duration::from_secs(15),
        || String::from_utf8_lossy(&lab.device.run(&["status"]).stdout).contains("invalid answer"),
    );
    lab.fake.set_mode(Mode::Normal);
    let ok = lab.honest(&code, &Terms::default());
    lab.fake.serve(TunnelState::Approved(ApprovalSeq(1)), ok);
    lab.wait_connected(
        code.tunnel_id,
        "the approval after the outage",
        Duration::from_secs(30),
    );
    assert!(lab.device.run(&["stop", "--all"]).status.success());

    // No control plane at all.
    let sshd = Sshd::start(None);
    let dead = format!("http://127.0.0.1:{}", free_tcp_port());
    let mut device = Device::new(
        &dead,
        &lab.fake.public,
        &lab.eng.ca_public(),
        &sshd,
        &DeviceSettings::default(),
    );
    device.start_daemon(None);
    let out = device.run(&["request"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("control plane is unreachable"), "{err}");
}

#[test]
fn transient_refusals_are_retried_not_taken_as_delivered() {
    let lab = lab();
    let code = lab.request();
    // The connected report meets "rate limited" then "unavailable" first.
    lab.fake.seen.lock().expect("lock").transient_errors = 2;
    let ok = lab.honest(&code, &Terms::default());
    lab.fake.serve(TunnelState::Approved(ApprovalSeq(1)), ok);
    lab.wait_connected(
        code.tunnel_id,
        "the connected report to get through",
        Duration::from_secs(20),
    );
    assert_eq!(lab.fake.seen.lock().expect("lock").turned_away, 2);
    // So does the stop notice.
    lab.fake.seen.lock().expect("lock").transient_errors = 2;
    let out = lab.device.run(&["stop", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the stop notice to get through",
        Duration::from_secs(20),
        || {
            lab.fake
                .seen
                .lock()
                .expect("lock")
                .stopped
                .iter()
                .any(|(id, _)| *id == code.tunnel_id)
        },
    );
    assert_eq!(lab.fake.seen.lock().expect("lock").turned_away, 4);
}
