//! The one grant infra/ gives the control plane's Cloud SQL user
//! (`infra/cloud-sql-grant.sql`), on a throwaway cluster set up with Cloud
//! SQL's roles: the databases belong to `cloudsqlsuperuser` (not a
//! superuser), the built-in admin user is a member of it, and an IAM
//! service-account user has LOGIN and nothing else. Without the grant the
//! control plane refuses to start and says why; with it, it migrates,
//! serves, and owns the tables it made. The store URL is the form
//! infra/database.tf writes, with the `@` of the IAM user name encoded.

mod common;

use std::path::Path;

use common::postgres::{psql, Cluster};
use common::*;
use support_protocol::messages::AdminResponse;

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

    let empty = tempfile::tempdir().expect("temp dir");
    let refused = serve_refused(empty.path(), Some(&store));
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
    Device::requested(&client);
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
