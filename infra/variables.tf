# Inputs. Copy terraform.tfvars.example to terraform.tfvars and fill it in.
# The names the admin CLI relies on (network, firewall rule, hub service
# account, network tag) are fixed, not variables: see README.md.

variable "project" {
  description = "The GCP project id. A project of its own for support-tunnel is best: engineers may list every VM in it and create support-hub-* VMs."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a GCP project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the hub subnet, the control plane's address, the buckets and the snapshots."
  type        = string
  default     = "europe-west1"
}

variable "zone" {
  description = "Zone of the hubs (the admin's gcp.zone) and of the control-plane VMs unless control_plane_zones says otherwise."
  type        = string
  default     = "europe-west1-b"
}

variable "labels" {
  description = "Labels added to every resource that takes labels (e.g. { team = \"support\" }). The key support-tunnel is reserved: the admin's `gc` treats instances carrying it as hubs."
  type        = map(string)
  default     = {}

  validation {
    condition     = !contains(keys(var.labels), "support-tunnel")
    error_message = "The label key support-tunnel is reserved for hub VMs (support-admin lists and deletes instances by it)."
  }
}

# --- network -----------------------------------------------------------------

variable "create_network" {
  description = "Create the project's own VPC `support-tunnel` and subnet `support-hubs` (recommended). If false, give existing_network and existing_subnetwork."
  type        = bool
  default     = true
}

variable "existing_network" {
  description = "With create_network = false: a network of THIS project for hubs and the control plane (the firewall rules are created in it), as a self-link or `projects/P/global/networks/N`. Never the `default` network (its default-allow-ssh rule would expose the hubs' SSH)."
  type        = string
  default     = ""
}

variable "existing_subnetwork" {
  description = "With create_network = false: the subnetwork in var.region, as a self-link or `projects/P/regions/R/subnetworks/S`."
  type        = string
  default     = ""
}

variable "subnet_cidr" {
  description = "Internal range of the `support-hubs` subnet (hubs and the control plane). /24 leaves room for about 250 concurrent hubs."
  type        = string
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.subnet_cidr))
    error_message = "subnet_cidr must be an IPv4 CIDR such as 10.42.0.0/24."
  }
}

variable "relay_port" {
  description = "The hubs' UDP port (the admin's gcp.port). The firewall rule's name follows it: support-hub-udp-<port>."
  type        = number
  default     = 51820

  validation {
    condition     = var.relay_port >= 1 && var.relay_port <= 65535 && floor(var.relay_port) == var.relay_port
    error_message = "relay_port must be a port number."
  }
}

# --- control plane -------------------------------------------------------------

variable "control_plane_port" {
  description = "TCP port the control plane listens on (plain HTTP: every call is a Noise_IK handshake end to end, so TLS would add nothing to confidentiality or authenticity)."
  type        = number
  default     = 8080

  validation {
    condition     = var.control_plane_port >= 1 && var.control_plane_port <= 65535 && floor(var.control_plane_port) == var.control_plane_port
    error_message = "control_plane_port must be a port number."
  }
}

variable "control_plane_allowed_cidrs" {
  description = "Who may reach the control plane's port. Devices in people's homes call it from any address, so the default is everyone; narrow it only if every device and engineer comes from known ranges. The API authenticates every call (Noise_IK) and rate-limits creates per address."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.control_plane_allowed_cidrs) > 0 && alltrue([for c in var.control_plane_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "control_plane_allowed_cidrs must be a non-empty list of CIDRs."
  }
}

variable "control_plane_machine_type" {
  description = "Machine type of the control-plane VM."
  type        = string
  default     = "e2-small"
}

variable "control_plane_disk_size_gb" {
  description = "Size of the control plane's data disk (the redb store, keys and audit log at /var/lib/support-control-plane)."
  type        = number
  default     = 10

  validation {
    condition     = var.control_plane_disk_size_gb >= 10
    error_message = "control_plane_disk_size_gb must be at least 10."
  }
}

variable "control_plane_package_url" {
  description = "https URL of the support-control-plane .deb in the artifacts bucket, e.g. https://storage.googleapis.com/<project>-support-artifacts/packages/0.1.0/support-control-plane_0.1.0-1_amd64.deb (where the upload commands scripts/release prints put it)."
  type        = string

  validation {
    condition     = can(regex("^https://storage\\.googleapis\\.com/[a-z0-9._-]+/packages/[A-Za-z0-9._~+-]+/[A-Za-z0-9._~+-]+\\.deb$", var.control_plane_package_url))
    error_message = "control_plane_package_url must be https://storage.googleapis.com/<bucket>/packages/<version>/<file>.deb."
  }
}

variable "control_plane_package_sha256" {
  description = "sha256 (hex) of that .deb; the VM refuses any other file."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.control_plane_package_sha256))
    error_message = "control_plane_package_sha256 must be 64 lowercase hex digits."
  }
}

variable "control_plane_deletion_protection" {
  description = "Refuse to delete the control-plane VM (defense in depth: engineers' instance rights are already limited to support-hub-* names). Set false before `tofu destroy`."
  type        = bool
  default     = true
}

variable "enable_iap_ssh" {
  description = "Allow SSH (tcp 22) to the control-plane VM from Google's IAP TCP-forwarding range only, for the operator (`gcloud compute ssh support-control-plane --tunnel-through-iap`). Hubs never get SSH."
  type        = bool
  default     = true
}

variable "operators" {
  description = "Principals (user:/group:) who operate the control plane: they get IAP tunnelling, compute.viewer, OS Login admin on the control-plane VM only, and actAs on its service account (needed to SSH to a VM that runs as one)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operators : can(regex("^(user|group):", m))])
    error_message = "operators must be IAM members such as user:alice@example.com or group:ops@example.com."
  }
}

variable "snapshot_retention_days" {
  description = "How long the daily snapshots of the control plane's data disk are kept."
  type        = number
  default     = 14

  validation {
    condition     = var.snapshot_retention_days >= 1
    error_message = "snapshot_retention_days must be at least 1."
  }
}

variable "backup_retention_days" {
  description = "Retention period of the backups bucket: no one (not even a project owner, while the policy stands) can delete or replace a backup younger than this; older ones are deleted by a lifecycle rule."
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 3650
    error_message = "backup_retention_days must be between 1 and 3650."
  }
}

# --- the store: redb on one VM, or Cloud SQL behind replicas ----------------------

variable "control_plane_store" {
  description = "Where the control plane keeps its store. \"redb\" (default): a file on the VM's data disk; one VM, one URL. \"cloud-sql\": a Cloud SQL for PostgreSQL instance (private IP only, IAM login through the Cloud SQL Auth Proxy, no password anywhere) shared by control_plane_replicas VMs, each with its own URL; devices and engineers list them all and fail over (database.tf)."
  type        = string
  default     = "redb"

  validation {
    condition     = contains(["redb", "cloud-sql"], var.control_plane_store)
    error_message = "control_plane_store must be \"redb\" or \"cloud-sql\"."
  }
}

variable "control_plane_replicas" {
  description = "How many control-plane VMs. More than one needs control_plane_store = \"cloud-sql\" (a redb file has one writer). The first keeps the name support-control-plane; the others are support-control-plane-2, -3..."
  type        = number
  default     = 1

  validation {
    condition     = var.control_plane_replicas >= 1 && var.control_plane_replicas <= 5 && floor(var.control_plane_replicas) == var.control_plane_replicas
    error_message = "control_plane_replicas must be a whole number from 1 to 5."
  }
}

variable "control_plane_zones" {
  description = "Zones of the control-plane VMs, in var.region, used in turn (replica i goes to zone i modulo their number), so that one zone's outage leaves a replica answering. Empty: every VM in var.zone."
  type        = list(string)
  default     = []
}

variable "cloud_sql_tier" {
  description = "Machine tier of the Cloud SQL instance (control_plane_store = \"cloud-sql\")."
  type        = string
  default     = "db-custom-1-3840"
}

variable "cloud_sql_high_availability" {
  description = "A regional Cloud SQL instance (a standby in a second zone, failover in about a minute) rather than a zonal one."
  type        = bool
  default     = true
}

variable "cloud_sql_deletion_protection" {
  description = "Refuse to delete the Cloud SQL instance (both OpenTofu's and Google's own protection) and the keys' secret. Set false before `tofu destroy`."
  type        = bool
  default     = true
}

variable "cloud_sql_backup_count" {
  description = "How many daily Cloud SQL backups are kept (point-in-time recovery covers the last 7 days besides). Cloud SQL wants more backups kept than days of transaction log (7)."
  type        = number
  default     = 14

  validation {
    condition     = var.cloud_sql_backup_count >= 8 && var.cloud_sql_backup_count <= 365
    error_message = "cloud_sql_backup_count must be between 8 and 365 (more than the 7 days of transaction log kept for point-in-time recovery)."
  }
}

variable "cloud_sql_peering_range_prefix" {
  description = "Prefix length of the internal range reserved for Google's services network (private services access), where the Cloud SQL instance gets its private address."
  type        = number
  default     = 20

  validation {
    condition     = var.cloud_sql_peering_range_prefix >= 8 && var.cloud_sql_peering_range_prefix <= 24
    error_message = "cloud_sql_peering_range_prefix must be between 8 and 24."
  }
}

variable "cloud_sql_proxy_version" {
  description = "Version of the Cloud SQL Auth Proxy each control-plane VM runs (downloaded from storage.googleapis.com/cloud-sql-connectors)."
  type        = string
  default     = "2.14.1"

  validation {
    condition     = can(regex("^2\\.[0-9]+\\.[0-9]+$", var.cloud_sql_proxy_version))
    error_message = "cloud_sql_proxy_version must be a 2.x.y version."
  }
}

variable "cloud_sql_proxy_sha256" {
  description = "sha256 (hex) of cloud-sql-proxy.linux.amd64 of that version, as its release notes (github.com/GoogleCloudPlatform/cloud-sql-proxy/releases) list it; the VMs refuse any other file. Required with control_plane_store = \"cloud-sql\"."
  type        = string
  default     = ""

  validation {
    condition     = var.cloud_sql_proxy_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.cloud_sql_proxy_sha256))
    error_message = "cloud_sql_proxy_sha256 must be 64 lowercase hex digits."
  }
}

# --- DNS (optional) -------------------------------------------------------------

variable "dns_managed_zone" {
  description = "Name of an existing Cloud DNS managed zone in the project for the control plane's A records (the first VM gets dns_record_name, another one <its name>.<dns_record_name>). Empty: no record, the URLs use the IP addresses."
  type        = string
  default     = ""
}

variable "dns_record_name" {
  description = "Fully qualified record name with the trailing dot, e.g. support.example.com. (used only with dns_managed_zone)."
  type        = string
  default     = ""

  validation {
    condition     = var.dns_record_name == "" || can(regex("^([a-z0-9-]+\\.)+$", var.dns_record_name))
    error_message = "dns_record_name must be a lowercase FQDN ending in a dot, e.g. support.example.com."
  }
}

# --- people and artifacts -------------------------------------------------------

variable "engineers_group" {
  description = "The support engineers, e.g. group:support-engineers@example.com. They get the supportTunnelEngineer role, actAs on the hub service account only, and read access to the artifacts bucket."
  type        = string

  validation {
    condition     = can(regex("^(group|user|serviceAccount):[^@]+@[^@]+$", var.engineers_group))
    error_message = "engineers_group must be an IAM member such as group:support-engineers@example.com."
  }
}

variable "artifact_noncurrent_versions" {
  description = "How many older versions of each object the artifacts bucket keeps (a re-uploaded .deb or relay can be rolled back)."
  type        = number
  default     = 3

  validation {
    condition     = var.artifact_noncurrent_versions >= 1
    error_message = "artifact_noncurrent_versions must be at least 1."
  }
}

variable "relay_version" {
  description = "Version of the support-relay binary hubs run (printed by scripts/release); used only to write the admin_toml output. Empty until the first release."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9._~+-]*$", var.relay_version))
    error_message = "relay_version must be a plain version string."
  }
}

variable "relay_sha256" {
  description = "sha256 (hex) of that support-relay binary (printed by scripts/release); used only in the admin_toml output."
  type        = string
  default     = ""

  validation {
    condition     = var.relay_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.relay_sha256))
    error_message = "relay_sha256 must be empty or 64 lowercase hex digits."
  }
}
