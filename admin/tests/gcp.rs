//! The GCP provider against a local fake of the Compute Engine API, the
//! token endpoint and the metadata server: the exact requests, each checked
//! against Google's published discovery document, no secret in any of them,
//! the whole flow through the hub the fake "boots" from the startup script,
//! a missing firewall rule refused before anything is spent, and every
//! source of Application Default Credentials.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::discovery::Discovery;
use common::fake_gcp::*;
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
        .stderr(std::process::Stdio::null())
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

/// A service-account key whose token endpoint is a fake that checks it.
fn key_and_fake(dir: &std::path::Path) -> (std::path::PathBuf, FakeGcp) {
    // The token endpoint's URL is only known once the fake runs; the key first.
    let (sa, der) = service_account(dir, "http://unused/token");
    let fake = FakeGcp::start(der, PROJECT, ZONE);
    let mut sa_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sa).expect("sa")).expect("json");
    sa_json["token_uri"] = serde_json::json!(format!("{}/token", fake.url));
    std::fs::write(&sa, sa_json.to_string()).expect("sa");
    (sa, fake)
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
    let (sa0, fake) = key_and_fake(keys_dir.path());
    let port = support_testkit::free_udp_port();
    fake.add_firewall(PROJECT, port);
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

    // The firewall belongs to infra/: engineers only read it.
    assert!(
        !seen
            .iter()
            .any(|s| s.path.starts_with(&fw) && s.method != "GET"),
        "{calls:#?}"
    );
    // Every call is a Compute Engine v1 method as Google publishes it, with
    // known query parameters and a body whose every field, type and enum
    // value the discovery document allows.
    let discovery = Discovery::load();
    let mut methods = Vec::new();
    for s in seen.iter().filter(|s| s.path != "/token") {
        let method = discovery
            .method_for(&s.method, &s.path)
            .unwrap_or_else(|e| panic!("{} {}: {e}", s.method, s.path));
        if s.method == "POST" {
            let body: serde_json::Value = serde_json::from_str(&s.body).expect("json body");
            let errors = discovery.check_request(method, &body);
            assert!(errors.is_empty(), "{} {}: {errors:#?}", s.method, s.path);
        }
        methods.push(method["id"].as_str().expect("id").to_string());
    }
    for m in [
        "compute.firewalls.get",
        "compute.instances.insert",
        "compute.instances.get",
        "compute.instances.delete",
    ] {
        assert!(
            methods.iter().any(|x| x == m),
            "{m} not called: {methods:?}"
        );
    }

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
    // Hubs go into infra/'s network, never `default` (its default-allow-ssh).
    let nic = &insert["networkInterfaces"][0];
    assert_eq!(nic["network"], "global/networks/support-tunnel");
    assert_eq!(
        nic["subnetwork"],
        "regions/europe-west1/subnetworks/support-hubs"
    );
    // The hub runs as infra/'s hub account, whose token can only read storage.
    assert_eq!(
        insert["serviceAccounts"],
        serde_json::json!([{
            "email": "support-hub@support-test.iam.gserviceaccount.com",
            "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"],
        }])
    );
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
    // The relay cannot power the VM off (DynamicUser); the VM ends at
    // maxRunDuration with DELETE (above), or by stop/gc, and a crashed relay
    // is restarted meanwhile.
    assert!(!script.contains("poweroff"), "{script}");
    assert!(script.contains("Restart=on-failure"), "{script}");
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
    // What is not a hub (no label) is never touched.
    fake.add_instance("support-hub-orphan", &id);
    fake.add_other_instance("support-control-plane");
    let out = admin_gcp(&lab, &sa0, &["gc"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(&out);
    assert!(err.contains("orphan hub support-hub-orphan (gcp)"), "{err}");
    assert_eq!(fake.instance_names(), ["support-control-plane"]);
}

/// `[gcp]` pointing at the fake.
fn gcp_toml(fake: &FakeGcp, port: u16) -> String {
    format!(
        "\n[gcp]\nproject = \"{PROJECT}\"\nzone = \"{ZONE}\"\n\
         relay_url = \"https://storage.googleapis.com/{PROJECT}-support-artifacts/relay/0.1.0/support-relay\"\n\
         relay_sha256 = \"{SHA}\"\nport = {port}\napi = \"{}\"\n",
        fake.url
    )
}

#[test]
fn approve_without_the_hub_firewall_rule_spends_nothing_and_says_which_apply_creates_it() {
    let lab = Lab::new(&DeviceSettings::default());
    let keys_dir = tempdir();
    let (sa0, fake) = key_and_fake(keys_dir.path());
    let port = support_testkit::free_udp_port();
    lab.eng.append_toml(&gcp_toml(&fake, port));

    let (id, code) = lab.device.request(&[]);
    let out = admin_gcp(&lab, &sa0, &["approve", &code, "--provider", "gcp"]);
    assert!(!out.status.success());
    // The refusal, once, with the hub error's own sentence.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "support-admin: REFUSED before launching anything: the hub cannot be launched: \
             the hub firewall rule support-hub-udp-{port} does not exist in project {PROJECT}: \
             it belongs to the deployment; run `tofu apply` in infra/ (network.tf creates it, \
             with relay_port = {port})\n"
        )),
        "{err}"
    );
    let calls: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(
        !calls.iter().any(|c| c.starts_with("POST /compute")),
        "something was created: {calls:#?}"
    );
    assert!(fake.instance_names().is_empty());

    // Nothing was spent: once infra/ is applied, the same code approves.
    fake.add_firewall(PROJECT, port);
    let out = admin_gcp(&lab, &sa0, &["approve", &code, "--provider", "gcp"]);
    assert_eq!(ok(&out).trim(), id.to_string());
    ok(&admin_gcp(&lab, &sa0, &["stop", &id.to_string()]));
}

/// `support-admin gc` with only `env` as credentials; the token the fake's
/// list call carried.
fn gc_with(eng: &Engineer, fake: &FakeGcp, env: &[(&str, &str)]) -> (Output, Option<String>) {
    let before = fake.seen().len();
    let mut cmd = Command::new(ADMIN);
    cmd.arg("--home")
        .arg(eng.home.path())
        .arg("gc")
        .env("SUPPORT_ADMIN_PASSPHRASE", "")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("CLOUDSDK_CONFIG")
        .env_remove("GCE_METADATA_HOST")
        // No gcloud on PATH, and no home with a credentials file.
        .env("PATH", "/nonexistent")
        .env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("support-admin");
    let list = fake.seen()[before..]
        .iter()
        .find(|s| s.path.contains("/instances?"))
        .and_then(|s| s.authorization.clone());
    (out, list)
}

#[test]
fn application_default_credentials_come_from_every_place_google_s_libraries_look() {
    let cp = ControlPlane::start(&[]);
    let eng = Engineer::new(&cp, None, "alice");
    let dir = tempdir();
    let (sa, fake) = key_and_fake(dir.path());
    eng.append_toml(&gcp_toml(&fake, DEFAULT_PORT_FOR_TEST));
    let bearer = |t: &str| Some(format!("Bearer {t}"));

    // 1. GOOGLE_APPLICATION_CREDENTIALS naming a user's authorized_user file
    // (what `gcloud auth application-default login` writes).
    let user = serde_json::json!({
        "type": "authorized_user",
        "client_id": USER_CLIENT_ID,
        "client_secret": USER_CLIENT_SECRET,
        "refresh_token": USER_REFRESH_TOKEN,
        "token_uri": format!("{}/token", fake.url),
    });
    let user_file = dir.path().join("user.json");
    std::fs::write(&user_file, user.to_string()).expect("user.json");
    let (out, token) = gc_with(
        &eng,
        &fake,
        &[("GOOGLE_APPLICATION_CREDENTIALS", path_str(&user_file))],
    );
    ok(&out);
    assert_eq!(token, bearer(USER_TOKEN));

    // 2. The same file in gcloud's well-known place, found without any variable.
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir(&gcloud).expect("dir");
    std::fs::copy(
        &user_file,
        gcloud.join("application_default_credentials.json"),
    )
    .expect("copy");
    let (out, token) = gc_with(&eng, &fake, &[("CLOUDSDK_CONFIG", path_str(&gcloud))]);
    ok(&out);
    assert_eq!(token, bearer(USER_TOKEN));

    // 3. On a Google Cloud VM: the metadata server (with its header).
    let host = fake.url.trim_start_matches("http://");
    let (out, token) = gc_with(&eng, &fake, &[("GCE_METADATA_HOST", host)]);
    ok(&out);
    assert_eq!(token, bearer(METADATA_TOKEN));
    let asked = fake
        .seen()
        .into_iter()
        .rfind(|s| s.path.starts_with("/computeMetadata/"))
        .expect("the metadata server was asked");
    assert!(asked
        .headers
        .iter()
        .any(|(k, v)| k == "metadata-flavor" && v == "Google"));

    // The order: the variable before the well-known file, the file before
    // the metadata server.
    let (out, token) = gc_with(
        &eng,
        &fake,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", path_str(&sa)),
            ("CLOUDSDK_CONFIG", path_str(&gcloud)),
            ("GCE_METADATA_HOST", host),
        ],
    );
    ok(&out);
    assert_eq!(token, bearer(TOKEN));
    let (out, token) = gc_with(
        &eng,
        &fake,
        &[
            ("CLOUDSDK_CONFIG", path_str(&gcloud)),
            ("GCE_METADATA_HOST", host),
        ],
    );
    ok(&out);
    assert_eq!(token, bearer(USER_TOKEN));

    // A VM without a service account (the metadata server answers 404) has
    // no credential there: the chain goes on (to gcloud, absent here).
    fake.metadata_without_account();
    let (out, _) = gc_with(&eng, &fake, &[("GCE_METADATA_HOST", host)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let none_found = "support-admin: no GCP credentials: run `gcloud auth application-default \
                      login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key\n";
    assert!(err.contains(none_found), "{err}");

    // 4. Nothing anywhere: a clear error naming what to do.
    let (out, _) = gc_with(&eng, &fake, &[("GCE_METADATA_HOST", "127.0.0.1:9")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(none_found), "{err}");

    // A credential type this CLI does not speak is named, not misread.
    let other = dir.path().join("external.json");
    std::fs::write(&other, r#"{"type": "external_account", "audience": "x"}"#).expect("write");
    let (out, _) = gc_with(
        &eng,
        &fake,
        &[("GOOGLE_APPLICATION_CREDENTIALS", path_str(&other))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "support-admin: {}: credentials of type \"external_account\" are not supported; \
             use a service-account key, `gcloud auth application-default login`, or the \
             metadata server\n",
            other.display()
        )),
        "{err}"
    );
    // A wrong refresh token is the endpoint's refusal, shown.
    let mut bad = user.clone();
    bad["refresh_token"] = serde_json::json!("revoked");
    std::fs::write(&user_file, bad.to_string()).expect("write");
    let (out, _) = gc_with(
        &eng,
        &fake,
        &[("GOOGLE_APPLICATION_CREDENTIALS", path_str(&user_file))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("support-admin: the token endpoint answered 400 without a token \""),
        "{err}"
    );
}

const DEFAULT_PORT_FOR_TEST: u16 = 51820;

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_discovery_check_refuses_unknown_fields_bad_enums_types_and_parameters() {
    let d = Discovery::load();
    let insert = d
        .method_for("POST", "/compute/v1/projects/p/zones/z/instances")
        .expect("insert");
    assert_eq!(insert["id"], "compute.instances.insert");
    let good = serde_json::json!({
        "name": "support-hub-1",
        "labels": {"support-tunnel": "1"},
        "scheduling": {"instanceTerminationAction": "DELETE", "maxRunDuration": {"seconds": "60"}},
    });
    assert_eq!(d.check_request(insert, &good), Vec::<String>::new());
    for (bad, why) in [
        (
            serde_json::json!({"nmae": "x"}),
            "Instance.nmae: no such field",
        ),
        (
            serde_json::json!({"scheduling": {"instanceTerminationAction": "DESTROY"}}),
            "is not one of",
        ),
        (
            serde_json::json!({"scheduling": {"maxRunDuration": {"seconds": 60}}}),
            "is not a \"string\" (int64)",
        ),
        (
            serde_json::json!({"tags": {"items": "support-hub"}}),
            "expected an array",
        ),
        (serde_json::json!({"status": "RUNNING"}), "output-only"),
    ] {
        let errors = d.check_request(insert, &bad);
        assert!(errors.iter().any(|e| e.contains(why)), "{bad}: {errors:?}");
    }
    let list = "/compute/v1/projects/p/zones/z/instances?filter=labels.support-tunnel%3A*";
    assert_eq!(
        d.method_for("GET", list).expect("list")["id"],
        "compute.instances.list"
    );
    let refused = d.method_for("GET", "/compute/v1/projects/p/zones/z/instances?filtre=x");
    assert!(matches!(refused, Err(e) if e.contains("no query parameter")));
    let unknown = d.method_for("PUT", "/compute/v1/projects/p/global/firewalls/x/y");
    assert!(
        matches!(&unknown, Err(e) if e.starts_with("no Compute Engine method is PUT ")),
        "{unknown:?}"
    );
}
