# Two buckets, because their readers and writers differ:
#
#   <project>-support-artifacts  what releases publish: packages/<version>/*.deb
#                                and relay/<version>/support-relay. Read by the
#                                hubs (the relay), the control plane (its .deb)
#                                and the engineers (the admin .deb, the relay).
#                                Written only by whoever releases (project
#                                owners; no binding here).
#   <project>-support-backups    the control plane's store copies. The control
#                                plane may only ADD objects (objectCreator: no
#                                read, no overwrite, no delete), and nobody else
#                                is granted anything.
#
# One bucket with prefixes cannot express that: bucket-level IAM (uniform
# access, which we want) applies to every object, so engineers and hubs that
# read the relay would also read the store's backups (device facts, audit
# log), and a control plane that writes backups there could overwrite
# artifacts. With the split, a compromised control plane can add backups but
# cannot read, replace or delete old ones, or touch what hubs run; hubs and
# engineers never see the store.
#
# Audit: Data Access audit logs for Cloud Storage (iam.tf) record every read
# and write of both buckets; Google recommends them over the legacy bucket
# usage logs, hence no `logging` block here.

locals {
  artifacts_bucket = "${var.project}-support-artifacts"
  backups_bucket   = "${var.project}-support-backups"

  # The object hubs fetch; admin/src/hub/gcp.rs RELAY_OBJECT is the same
  # pattern with {version} (scripts/check-infra compares them).
  relay_object = "relay/${var.relay_version}/support-relay"
  relay_url    = "https://storage.googleapis.com/${local.artifacts_bucket}/${local.relay_object}"
}

resource "google_storage_bucket" "artifacts" {
  name     = local.artifacts_bucket
  location = upper(var.region)

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A re-uploaded object keeps its predecessors: roll back a bad release.
  versioning {
    enabled = true
  }

  # ...but only the newest few of them.
  lifecycle_rule {
    condition {
      num_newer_versions = var.artifact_noncurrent_versions
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Storage Data Access audit logs (google_project_iam_audit_config in iam.tf), Google's recommended replacement for bucket usage logs; a usage-log bucket would be one more bucket to secure.
}

resource "google_storage_bucket" "backups" {
  name     = local.backups_bucket
  location = upper(var.region)

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # No backup younger than this can be deleted or replaced, by anyone, while
  # the policy stands. Not locked (is_locked = false): locking is
  # irreversible and would keep the bucket for the whole period even after
  # the project is retired; lock it by hand if your retention rules demand.
  retention_policy {
    retention_period = var.backup_retention_days * 86400
    is_locked        = false
  }

  # Expire backups once the retention period is over.
  lifecycle_rule {
    condition {
      age = var.backup_retention_days + 1
    }
    action {
      type = "Delete"
    }
  }

  #checkov:skip=CKV_GCP_78:Cloud Storage does not allow Object Versioning together with a retention policy; the retention policy is the stronger guarantee here (nothing can be deleted or replaced before it expires), and the writer cannot overwrite anyway (objectCreator only).
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Storage Data Access audit logs (iam.tf) instead of legacy usage logs.
}
