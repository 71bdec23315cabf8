#!/bin/bash
# support-tunnel control plane: the VM's startup script (rendered by
# control_plane.tf with templatefile; runs as root on EVERY boot, so each
# step checks before it changes anything).
#
#  1. the data disk: format it only if it has no filesystem, mount it at
#     ${data_dir} (fstab by UUID, nofail);
#  2. systemd drop-ins: the listen address and the backup bucket (the
#     package's unit already has RequiresMountsFor= on the data directory, so
#     it never starts on the boot disk, and StateDirectory= gives the
#     directory to its user);
#  3. the support-control-plane .deb: download from the artifacts bucket with
#     the VM's own token, check its sha256, install it (a no-op when that
#     version is already installed);
#  4. enable and start the service and the backup timer.
#
# Nothing secret is in here: metadata is readable by anything on the VM.
set -euo pipefail

DEVICE=/dev/disk/by-id/google-${data_device}
DATA_DIR=${data_dir}
PACKAGE_URL='${package_url}'
PACKAGE_SHA256='${package_sha256}'
LISTEN_PORT='${listen_port}'
BACKUP_URL='${backup_url}'
TOKEN_URL=http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token

log() { echo "support-control-plane startup: $*"; }

# --- 1. the data disk -------------------------------------------------------
for _ in $(seq 1 60); do
  [ -b "$DEVICE" ] && break
  log "waiting for $DEVICE"
  sleep 2
done
[ -b "$DEVICE" ] || { log "no data disk at $DEVICE; refusing to run the control plane on the boot disk"; exit 1; }

# Format only a disk with nothing on it: blkid exits 2 when it finds no
# signature at all. -p probes the device itself, not blkid's cache (which
# can describe an earlier disk at the same path). Anything else that is not
# ext4 (a partition table, two signatures, an error) is left alone.
rc=0
fstype=$(blkid -p -o value -s TYPE "$DEVICE") || rc=$?
if [ "$rc" = 2 ]; then
  log "formatting the new data disk $DEVICE (ext4)"
  mkfs.ext4 -q -L support-cp-data -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard "$DEVICE"
elif [ "$rc" != 0 ] || [ "$fstype" != ext4 ]; then
  log "$DEVICE holds something other than ext4 (blkid exit $rc, type '$fstype'); leaving it alone"
  exit 1
fi

uuid=$(blkid -p -o value -s UUID "$DEVICE")
mkdir -p "$DATA_DIR"
if ! grep -q "^UUID=$uuid " /etc/fstab; then
  log "adding the data disk to /etc/fstab"
  # A replaced disk has a new UUID: drop the old line for this mount point.
  sed -i "\\# $DATA_DIR ext4 #d" /etc/fstab
  echo "UUID=$uuid $DATA_DIR ext4 defaults,nofail,discard 0 2" >> /etc/fstab
  systemctl daemon-reload
fi
mountpoint -q "$DATA_DIR" || mount "$DATA_DIR"
chmod 0700 "$DATA_DIR"

# --- 2. systemd drop-ins (before the package, so its first start uses them) --
write_if_changed() { # path content
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "$2" > "$1"
    changed=1
  fi
}
changed=0
write_if_changed /etc/systemd/system/support-control-plane.service.d/listen.conf "# Written by the VM's startup script (infra/control-plane-startup.sh).
[Service]
Environment=SUPPORT_CP_LISTEN=0.0.0.0:$LISTEN_PORT
# The counters stay on the VM (an agent here scrapes them), off the internet.
Environment=SUPPORT_CP_METRICS_LISTEN=127.0.0.1:9464"
write_if_changed /etc/systemd/system/support-control-plane-backup.service.d/bucket.conf "# Written by the VM's startup script: where the backup timer puts copies.
[Service]
Environment=SUPPORT_CP_BACKUP_URL=$BACKUP_URL"
[ "$changed" = 0 ] || systemctl daemon-reload

# --- 3. the package -----------------------------------------------------------
token() {
  curl -fsS -H 'Metadata-Flavor: Google' "$TOKEN_URL" |
    sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
deb="$tmp/support-control-plane.deb"
# The bucket may still be empty right after the first `tofu apply`: keep
# trying for an hour (the object appears when scripts/release uploads it).
for attempt in $(seq 1 120); do
  # The header goes through stdin, not the command line (/proc/*/cmdline).
  if printf 'Authorization: Bearer %s\n' "$(token)" |
    curl -fsS --retry 3 --proto '=https' -H @- -o "$deb" "$PACKAGE_URL"; then
    break
  fi
  rm -f "$deb"
  log "cannot fetch $PACKAGE_URL yet (attempt $attempt); retrying in 30 s"
  sleep 30
done
[ -f "$deb" ] || { log "gave up fetching $PACKAGE_URL"; exit 1; }
echo "$PACKAGE_SHA256  $deb" | sha256sum -c - || { log "sha256 mismatch: refusing the package"; exit 1; }

# --force-confold keeps an operator-edited /etc/support-tunnel/control-plane.toml
# (the package's conffile) on upgrades.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$deb"

# --- 4. run it ------------------------------------------------------------------
systemctl enable support-control-plane.service support-control-plane-backup.timer
if [ "$changed" = 1 ]; then
  systemctl restart support-control-plane.service
fi
systemctl start support-control-plane.service support-control-plane-backup.timer
log "running; listening on 0.0.0.0:$LISTEN_PORT, backups to $BACKUP_URL"
