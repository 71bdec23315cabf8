# The control-plane VM: Debian 12, its store on a persistent disk of its own
# (snapshotted daily), a static address, and a startup script that installs
# the support-control-plane .deb from the artifacts bucket (checked by
# sha256) on every boot.

locals {
  cp_name        = "support-control-plane"
  cp_data_device = "support-cp-data"
  cp_data_dir    = "/var/lib/support-control-plane"

  cp_host = var.dns_managed_zone != "" && var.dns_record_name != "" ? trimsuffix(var.dns_record_name, ".") : google_compute_address.control_plane.address
  cp_url  = "http://${local.cp_host}:${var.control_plane_port}"
}

resource "google_compute_address" "control_plane" {
  name         = local.cp_name
  description  = "support-tunnel control plane: the address devices and admins pin in their config."
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
}

# The store (redb file, static keys, operator socket): a disk of its own, so
# that the VM can be replaced (new image, new machine type) without touching
# it. prevent_destroy: `tofu destroy` stops here; remove the line on purpose
# if the store is really to go (the snapshots and backups stay).
resource "google_compute_disk" "control_plane_data" {
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
  name = google_compute_resource_policy.control_plane_snapshots.name
  disk = google_compute_disk.control_plane_data.name
  zone = var.zone
}

resource "google_compute_instance" "control_plane" {
  name         = local.cp_name
  description  = "support-tunnel control plane (bookkeeping only: never sees a private key, PSK or one-time secret)."
  machine_type = var.control_plane_machine_type
  zone         = var.zone

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

  attached_disk {
    source      = google_compute_disk.control_plane_data.self_link
    device_name = local.cp_data_device
    mode        = "READ_WRITE"
  }

  network_interface {
    subnetwork = local.subnetwork
    access_config {
      nat_ip       = google_compute_address.control_plane.address
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
      data_device    = local.cp_data_device
      data_dir       = local.cp_data_dir
    })
  }

  service_account {
    email = google_service_account.control_plane.email
    # Scopes narrow the VM's token further than IAM: read the package,
    # write backups, logs and metrics. IAM (iam.tf) is what actually limits
    # it to its own objects.
    scopes = [
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
      condition     = can(regex("^${var.region}-[a-z]$", var.zone))
      error_message = "zone must be in region (e.g. region europe-west1, zone europe-west1-b)."
    }
  }

  depends_on = [
    google_storage_bucket_iam_member.artifacts_control_plane,
    google_storage_bucket_iam_member.backups_control_plane,
  ]
}

# Optional DNS name for the control plane, in an existing managed zone.
resource "google_dns_record_set" "control_plane" {
  count = var.dns_managed_zone != "" && var.dns_record_name != "" ? 1 : 0

  managed_zone = var.dns_managed_zone
  name         = var.dns_record_name
  type         = "A"
  ttl          = 300
  rrdatas      = [google_compute_address.control_plane.address]
}
