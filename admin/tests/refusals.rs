//! What support-admin refuses: a control plane that altered the device's
//! request (before any hub is launched), a device whose SSH host key is not
//! the sealed one, a mistyped code, an engineer without the support CA's
//! certificate (the device refuses whatever they post), a certificate that
//! is expired or only a viewer's (refused before anything is spent), and a
//! second hub for a tunnel that has one.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
use support_protocol::control_channel::{Api, ServerKeys, StaticKeypair};
use support_protocol::messages::admin::{TunnelDetail, TunnelSummary};
use support_protocol::messages::{
    AdminCall, AdminReply, AdminRequest, AdminResponse, DeviceFacts, TunnelRequest,
};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_testkit::http::{read_request, respond};

/// An admin API that shows `detail` for every tunnel and records the calls.
fn lying_control_plane(detail: TunnelDetail) -> (String, [u8; 32], Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let key = StaticKeypair::from_secret(random32());
    let public = key.public;
    let keys = ServerKeys::new(vec![key]);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = read_request(&mut stream) else {
                continue;
            };
            let body = request.body;
            let Ok(incoming) = keys.accept(Api::Admin, &body, random32()) else {
                continue;
            };
            let Ok(call) = support_protocol::decode::<AdminCall>(&incoming.call) else {
                continue;
            };
            seen.lock()
                .expect("lock")
                .push(format!("{:?}", call.request)[..12].to_string());
            let result = match call.request {
                AdminRequest::Show(_) => Ok(AdminResponse::Show(Box::new(detail.clone()))),
                _ => Ok(AdminResponse::Stopped),
            };
            let reply = AdminReply {
                request_id: call.request_id,
                result,
            };
            let bytes = support_protocol::encode(&reply).expect("encodes");
            let answer = incoming.respond(&bytes).expect("responds");
            respond(&mut stream, 200, &answer);
        }
    });
    (url, public, calls)
}

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    BoundedString::new(s).expect("fits")
}

#[test]
fn an_altered_request_is_refused_before_any_hub_is_launched() {
    require_root_and_sshd();
    let cp = ControlPlane::start(&[]);
    let ca = Ca::new();
    let eng = Engineer::new(&cp, Some(&ca), "alice");
    let device = DeviceTunnelKeys::from_seed(random32());
    let honest = TunnelRequest::new(
        &device,
        DeviceFacts {
            hostname: text("amplipi"),
            model: text("AmpliPi"),
            firmware: text("0.4.7"),
            agent_version: text("0.1.0"),
        },
        3600,
        BoundedVec::try_from(&[22u16][..]).expect("fits"),
        text("no sound"),
    );
    let code = OneTimeCode {
        tunnel_id: device.tunnel_id(),
        secret: device.one_time_secret(),
    }
    .to_display_string()
    .to_string();
    let other = DeviceTunnelKeys::from_seed(random32());
    let mut variants: Vec<(&str, TunnelRequest)> = Vec::new();
    let mut r = honest.clone();
    r.body.facts.hostname = text("victim-laptop");
    variants.push(("facts", r));
    let mut r = honest.clone();
    r.body.ports = BoundedVec::try_from(&[22u16, 80, 445][..]).expect("fits");
    variants.push(("ports", r));
    let mut r = honest.clone();
    r.body.duration_secs = 30 * 86400;
    variants.push(("duration", r));
    let mut r = honest.clone();
    r.body.kem = other.public_keys().kem;
    variants.push(("ML-KEM key", r));
    let mut r = honest.clone();
    r.body.wireguard = FixedBytes(other.public_keys().wireguard);
    variants.push(("WireGuard key", r));
    for (what, request) in variants {
        let detail = TunnelDetail {
            summary: TunnelSummary {
                tunnel_id: device.tunnel_id(),
                state: TunnelState::Pending,
                facts: request.body.facts.clone(),
                created_at: now(),
                expires_at: now() + 3600,
            },
            request,
            approval: None,
            report: None,
        };
        let (url, public, calls) = lying_control_plane(detail);
        let out = eng.run(&[
            "--control-plane",
            &url,
            "--control-plane-key",
            &hex::encode(public),
            "approve",
            &code,
            "--provider",
            "local",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}");
        assert!(
            err.contains("REFUSED before launching anything"),
            "{what}: {err}"
        );
        assert_eq!(
            relays_for(&device.tunnel_id().to_string()),
            0,
            "{what}: no hub"
        );
        assert!(
            !eng.records_dir().exists()
                || std::fs::read_dir(eng.records_dir()).expect("dir").count() == 0,
            "{what}: nothing saved"
        );
        let calls = calls.lock().expect("lock").clone();
        assert!(
            calls.iter().all(|c| c.starts_with("Show")),
            "{what}: only the request was read, nothing posted: {calls:?}"
        );
    }
}

#[test]
fn a_host_key_other_than_the_sealed_one_aborts_before_login() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, _) = lab.approve(&[], &[]);
    let path = lab.eng.records_dir().join(format!("{id}.json"));
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("json");
    // As if the device's report had sealed another key (or sshd were swapped).
    let other = tempdir();
    let fake = ssh_keygen(&other.path().join("k"));
    rec["host_keys"] = serde_json::json!([fake]);
    std::fs::write(&path, serde_json::to_vec(&rec).expect("json")).expect("write");
    for cmd in [
        &["exec", &id, "--", "touch /tmp/should-not-exist"][..],
        &["connect", &id],
    ] {
        let out = lab.eng.run(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("ABORTED"), "{cmd:?}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/should-not-exist").exists());
}

#[test]
fn a_mistyped_code_says_so() {
    let lab = Lab::new(&DeviceSettings::default());
    let (_, code) = lab.device.request(&[]);
    // One symbol changed to another valid one.
    let mut chars: Vec<char> = code.chars().collect();
    let i = chars
        .iter()
        .position(|c| c.is_ascii_alphanumeric())
        .expect("a symbol")
        + 3;
    chars[i] = if chars[i] == '7' { '8' } else { '7' };
    let typo: String = chars.into_iter().collect();
    let out = lab.eng.run(&["approve", &typo]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mistyped"), "{err}");
    let out = lab.eng.run(&["approve", "ABC"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut off"));
}

#[test]
fn an_engineer_without_the_support_cas_certificate_gets_nothing() {
    let lab = Lab::new(&DeviceSettings::default());

    // Enrolled at the control plane, but never certified: the CLI says what is missing.
    let uncertified = Engineer::new(&lab.cp, None, "mallory");
    let (id, code) = lab.device.request(&[]);
    let out = uncertified.run(&["approve", &code, "--provider", "local"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no approver certificate"), "{err}");
    assert_eq!(relays_for(&id.to_string()), 0);

    // Certified by a CA of their own: the control plane takes the approval
    // (it is bookkeeping), the device refuses it and nothing changes there.
    let rogue_ca = Ca::new();
    let rogue = Engineer::new(&lab.cp, Some(&rogue_ca), "mallory2");
    let out = rogue.run(&["approve", &code, "--provider", "local", "--wait", "30"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the device refused the approval: ")
            && err.contains("the approver's certificate is not from a pinned support CA"),
        "the device's own reason, from the audit: {err}"
    );
    assert_no_access_left(&id.support_user());
    let log =
        String::from_utf8_lossy(&lab.device.run(&["log", &id.to_string()]).stdout).to_string();
    assert!(log.contains("not from a pinned support CA"), "{log}");
    // Its hub is collected as the ended tunnel's.
    ok(&rogue.run(&["gc"]));
    assert_eq!(relays_for(&id.to_string()), 0);
}

/// The control plane's state of tunnel `id`, as `show --json` prints it.
fn state_of(eng: &Engineer, id: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&eng.run(&["show", id, "--json"]))).expect("json");
    v["state"].as_str().expect("state").to_string()
}

#[test]
fn an_expired_or_viewer_certificate_stops_at_the_pre_flight() {
    let lab = Lab::new(&DeviceSettings::default());
    let (id, code) = lab.device.request(&[]);
    let id = id.to_string();

    // alice's certificate (90 days) seen from 100 days on: expired.
    let mut cmd = std::process::Command::new(sibling_bin("support-admin"));
    cmd.arg("--home")
        .arg(lab.eng.home.path())
        .args(["approve", &code, "--provider", "local", "--yes"])
        .env("SUPPORT_ADMIN_PASSPHRASE", "")
        .stdin(std::process::Stdio::null());
    support_testkit::world::with_fake_clock(&mut cmd, "+100d");
    let out = cmd.output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("REFUSED before launching anything: your certificate expired at "),
        "{err}"
    );
    assert!(err.contains("stays approvable"), "{err}");

    // bob is enrolled and certified, but as a viewer.
    let bob = Engineer::new(&lab.cp, None, "bob");
    let cert = ok(&admin_in(
        lab.ca.home.path(),
        &["ca", "sign", "bob", &bob.approver_key, "--role", "viewer"],
    ));
    install_certificate(bob.home.path(), &cert);
    let out = bob.run(&["approve", &code, "--provider", "local", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("your certificate is for the Viewer role, which may not approve"),
        "{err}"
    );

    // Nothing was spent: no hub, no approval; alice (now) approves.
    assert_eq!(relays_for(&id), 0);
    assert_eq!(state_of(&lab.eng, &id), "pending");
    let out = lab
        .eng
        .run(&["approve", &code, "--provider", "local", "--yes"]);
    assert_eq!(ok(&out).trim(), id);
    assert_eq!(state_of(&lab.eng, &id), "connected");
}

#[test]
fn a_second_approve_launches_no_second_hub() {
    let mut lab = Lab::new(&DeviceSettings::default());
    let (id, code) = lab.device.request(&[]);
    let id = id.to_string();
    // The device is down: the approval stays posted, its hub up.
    lab.device.crash();
    ok(&lab.eng.run(&[
        "approve",
        &code,
        "--provider",
        "local",
        "--wait",
        "0",
        "--yes",
    ]));
    assert_eq!(state_of(&lab.eng, &id), "approved");
    assert_eq!(relays_for(&id), 1);
    let out = lab
        .eng
        .run(&["approve", &code, "--provider", "local", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already has your hub"), "{err}");
    assert!(err.contains(&format!("support-admin wait {id}")), "{err}");
    assert_eq!(relays_for(&id), 1, "still one hub");

    // Another engineer cannot launch one either.
    let carol = Engineer::new(&lab.cp, Some(&lab.ca), "carol");
    let out = carol.run(&["approve", &code, "--provider", "local", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already approved (approval #1) by another engineer"),
        "{err}"
    );
    assert_eq!(relays_for(&id), 1);

    // The device comes back: `wait` sees it connect under the one approval.
    lab.device.start_daemon(None);
    let out = lab.eng.run(&["wait", &id, "--wait", "60"]);
    assert_eq!(ok(&out).trim(), id);
    assert_eq!(state_of(&lab.eng, &id), "connected");
}
