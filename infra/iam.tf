# Who may do what. The principle: each identity gets the few permissions its
# one job needs, on the narrowest resource that IAM can express.

# --- hubs ----------------------------------------------------------------------

# The service account hub VMs run as (support-admin attaches it, by email
# support-hub@PROJECT.iam.gserviceaccount.com, with the devstorage.read_only
# scope). NO project roles: its only grant is reading the artifacts bucket,
# to fetch the relay binary. A hub that is somehow taken over holds a token
# that can read public-release software and nothing else.
resource "google_service_account" "hub" {
  account_id   = "support-hub"
  display_name = "support-tunnel hub"
  description  = "Ephemeral support-tunnel hubs (blind UDP relays). Reads the relay binary; nothing else."
}

resource "google_storage_bucket_iam_member" "artifacts_hub" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.hub.member
}

# --- control plane ---------------------------------------------------------------

resource "google_service_account" "control_plane" {
  account_id   = "support-control-plane"
  display_name = "support-tunnel control plane"
  description  = "The control-plane VM: writes logs and metrics, reads its package, adds backups."
}

resource "google_project_iam_member" "control_plane_logs" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = google_service_account.control_plane.member
}

resource "google_project_iam_member" "control_plane_metrics" {
  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.control_plane.member
}

# Reads its .deb from the artifacts bucket (objectViewer: bucket-level with
# uniform access, so the relay is readable too; both are release artifacts).
resource "google_storage_bucket_iam_member" "artifacts_control_plane" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.control_plane.member
}

# Adds backups; cannot list, read, overwrite or delete them (overwriting
# needs storage.objects.delete). The backup job must therefore write a new
# object name each time (e.g. backups/<timestamp>.redb).
resource "google_storage_bucket_iam_member" "backups_control_plane" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.control_plane.member
}

# --- support engineers -------------------------------------------------------------

locals {
  # EXACTLY what `support-admin approve`, `stop` and `gc` call (Compute
  # Engine v1, admin/src/hub/gcp.rs), and the permission each call needs.
  # Sources: the Compute Engine API reference (each method's "IAM
  # Permissions") and "Create and start a Compute Engine instance" /
  # "Create a VM that uses a user-managed service account", section
  # "Required permissions" (which field of instances.insert needs which
  # permission). Listed again, with what is deliberately left out, in
  # infra/README.md.
  #
  # Split in two roles: what names no instance (checking the firewall rule,
  # listing, using the hub subnet) on the project; everything that creates,
  # reads, changes or deletes an instance or disk only where its name starts
  # with "support-hub-" (how the admin names hubs: support-hub-<tunnel id>),
  # through an IAM condition. Without it, setMetadata/setTags/setLabels on
  # the project would let an engineer change the control-plane VM (its
  # startup script, the tag its firewall rules target, or the hub label gc
  # deletes by).
  engineer_project_permissions = [
    # approve: GET projects/P/global/firewalls/support-hub-udp-<port>
    # (checks the rule exists; it never creates it).
    "compute.firewalls.get",
    # gc: GET .../instances?filter=labels.support-tunnel:*
    "compute.instances.list",
    # approve, instances.insert: networkInterfaces[].subnetwork (support-hubs).
    "compute.subnetworks.use",
    # ... accessConfigs ONE_TO_ONE_NAT: an ephemeral external address.
    "compute.subnetworks.useExternalIp",
  ]
  engineer_hub_permissions = [
    # approve: POST projects/P/zones/Z/instances (instances.insert).
    "compute.instances.create",
    # ... its boot disk, created from initializeParams.sourceImage (named
    # like the instance).
    "compute.disks.create",
    # ... metadata.items: the startup-script.
    "compute.instances.setMetadata",
    # ... tags.items: support-hub (what the firewall rule targets).
    "compute.instances.setTags",
    # ... labels: support-tunnel = <tunnel id>.
    "compute.instances.setLabels",
    # ... serviceAccounts: support-hub@ (the actAs half is the
    # serviceAccountUser grant below, on that one account).
    "compute.instances.setServiceAccount",
    # approve: GET .../instances/NAME (waits for RUNNING and the address).
    "compute.instances.get",
    # stop, gc, and approve's cleanup: DELETE .../instances/NAME (the boot
    # disk goes with it: autoDelete).
    "compute.instances.delete",
  ]
  # The hubs' names: "<hub tag>-<tunnel id>" (admin/src/hub/gcp.rs,
  # instance_name); scripts/check-infra checks the prefix against it.
  hub_name_prefix = "support-hub-"
}

resource "google_project_iam_custom_role" "engineer" {
  role_id     = "supportTunnelEngineer"
  title       = "support-tunnel engineer"
  description = "What support-admin approve/stop/gc need beyond hub VMs themselves: check the hub firewall rule, list VMs, use the hub subnet."
  permissions = local.engineer_project_permissions
  stage       = "GA"
}

resource "google_project_iam_custom_role" "engineer_hubs" {
  role_id     = "supportTunnelHubs"
  title       = "support-tunnel engineer: hub VMs"
  description = "Create, read, change and delete hub VMs and their boot disks; bound only on names starting with support-hub-."
  permissions = local.engineer_hub_permissions
  stage       = "GA"
}

resource "google_project_iam_member" "engineers" {
  project = var.project
  role    = google_project_iam_custom_role.engineer.name
  member  = var.engineers_group
}

resource "google_project_iam_member" "engineers_hubs" {
  project = var.project
  role    = google_project_iam_custom_role.engineer_hubs.name
  member  = var.engineers_group
  condition {
    title       = "support-tunnel hubs only"
    description = "Instances and disks named ${local.hub_name_prefix}*: never the control-plane VM or anything else in the project."
    expression  = "resource.name.extract(\"/instances/{name}\").startsWith(\"${local.hub_name_prefix}\") || resource.name.extract(\"/disks/{name}\").startsWith(\"${local.hub_name_prefix}\")"
  }
}

# actAs on the hub service account ONLY: engineers can start VMs that run as
# support-hub and as no other account (in particular not as the control
# plane's). Granted on the account, not the project, where it would cover
# every service account.
resource "google_service_account_iam_member" "engineers_act_as_hub" {
  service_account_id = google_service_account.hub.name
  role               = "roles/iam.serviceAccountUser"
  member             = var.engineers_group
}

# Engineers download support-admin's .deb and can check the relay.
resource "google_storage_bucket_iam_member" "artifacts_engineers" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = var.engineers_group
}

# --- operators (optional) -------------------------------------------------------------

# IAP TCP forwarding (the only way to port 22, network.tf).
resource "google_project_iam_member" "operators_iap" {
  for_each = toset(var.operators)

  project = var.project
  role    = "roles/iap.tunnelResourceAccessor"
  member  = each.value
}

# `gcloud compute ssh` reads the instance and the project first.
resource "google_project_iam_member" "operators_compute_viewer" {
  for_each = toset(var.operators)

  project = var.project
  role    = "roles/compute.viewer"
  member  = each.value
}

# OS Login with sudo, on the control-plane VMs only (not project-wide).
# The first VM's grants keep the addresses they had before replicas.
resource "google_compute_instance_iam_member" "operators_os_admin_login" {
  for_each = toset(var.operators)

  instance_name = google_compute_instance.control_plane[local.cp_first].name
  zone          = google_compute_instance.control_plane[local.cp_first].zone
  role          = "roles/compute.osAdminLogin"
  member        = each.value
}

resource "google_compute_instance_iam_member" "operators_os_admin_login_replicas" {
  for_each = {
    for pair in setproduct(var.operators, [for name, _ in local.cp_replicas : name if name != local.cp_first]) :
    "${pair[0]} ${pair[1]}" => { member = pair[0], instance = pair[1] }
  }

  instance_name = google_compute_instance.control_plane[each.value.instance].name
  zone          = google_compute_instance.control_plane[each.value.instance].zone
  role          = "roles/compute.osAdminLogin"
  member        = each.value.member
}

# SSH to a VM that runs as a service account needs actAs on that account.
resource "google_service_account_iam_member" "operators_act_as_control_plane" {
  for_each = toset(var.operators)

  service_account_id = google_service_account.control_plane.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# --- audit ------------------------------------------------------------------------------

# Data Access audit logs for Cloud Storage: who read or wrote which object
# in both buckets (Admin Activity logs, e.g. IAM and VM changes, are always
# on). Authoritative for storage.googleapis.com's audit config in this
# project.
resource "google_project_iam_audit_config" "storage" {
  project = var.project
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
