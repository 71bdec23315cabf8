# Cloud SQL for PostgreSQL, with control_plane_store = "cloud-sql": the one
# store every control-plane replica shares (control-plane/README.md,
# "PostgreSQL"). With the default redb store none of this exists.
#
# How a replica reaches it, and why there is no password anywhere:
#  * the instance has a private address only, in a range reserved for
#    Google's services network and peered with this VPC (private services
#    access); no public IP, no authorized networks;
#  * it accepts TLS with a client certificate only: each VM runs the Cloud
#    SQL Auth Proxy on 127.0.0.1:5432 (the startup script), which opens
#    mutually authenticated TLS to the instance with an ephemeral
#    certificate issued to the VM's service account (roles/cloudsql.client,
#    on this instance only);
#  * the database user IS that service account (CLOUD_IAM_SERVICE_ACCOUNT):
#    the proxy logs it in with a short-lived OAuth token (--auto-iam-authn,
#    roles/cloudsql.instanceUser), so no password is stored, leaked or
#    rotated;
#  * that user may create tables in the database's public schema, granted
#    once by cloud-sql-grant.sql (Cloud SQL grants an IAM user nothing).
#
# The control plane's static Noise keys, which every replica must share
# (devices pin them), are a Secret Manager secret the operator writes once;
# each VM reads it at boot. Cloud SQL's daily backups and point-in-time
# recovery replace the data disk's snapshots; the first replica's backup
# timer still adds store copies (redb files) to the backups bucket.

locals {
  cloud_sql    = var.control_plane_store == "cloud-sql"
  sql_instance = "support-control-plane"
  sql_database = "support_cp"
  # Cloud SQL's name for a service account's database user: its email
  # without ".gserviceaccount.com".
  sql_user = trimsuffix(google_service_account.control_plane.email, ".gserviceaccount.com")
  # Through the proxy on the VM; the user name has an @, so it is encoded.
  sql_store_url    = "postgres://${urlencode(local.sql_user)}@127.0.0.1:5432/${local.sql_database}"
  keys_secret_id   = "support-control-plane-keys"
  sql_grant_object = "bootstrap/cloud-sql-grant.sql"
}

# Private services access: an internal range for Google's services network,
# and the peering that puts the instance's private address in this VPC.
resource "google_compute_global_address" "google_services" {
  count = local.cloud_sql ? 1 : 0

  name          = "support-google-services"
  description   = "support-tunnel: the range Google's services network (the Cloud SQL instance) takes its private addresses from."
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.cloud_sql_peering_range_prefix
  network       = local.network
}

# An existing network (create_network = false) that already has a
# servicenetworking connection cannot get a second one: add this range to
# that connection by hand first, and import it (infra/README.md).
resource "google_service_networking_connection" "google_services" {
  count = local.cloud_sql ? 1 : 0

  network                 = local.network
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.google_services[0].name]
  # Google refuses to delete the peering while its producer (the instance,
  # even deleted, for a few days) still uses it; a destroy leaves it.
  deletion_policy = "ABANDON"
}

resource "google_sql_database_instance" "store" {
  count = local.cloud_sql ? 1 : 0

  name                = local.sql_instance
  database_version    = "POSTGRES_15"
  region              = var.region
  deletion_protection = var.cloud_sql_deletion_protection

  settings {
    tier                        = var.cloud_sql_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.cloud_sql_high_availability ? "REGIONAL" : "ZONAL"
    deletion_protection_enabled = var.cloud_sql_deletion_protection
    disk_type                   = "PD_SSD"
    disk_autoresize             = true
    user_labels                 = merge(var.labels, { managed-by = "opentofu" })

    ip_configuration {
      ipv4_enabled    = false
      private_network = local.network
      # The proxy presents a client certificate; nothing else gets in.
      ssl_mode = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00" # UTC
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = var.cloud_sql_backup_count
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 3 # UTC
      update_track = "stable"
    }

    # Statement latencies without a log line per statement (see the
    # log_duration skip); no client addresses, no application tags.
    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = false
      record_client_address   = false
    }

    # The proxy's IAM login.
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    # What the database log records, for incident review: every connection
    # and its end (with the client's host name), schema changes (the
    # migrations, grants, and anyone else's), checkpoints, lock waits,
    # temporary files, errors with the statement that caused them. No
    # other statement texts: they carry device facts.
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
  }

  #checkov:skip=CKV_GCP_79:PostgreSQL 15 is the major version the store is tested against (Debian 12's, in scripts/test: the control plane's whole suite and the replica tests); moving to a newer one is a deliberate change, tested first, then done in place by Cloud SQL.
  #checkov:skip=CKV_GCP_110:pgAudit would log the control plane's statements, whose parameters are device facts; the control plane keeps its own hash-chained audit log of every change (audit verify), Cloud Audit Logs record every admin action on the instance, and the flags here log connections and every DDL statement.
  #checkov:skip=CKV2_GCP_13:log_duration writes a line for every statement, thousands a minute from devices' polls; Query Insights (insights_config) gives the latencies without them.

  depends_on = [google_service_networking_connection.google_services]
}

resource "google_sql_database" "store" {
  count = local.cloud_sql ? 1 : 0

  name     = local.sql_database
  instance = google_sql_database_instance.store[0].name
  # PostgreSQL refuses to drop a database the replicas are connected to;
  # it goes with the instance instead.
  deletion_policy = "ABANDON"
}

# The control plane's database user: its service account, logged in by the
# proxy with a token (no password).
resource "google_sql_user" "control_plane" {
  count = local.cloud_sql ? 1 : 0

  instance = google_sql_database_instance.store[0].name
  name     = local.sql_user
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
  # PostgreSQL cannot drop a role that owns tables; the user goes with the
  # instance instead.
  deletion_policy = "ABANDON"
}

# Connect (the proxy) and log in (IAM authentication), on this instance only.
resource "google_project_iam_member" "control_plane_sql" {
  for_each = toset(local.cloud_sql ? ["roles/cloudsql.client", "roles/cloudsql.instanceUser"] : [])

  project = var.project
  role    = each.value
  member  = google_service_account.control_plane.member
  condition {
    title       = "support-tunnel store only"
    description = "The control plane's Cloud SQL instance, no other."
    expression  = "resource.type != \"sqladmin.googleapis.com/Instance\" || resource.name == \"projects/${var.project}/instances/${local.sql_instance}\""
  }
}

# The one grant the database user needs, as a file `gcloud sql import sql`
# runs (the cloud_sql_bootstrap output prints the command). The instance's
# own service account reads it from the artifacts bucket.
resource "google_storage_bucket_object" "sql_grant" {
  count = local.cloud_sql ? 1 : 0

  bucket       = google_storage_bucket.artifacts.name
  name         = local.sql_grant_object
  content_type = "application/sql"
  content = templatefile("${path.module}/cloud-sql-grant.sql", {
    db_user = local.sql_user
  })
}

resource "google_storage_bucket_iam_member" "artifacts_cloud_sql" {
  count = local.cloud_sql ? 1 : 0

  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_sql_database_instance.store[0].service_account_email_address}"
  condition {
    title       = "the grant file only"
    description = "Cloud SQL reads the file gcloud sql import runs, and nothing else in the bucket."
    expression  = "resource.name == \"projects/_/buckets/${google_storage_bucket.artifacts.name}/objects/${local.sql_grant_object}\""
  }
}

# The control plane's static Noise keys, shared by every replica: lines
# "<number> <64 hex digits>" (the files DATA/server-keys/<number>.key).
# Written by the operator (DEPLOY.md); only the control plane's account
# may read it, and Terraform never sees its value.
resource "google_secret_manager_secret" "control_plane_keys" {
  count = local.cloud_sql ? 1 : 0

  secret_id = local.keys_secret_id
  # The keys every device pins: a destroy, or a switch back to redb, stops
  # here instead of deleting them (like the redb data disk's prevent_destroy).
  deletion_protection = var.cloud_sql_deletion_protection
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_iam_member" "control_plane_keys" {
  count = local.cloud_sql ? 1 : 0

  secret_id = google_secret_manager_secret.control_plane_keys[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.control_plane.member
}
