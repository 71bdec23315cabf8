# The control-plane VMs: Debian 12, a static address each, and a startup
# script that installs the support-control-plane .deb from the artifacts
# bucket (checked by sha256) on every boot.
#
# With the redb store (the default): one VM, its store on a persistent disk
# of its own (snapshotted daily). With control_plane_store = "cloud-sql":
# control_plane_replicas VMs sharing the Cloud SQL store (database.tf),
# each with its own address; devices and engineers list every URL and fail
# over between them. No load balancer: the clients already fail over, and
# a regional TCP balancer in front would be one more address to pin.

locals {
  cp_name        = "support-control-plane"
  cp_data_device = "support-cp-data"
  cp_data_dir    = "/var/lib/support-control-plane"

  # name => zone. The first keeps the name a single VM always had (and its
  # state addresses, through the moved blocks below).
  cp_zones = length(var.control_plane_zones) > 0 ? var.control_plane_zones : [var.zone]
  cp_replicas = {
    for i in range(var.control_plane_replicas) :
    (i == 0 ? local.cp_name : "${local.cp_name}-${i + 1}") => local.cp_zones[i % length(local.cp_zones)]
  }
  cp_first = local.cp_name

  cp_dns = var.dns_managed_zone != "" && var.dns_record_name != ""
  cp_hosts = {
    for name, _ in local.cp_replicas : name => (
      local.cp_dns ? trimsuffix(local.cp_dns_names[name], ".") : google_compute_address.control_plane[name].address
    )
  }
  cp_dns_names = {
    for name, _ in local.cp_replicas : name => (name == local.cp_first ? var.dns_record_name : "${name}.${var.dns_record_name}")
  }
  # In replica order: the first is the one a single-URL config names.
  cp_urls = [for name, _ in local.cp_replicas : "http://${local.cp_hosts[name]}:${var.control_plane_port}"]
  cp_url  = local.cp_urls[0]
}

# Before replicas, each of these was a single resource; their state moves
# to the first replica's key (or index 0), so an existing deployment keeps
# its VM, address and disk.
moved {
  from = google_compute_address.control_plane
  to   = google_compute_address.control_plane["support-control-plane"]
}

moved {
  from = google_compute_instance.control_plane
  to   = google_compute_instance.control_plane["support-control-plane"]
}

moved {
  from = google_dns_record_set.control_plane[0]
  to   = google_dns_record_set.control_plane["support-control-plane"]
}

moved {
  from = google_compute_disk.control_plane_data
  to   = google_compute_disk.control_plane_data[0]
}

moved {
  from = google_compute_resource_policy.control_plane_snapshots
  to   = google_compute_resource_policy.control_plane_snapshots[0]
}

moved {
  from = google_compute_disk_resource_policy_attachment.control_plane_snapshots
  to   = google_compute_disk_resource_policy_attachment.control_plane_snapshots[0]
}

resource "google_compute_address" "control_plane" {
  for_each = local.cp_replicas

  name         = each.key
  description  = "support-tunnel control plane: the address devices and admins name in their config."
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
}

# The store (redb file, static keys, operator socket): a disk of its own, so
# that the VM can be replaced (new image, new machine type) without touching
# it. prevent_destroy: `tofu destroy` stops here; remove the line on purpose
# if the store is really to go (the snapshots and backups stay).
resource "google_compute_disk" "control_plane_data" {
  count = local.cloud_sql ? 0 : 1

  name        = local.cp_data_device
  description = "support-tunnel control plane store (/var/lib/support-control-plane)."
  zone        = var.zone
  type        = "pd-balanced"
  size        = var.control_plane_disk_size_gb

  #checkov:skip=CKV_GCP_37:Customer-supplied keys would have to be handed over at every attach and restore (and would sit in the state); the disk is encrypted at rest by Google, and nothing on it (bookkeeping, the control plane's own Noise key) grants access to a device: approvals are sealed and signed by engineers' CA-certified keys.

  lifecycle {
    prevent_destroy = true
  }
}

# Daily snapshots of the data disk, kept var.snapshot_retention_days, kept
# also if the disk is deleted. They complement the control plane's own
# backups (a consistent redb copy in the backups bucket): a snapshot is
# crash-consistent and restores the whole disk in one step.
resource "google_compute_resource_policy" "control_plane_snapshots" {
  count = local.cloud_sql ? 0 : 1

  name        = "support-cp-data-daily"
  description = "Daily snapshots of the support-tunnel control plane's data disk."
  region      = var.region

  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = "03:00" # UTC
      }
    }
    retention_policy {
      max_retention_days    = var.snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }
    snapshot_properties {
      storage_locations = [var.region]
      guest_flush       = false
      labels            = { snapshot-of = local.cp_data_device }
    }
  }
}

resource "google_compute_disk_resource_policy_attachment" "control_plane_snapshots" {
  count = local.cloud_sql ? 0 : 1

  name = google_compute_resource_policy.control_plane_snapshots[0].name
  disk = google_compute_disk.control_plane_data[0].name
  zone = var.zone
}

resource "google_compute_instance" "control_plane" {
  for_each = local.cp_replicas

  name         = each.key
  description  = "support-tunnel control plane (bookkeeping only: never sees a private key, PSK or one-time secret)."
  machine_type = var.control_plane_machine_type
  zone         = each.value

  # Only this tag: the hub tag would open the relay port to it and
  # the hub label would make `support-admin gc` treat it as a hub.
  tags = [local.cp_tag]

  # Engineers hold compute.instances.delete on the project (they delete
  # hubs); this keeps that from reaching the control plane.
  deletion_protection = var.control_plane_deletion_protection

  # A new startup script (a new package) is applied by updating the
  # metadata in place; it runs at the next boot (or at once with
  # `sudo google_metadata_script_runner startup` on the VM).
  allow_stopping_for_update = true

  boot_disk {
    auto_delete = true
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = 10
      type  = "pd-balanced"
    }
  }

  # The redb store's disk (none with Cloud SQL: the data directory then
  # holds only the keys from Secret Manager and the operator socket).
  dynamic "attached_disk" {
    for_each = google_compute_disk.control_plane_data
    content {
      source      = attached_disk.value.self_link
      device_name = local.cp_data_device
      mode        = "READ_WRITE"
    }
  }

  network_interface {
    subnetwork = local.subnetwork
    access_config {
      nat_ip       = google_compute_address.control_plane[each.key].address
      network_tier = "PREMIUM"
    }
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    # No project-wide SSH keys; logins only through OS Login (IAM), and only
    # for var.operators (iam.tf).
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
    startup-script = templatefile("${path.module}/control-plane-startup.sh", {
      package_url    = var.control_plane_package_url
      package_sha256 = var.control_plane_package_sha256
      listen_port    = var.control_plane_port
      backup_url     = "gs://${google_storage_bucket.backups.name}/backups"
      data_device    = local.cloud_sql ? "" : local.cp_data_device
      data_dir       = local.cp_data_dir
      # Cloud SQL only (empty with redb): the store through the proxy,
      # the proxy itself, and where the shared keys are.
      store_url    = local.cloud_sql ? local.sql_store_url : ""
      sql_instance = local.cloud_sql ? google_sql_database_instance.store[0].connection_name : ""
      proxy_url    = local.cloud_sql ? "https://storage.googleapis.com/cloud-sql-connectors/cloud-sql-proxy/v${var.cloud_sql_proxy_version}/cloud-sql-proxy.linux.amd64" : ""
      proxy_sha256 = local.cloud_sql ? var.cloud_sql_proxy_sha256 : ""
      keys_secret  = local.cloud_sql ? "projects/${var.project}/secrets/${local.keys_secret_id}" : ""
      # One backup timer is enough for a shared store.
      run_backups = each.key == local.cp_first ? "yes" : "no"
    })
  }

  service_account {
    email = google_service_account.control_plane.email
    # Scopes narrow the VM's token further than IAM: read the package,
    # write backups, logs and metrics. IAM (iam.tf) is what actually limits
    # it to its own objects.
    # Secret Manager accepts only the cloud-platform scope; with Cloud SQL
    # the VM's token has it, and IAM alone limits what it reaches (its own
    # secret and instance).
    scopes = local.cloud_sql ? ["https://www.googleapis.com/auth/cloud-platform"] : [
      "https://www.googleapis.com/auth/devstorage.read_write",
      "https://www.googleapis.com/auth/logging.write",
      "https://www.googleapis.com/auth/monitoring.write",
    ]
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
    provisioning_model  = "STANDARD"
  }

  #checkov:skip=CKV_GCP_38:Customer-supplied boot-disk keys would have to be supplied at every start (and sit in the state); the boot disk holds only Debian and the package, encrypted at rest by Google.
  #checkov:skip=CKV_GCP_40:The control plane must have a public address: devices in people's homes and roaming engineers call it directly (var.control_plane_allowed_cidrs narrows who).

  lifecycle {
    precondition {
      condition     = can(regex("^${var.region}-[a-z]$", each.value))
      error_message = "Every control-plane zone must be in region (e.g. region europe-west1, zone europe-west1-b)."
    }
    precondition {
      condition     = local.cloud_sql || each.value == var.zone
      error_message = "With the redb store the VM stays in var.zone, where its data disk is: leave control_plane_zones empty (or start it with var.zone)."
    }
    precondition {
      condition     = local.cloud_sql || var.control_plane_replicas == 1
      error_message = "control_plane_replicas > 1 needs control_plane_store = \"cloud-sql\": a redb file has one writer."
    }
    precondition {
      condition     = !local.cloud_sql || var.cloud_sql_proxy_sha256 != ""
      error_message = "control_plane_store = \"cloud-sql\" needs cloud_sql_proxy_sha256 (from the proxy's release notes)."
    }
  }

  depends_on = [
    google_storage_bucket_iam_member.artifacts_control_plane,
    google_storage_bucket_iam_member.backups_control_plane,
    google_project_iam_member.control_plane_sql,
    google_secret_manager_secret_iam_member.control_plane_keys,
  ]
}

# Optional DNS names for the control plane, in an existing managed zone:
# dns_record_name for the first VM, <name>.<dns_record_name> for the others.
resource "google_dns_record_set" "control_plane" {
  for_each = local.cp_dns ? local.cp_replicas : {}

  managed_zone = var.dns_managed_zone
  name         = local.cp_dns_names[each.key]
  type         = "A"
  ttl          = 300
  rrdatas      = [google_compute_address.control_plane[each.key].address]
}
