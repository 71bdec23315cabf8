# What the operator copies into the admin's and the devices' configs.

locals {
  # A TOML value: a string for one URL, a list for replicas.
  cp_url_toml = length(local.cp_urls) == 1 ? "\"${local.cp_url}\"" : "[${join(", ", [for u in local.cp_urls : "\"${u}\""])}]"
  relay_note = var.relay_version == "" || var.relay_sha256 == "" ? "# NOT READY: set relay_version and relay_sha256 (scripts/release prints them) and apply again." : "# Hubs run support-relay ${var.relay_version}."
}

output "control_plane_url" {
  description = "The first control-plane VM's URL (the only one with the redb store)."
  value       = local.cp_url
}

output "control_plane_urls" {
  description = "Every control-plane VM's URL, in order: what admin.toml and agent.toml list (control_plane = [...]) so that a call passes to the next while one does not answer."
  value       = local.cp_urls
}

output "control_plane_ip" {
  description = "The first control-plane VM's static external address."
  value       = google_compute_address.control_plane[local.cp_first].address
}

output "control_plane_ips" {
  description = "Every control-plane VM's static external address, by VM name."
  value       = { for name, a in google_compute_address.control_plane : name => a.address }
}

output "cloud_sql_instance" {
  description = "The Cloud SQL instance's connection name (project:region:name), with control_plane_store = \"cloud-sql\"; empty otherwise."
  value       = local.cloud_sql ? google_sql_database_instance.store[0].connection_name : ""
}

output "cloud_sql_bootstrap" {
  description = "With control_plane_store = \"cloud-sql\": the two things the operator does once, after the first apply, in this order (DEPLOY.md): grant the database user its schema, write the shared key."
  value = local.cloud_sql ? join("\n", [
    "# 1. Let the control plane's database user create its tables (runs infra/cloud-sql-grant.sql as postgres):",
    "gcloud sql import sql ${local.sql_instance} gs://${google_storage_bucket.artifacts.name}/${local.sql_grant_object} --project ${var.project} --database ${local.sql_database} --user postgres --quiet",
    "# 2. The control plane's static key, shared by every VM (once; never on disk here, never in the state):",
    "printf '1 %s\\n' \"$(openssl rand -hex 32)\" | gcloud secrets versions add ${local.keys_secret_id} --project ${var.project} --data-file=-",
  ]) : ""
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
    #   control_plane = ${local.cp_url_toml}
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
    control_plane = ${local.cp_url_toml}
    # control_plane_keys: the keys `sudo support-control-plane public-key` prints
    # on a control-plane VM (after its first start; every VM prints the same), e.g.
    #   gcloud compute ssh ${local.cp_first} --zone ${local.cp_replicas[local.cp_first]} --tunnel-through-iap \
    #     -- sudo support-control-plane public-key
    # Pin them: control_plane_keys = ["<hex key>", ...]
    EOT
}
