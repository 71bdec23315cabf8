# The network hubs and the control plane live in, and its firewall rules.
#
# Why not the `default` network: it comes with `default-allow-ssh` (tcp 22
# from 0.0.0.0/0 to every instance), `default-allow-rdp` and
# `default-allow-icmp`. A hub in it would be reachable on SSH from the whole
# internet. Hubs hold no key that matters, but they must expose exactly one
# thing, the relay's UDP port. So by default this project gets its own VPC
# with no rule but the ones below (a VPC denies all ingress unless a rule
# allows it), and the admin's DEFAULT_NETWORK is this VPC.

locals {
  # Fixed names: admin/src/hub/gcp.rs uses the same ones (scripts/check-infra
  # compares them).
  network_name    = "support-tunnel"
  subnetwork_name = "support-hubs"
  hub_tag         = "support-hub"
  cp_tag          = "support-control-plane"

  network    = var.create_network ? google_compute_network.support_tunnel[0].self_link : var.existing_network
  subnetwork = var.create_network ? google_compute_subnetwork.support_hubs[0].self_link : var.existing_subnetwork

  # What the admin's config names: short forms of the same resources.
  admin_network    = var.create_network ? "global/networks/${local.network_name}" : var.existing_network
  admin_subnetwork = var.create_network ? "regions/${var.region}/subnetworks/${local.subnetwork_name}" : var.existing_subnetwork
}

resource "google_compute_network" "support_tunnel" {
  count = var.create_network ? 1 : 0

  name                    = local.network_name
  description             = "support-tunnel: hubs and the control plane. No default rules (no SSH to hubs)."
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "support_hubs" {
  count = var.create_network ? 1 : 0

  name          = local.subnetwork_name
  description   = "support-tunnel hubs (ephemeral VMs created by support-admin) and the control plane."
  network       = google_compute_network.support_tunnel[0].id
  region        = var.region
  ip_cidr_range = var.subnet_cidr

  # Google APIs (the artifacts bucket) over Google's network.
  private_ip_google_access = true

  # Flow logs, sampled: who talked to the hubs and the control plane, for
  # incident review. Half the flows at 5-minute aggregation keeps the volume
  # (and cost) small for a relay's few peers.
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# THE HUB RULE. support-admin checks that it exists (GET
# global/firewalls/support-hub-udp-<port>) and never creates it, so engineers
# need no firewall permission. It admits only the relay's UDP port, from
# anywhere: devices sit behind home NATs and engineers roam, so there is no
# source range to narrow to. That is safe because the relay is not an open
# forwarder: it drops every handshake whose WireGuard MAC1 is not keyed with
# one of its tunnel's two public keys (a scanner does not know them),
# rate-limits handshakes, and lets transport data flow only between the two
# endpoints confirmed by a completed handshake (relay/src/relay.rs). It holds
# no key that could read or forge the traffic. No other port, and no SSH:
# hubs are never logged into.
resource "google_compute_firewall" "hub_udp" {
  name        = "support-hub-udp-${var.relay_port}"
  description = "support-tunnel hubs: the relay's UDP port only (the relay authenticates WireGuard MAC1)."
  network     = local.network
  direction   = "INGRESS"
  priority    = 1000

  allow {
    protocol = "udp"
    ports    = [tostring(var.relay_port)]
  }

  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.hub_tag]

  lifecycle {
    precondition {
      condition     = var.create_network || (var.existing_network != "" && var.existing_subnetwork != "")
      error_message = "With create_network = false, set existing_network and existing_subnetwork."
    }
    precondition {
      condition     = var.create_network || !can(regex("(^|/)networks/default$", var.existing_network))
      error_message = "Do not put hubs in the `default` network: its default-allow-ssh rule would expose their SSH port to the internet."
    }
  }
}

# The control plane's API port. Devices call it from anywhere (see
# var.control_plane_allowed_cidrs); every call is authenticated end to end.
resource "google_compute_firewall" "control_plane_api" {
  name        = "support-control-plane-tcp-${var.control_plane_port}"
  description = "support-tunnel control plane API (Noise_IK over HTTP)."
  network     = local.network
  direction   = "INGRESS"
  priority    = 1000

  allow {
    protocol = "tcp"
    ports    = [tostring(var.control_plane_port)]
  }

  source_ranges = var.control_plane_allowed_cidrs
  target_tags   = [local.cp_tag]
}

# The operator's SSH to the control plane, only through Identity-Aware
# Proxy: 35.235.240.0/20 is the range IAP's TCP forwarding connects from, so
# port 22 is not open to the internet, and IAP first checks the caller's IAM
# (roles/iap.tunnelResourceAccessor) before OS Login checks theirs. Turn it
# off (enable_iap_ssh = false) to have no SSH path at all; the startup
# script and the serial console log still show what the VM did.
resource "google_compute_firewall" "control_plane_iap_ssh" {
  count = var.enable_iap_ssh ? 1 : 0

  name        = "support-control-plane-iap-ssh"
  description = "SSH to the support-tunnel control plane from IAP TCP forwarding only."
  network     = local.network
  direction   = "INGRESS"
  priority    = 1000

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  source_ranges = ["35.235.240.0/20"]
  target_tags   = [local.cp_tag]
}
