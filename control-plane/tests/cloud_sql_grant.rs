//! The one grant infra/ gives the control plane's Cloud SQL user
//! (`infra/cloud-sql-grant.sql`), on a throwaway cluster set up with Cloud
//! SQL's roles: the databases belong to `cloudsqlsuperuser` (not a
//! superuser), the built-in admin user is a member of it, and an IAM
//! service-account user has LOGIN and nothing else. Without the grant the
//! control plane refuses to start and says why; with it, it migrates,
//! serves, and owns the tables it made. The store URL is the form
//! infra/database.tf writes, with the `@` of the IAM user name encoded.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::{psql, Cluster};
use common::*;
use support_protocol::messages::{AdminResponse, DeviceResponse};

/// Cloud SQL's name for the control plane's service account
/// (support-control-plane@PROJECT.iam.gserviceaccount.com).
const IAM_USER: &str = "support-control-plane@acme-support.iam";

/// `postgresql://USER@/DB?host=…` on the cluster's socket directory.
fn url_as(cluster: &Cluster, user_encoded: &str, db: &str) -> String {
    let host = cluster
        .url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("host="))
        .expect("the cluster's URL names its socket directory");
    format!("postgresql://{user_encoded}@/{db}?host={host}")
}

/// The grant as `templatefile()` renders it for `user`.
fn rendered_grant(user: &str) -> String {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/cloud-sql-grant.sql"),
    )
    .expect("infra/cloud-sql-grant.sql");
    assert!(template.contains("${db_user}"), "{template}");
    template.replace("${db_user}", user)
}

/// Runs `serve` on `store` and waits for it to exit; panics if it serves.
fn serve_fails(store: &str) -> String {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(["--store", store])
        .env("SUPPORT_CP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the control plane kept running on a database it may not create tables in");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("reads");
    assert!(!status.success(), "{stderr}");
    stderr
}

#[test]
fn the_cloud_sql_grant_is_what_the_control_plane_needs_to_start_and_serve() {
    let cluster = Cluster::start();
    // Cloud SQL's roles, as its documentation describes them.
    psql(
        &cluster.url,
        &format!(
            "CREATE ROLE cloudsqlsuperuser NOLOGIN CREATEROLE CREATEDB; \
             CREATE ROLE cloudsql_admin LOGIN IN ROLE cloudsqlsuperuser; \
             CREATE ROLE \"{IAM_USER}\" LOGIN"
        ),
    );
    psql(
        &cluster.url,
        "CREATE DATABASE support_cp OWNER cloudsqlsuperuser",
    );
    let store = url_as(&cluster, &IAM_USER.replace('@', "%40"), "support_cp");

    let refused = serve_fails(&store);
    assert!(
        refused.contains("permission denied for schema public")
            && refused.contains("GRANT USAGE, CREATE ON SCHEMA public"),
        "the error says what is missing and how to grant it: {refused}"
    );

    // `gcloud sql import sql` runs the file as the built-in admin user.
    psql(
        &url_as(&cluster, "cloudsql_admin", "support_cp"),
        &rendered_grant(IAM_USER),
    );

    let server = Server::start_on(tempfile::tempdir().expect("temp dir"), Some(store), &[]);
    let client = server.client();
    let device = Device::new();
    match ok_device(device.create(&client)) {
        DeviceResponse::Created { tunnel_id, .. } => assert_eq!(tunnel_id, device.id()),
        other => panic!("{other:?}"),
    }
    let admin = admin_key();
    server.enroll("alice", &admin, "viewer");
    match ok_admin(client.admin_req(&admin, list_req())) {
        AdminResponse::List { tunnels, .. } => assert_eq!(tunnels.len(), 1),
        other => panic!("{other:?}"),
    }

    // Its tables are its own, so later migrations can alter them.
    let owners = psql(
        &url_as(&cluster, "cloudsql_admin", "support_cp"),
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(owners.trim(), IAM_USER);
}
