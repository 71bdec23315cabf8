//! The GCP provider against a local fake of the Compute Engine API and the
//! token endpoint: the exact requests, no secret in any of them, and the
//! whole flow through the hub the fake "boots" from the startup script.

mod common;

use std::process::Command;
use std::time::Duration;

use common::fake_gcp::{FakeGcp, TOKEN};
use common::*;

const PROJECT: &str = "support-test";
const ZONE: &str = "europe-west1-b";
const SHA: &str = "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4";

/// A service-account key made with openssl, and its public half (PKCS#1 DER).
fn service_account(dir: &std::path::Path, token_url: &str) -> (std::path::PathBuf, Vec<u8>) {
    let pem = dir.join("sa.pem");
    let der = dir.join("sa.pub.der");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .status()
        .expect("openssl");
    assert!(st.success());
    let st = Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "client_email": "hubs@support-test.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(&pem).expect("pem"),
        "token_uri": token_url,
    });
    let path = dir.join("sa.json");
    std::fs::write(&path, json.to_string()).expect("sa.json");
    (path, std::fs::read(&der).expect("der"))
}

fn admin_gcp(lab: &Lab, sa: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(ADMIN)
        .arg("--home")
        .arg(lab.eng.home.path())
        .args(args)
        .env("SUPPORT_ADMIN_PASSPHRASE", "")
        .env("GOOGLE_APPLICATION_CREDENTIALS", sa)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("support-admin")
}

#[test]
fn gcp_hubs_are_launched_used_and_deleted_with_exactly_these_requests() {
    let lab = Lab::new(&DeviceSettings::default());
    let keys_dir = tempdir();
    // The token endpoint's URL is only known once the fake runs; the key first.
    let (sa0, der) = service_account(keys_dir.path(), "http://unused/token");
    let fake = FakeGcp::start(der, PROJECT, ZONE);
    let mut sa_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sa0).expect("sa")).expect("json");
    sa_json["token_uri"] = serde_json::json!(format!("{}/token", fake.url));
    std::fs::write(&sa0, sa_json.to_string()).expect("sa");
    let port = support_testkit::free_udp_port();
    lab.eng.append_toml(&format!(
        "\n[gcp]\nproject = \"{PROJECT}\"\nzone = \"{ZONE}\"\n\
         relay_url = \"https://downloads.example.com/support-relay-0.1.0\"\n\
         relay_sha256 = \"{SHA}\"\nport = {port}\napi = \"{}\"\n",
        fake.url
    ));

    let (id, code) = lab.device.request(&[]);
    let out = admin_gcp(&lab, &sa0, &["approve", &code, "--provider", "gcp"]);
    let stdout = ok(&out);
    assert_eq!(stdout.trim(), id.to_string());
    let id = id.to_string();
    let out = admin_gcp(&lab, &sa0, &["exec", &id, "--", "id -un"]);
    assert_eq!(ok(&out).trim(), format!("support-{id}"));

    // The secrets this machine holds for the tunnel, for the hunt below.
    let record =
        std::fs::read_to_string(lab.eng.records_dir().join(format!("{id}.json"))).expect("record");
    let rec: serde_json::Value = serde_json::from_str(&record).expect("json");
    let identity = std::fs::read_to_string(lab.eng.home.path().join("identity.key")).expect("id");
    let ident: serde_json::Value = serde_json::from_str(&identity).expect("json");
    let secrets = [
        code.clone(),
        code.replace('-', ""),
        rec["seed"].as_str().expect("seed").to_string(),
        rec["secret"].as_str().expect("secret").to_string(),
        ident["control_plane_secret"]
            .as_str()
            .expect("k")
            .to_string(),
        ident["approver_seed"].as_str().expect("k").to_string(),
    ];

    ok(&admin_gcp(&lab, &sa0, &["stop", &id]));
    wait_for("the device to tear down", Duration::from_secs(15), || {
        !user_exists(&format!("support-{id}"))
    });

    let seen = fake.seen();
    let calls: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    let zone = format!("/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances");
    let fw = format!("/compute/v1/projects/{PROJECT}/global/firewalls");
    let name = format!("support-hub-{id}");
    // One token per run of support-admin (approve, exec, stop), then the calls.
    let expected_start = [
        "POST /token".to_string(),
        format!("GET {fw}/support-hub-udp-{port}"),
        format!("POST {fw}"),
        format!("POST {zone}"),
        format!("GET {zone}/{name}"),
    ];
    assert_eq!(
        calls[..expected_start.len()],
        expected_start[..],
        "{calls:#?}"
    );
    assert_eq!(
        calls[calls.len() - 2..],
        ["POST /token".to_string(), format!("DELETE {zone}/{name}")],
        "{calls:#?}"
    );
    for s in seen.iter().filter(|s| s.path != "/token") {
        assert_eq!(
            s.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
    }

    let firewall: serde_json::Value = serde_json::from_str(
        &seen
            .iter()
            .find(|s| s.method == "POST" && s.path == fw)
            .expect("fw")
            .body,
    )
    .expect("json");
    assert_eq!(firewall["direction"], "INGRESS");
    assert_eq!(firewall["targetTags"], serde_json::json!(["support-hub"]));
    assert_eq!(
        firewall["allowed"],
        serde_json::json!([{"IPProtocol": "udp", "ports": [port.to_string()]}]),
        "only the relay's UDP port"
    );

    let insert: serde_json::Value = serde_json::from_str(
        &seen
            .iter()
            .find(|s| s.method == "POST" && s.path == zone)
            .expect("insert")
            .body,
    )
    .expect("json");
    assert_eq!(insert["name"], name);
    assert_eq!(
        insert["machineType"],
        format!("zones/{ZONE}/machineTypes/e2-micro")
    );
    assert_eq!(insert["labels"]["support-tunnel"], id);
    assert_eq!(insert["tags"]["items"], serde_json::json!(["support-hub"]));
    assert_eq!(insert["scheduling"]["instanceTerminationAction"], "DELETE");
    let run: u64 = insert["scheduling"]["maxRunDuration"]["seconds"]
        .as_str()
        .expect("seconds")
        .parse()
        .expect("number");
    assert_eq!(
        run,
        3600 + 300 + 600,
        "the tunnel's time, the wait to connect, a margin"
    );
    assert_eq!(
        insert["disks"][0]["initializeParams"]["sourceImage"],
        "projects/debian-cloud/global/images/family/debian-12"
    );
    let script = insert["metadata"]["items"][0]["value"]
        .as_str()
        .expect("script");
    assert_eq!(insert["metadata"]["items"][0]["key"], "startup-script");
    assert!(script.contains("'https://downloads.example.com/support-relay-0.1.0'"));
    assert!(script.contains(&format!("echo '{SHA}  '\"$tmp\" | sha256sum -c -")));
    assert!(script.contains("DynamicUser=yes") && script.contains("NoNewPrivileges=yes"));
    assert!(script.contains(&format!("--listen 0.0.0.0:{port} --tunnel {id}")));

    // DESIGN invariant 4: nothing secret reaches the provider.
    for s in &seen {
        for secret in &secrets {
            assert!(
                !s.body.contains(secret.as_str()),
                "{} {} carries a secret",
                s.method,
                s.path
            );
        }
    }

    // gc finds a hub VM no record knows, by its label, and deletes it.
    fake.add_instance("support-hub-orphan", &id);
    let out = admin_gcp(&lab, &sa0, &["gc"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(&out);
    assert!(err.contains("orphan hub support-hub-orphan (gcp)"), "{err}");
    assert!(fake.instance_names().is_empty());
}
