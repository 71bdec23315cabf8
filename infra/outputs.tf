# What the operator copies into the admin's and the devices' configs.

locals {
  relay_note = var.relay_version == "" || var.relay_sha256 == "" ? "# NOT READY: set relay_version and relay_sha256 (scripts/release prints them) and apply again." : "# Hubs run support-relay ${var.relay_version}."
}

output "control_plane_url" {
  description = "The control plane's URL, for admin.toml and agent.toml (control_plane = ...)."
  value       = local.cp_url
}

output "control_plane_ip" {
  description = "The control plane's static external address."
  value       = google_compute_address.control_plane.address
}

output "artifacts_bucket" {
  description = "Bucket for releases: packages/<version>/*.deb and relay/<version>/support-relay."
  value       = google_storage_bucket.artifacts.name
}

output "backups_bucket" {
  description = "Bucket the control plane's backup timer adds store copies to."
  value       = google_storage_bucket.backups.name
}

output "hub_service_account" {
  description = "The service account hubs run as."
  value       = google_service_account.hub.email
}

output "engineer_role" {
  description = "The custom role granted to var.engineers_group."
  value       = google_project_iam_custom_role.engineer.name
}

output "admin_toml" {
  description = "The [gcp] table of each engineer's admin.toml (support-admin)."
  value       = <<-EOT
    # Top-level keys of admin.toml (above any [table]):
    #   control_plane = "${local.cp_url}"
    #   provider = "gcp"
    ${local.relay_note}
    [gcp]
    project = "${var.project}"
    zone = "${var.zone}"
    network = "${local.admin_network}"
    subnetwork = "${local.admin_subnetwork}"
    port = ${var.relay_port}
    relay_url = "${local.relay_url}"
    relay_sha256 = "${var.relay_sha256}"
    service_account = "${google_service_account.hub.email}"
    EOT
}

output "agent_toml" {
  description = "The control-plane lines of a device's /etc/support-tunnel/agent.toml."
  value       = <<-EOT
    control_plane = "${local.cp_url}"
    # control_plane_keys: the keys `sudo support-control-plane public-key` prints
    # on the control-plane VM (after its first start), e.g. through
    #   gcloud compute ssh ${local.cp_name} --zone ${var.zone} --tunnel-through-iap \
    #     -- sudo support-control-plane public-key
    # Pin them: control_plane_keys = ["<hex key>", ...]
    EOT
}
