# OpenTofu and the google provider, pinned to a major so that an upgrade is a
# deliberate change. scripts/check-infra checks every attribute used here
# against the schema of google provider 6.50.0 (the @cdktf/provider-google
# package pinned in infra/tests), so bump both together.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
  }

  # State. Without a backend block the state is a local file
  # (terraform.tfstate) on the operator's machine: fine to try things out,
  # wrong for a deployment that more than one person changes. For real use,
  # keep the state in a GCS bucket you create once by hand (versioned, with
  # uniform bucket-level access, readable only by the operators; NOT one of
  # the buckets this configuration creates, since it would hold its own
  # state). The state contains no secret of the tunnel (there are none
  # here), but it lists every resource and is what `tofu apply` trusts.
  #
  # backend "gcs" {
  #   bucket = "my-project-tofu-state"  # created beforehand
  #   prefix = "support-tunnel"         # one folder per deployment
  # }
  #
  # Then run `tofu init -migrate-state` once to move a local state there.
}

provider "google" {
  project = var.project
  region  = var.region
  zone    = var.zone

  # Every resource that takes labels gets these, on top of its own.
  default_labels = merge(var.labels, { managed-by = "opentofu" })
}
