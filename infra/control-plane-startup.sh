#!/bin/bash
# support-tunnel control plane: the VM's startup script (rendered by
# control_plane.tf with templatefile; runs as root on EVERY boot, so each
# step checks before it changes anything).
#
#  1. the store's place: with redb, the data disk (format it only if it has
#     no filesystem, mount it at ${data_dir}, fstab by UUID, nofail); with
#     Cloud SQL (STORE_URL set) no disk, and the Cloud SQL Auth Proxy: its
#     binary checked by sha256, a unit that serves 127.0.0.1:5432;
#  2. systemd drop-ins: the listen address, the store, the backup bucket
#     (the package's unit already has RequiresMountsFor= on the data
#     directory, so with redb it never starts on the boot disk, and
#     StateDirectory= gives the directory to its user);
#  3. the support-control-plane .deb: download from the artifacts bucket with
#     the VM's own token, check its sha256, install it (a no-op when that
#     version is already installed; a fresh install does not start it);
#  4. with Cloud SQL: the static keys every replica shares, from Secret
#     Manager into DATA/server-keys. The service never starts without them
#     (its drop-in asserts they exist): a replica that minted its own key
#     would answer with a key nobody pins;
#  5. (re)start what changed, the backup timer on the first VM only.
#
# Nothing secret is in here: metadata is readable by anything on the VM.
set -euo pipefail

DEVICE=/dev/disk/by-id/google-${data_device}
DATA_DIR=${data_dir}
PACKAGE_URL='${package_url}'
PACKAGE_SHA256='${package_sha256}'
LISTEN_PORT='${listen_port}'
BACKUP_URL='${backup_url}'
STORE_URL='${store_url}'
SQL_INSTANCE='${sql_instance}'
PROXY_URL='${proxy_url}'
PROXY_SHA256='${proxy_sha256}'
KEYS_SECRET='${keys_secret}'
RUN_BACKUPS='${run_backups}'
TOKEN_URL=http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token
PROXY_BIN=/usr/local/lib/support-tunnel/cloud-sql-proxy
# The store setting, as a file: systemd reads an EnvironmentFile= literally,
# whereas in Environment= it would take the URL's %40 for a specifier.
STORE_ENV=/etc/support-tunnel/control-plane-store.env
# What each unit was last (re)started with (see restart_if_changed).
STAMPS=/var/lib/support-tunnel/startup
UNITS=/etc/systemd/system

log() { echo "support-control-plane startup: $*"; }

token() {
  curl -fsS -H 'Metadata-Flavor: Google' "$TOKEN_URL" |
    sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p'
}

# fetch URL FILE: with the VM's token; the header goes through stdin, not
# the command line (/proc/*/cmdline).
fetch() {
  printf 'Authorization: Bearer %s\n' "$(token)" |
    curl -fsS --retry 3 --proto '=https' -H @- -o "$2" "$1"
}

# In memory (/run), not on the boot disk: the keys pass through here.
tmp=$(mktemp -d -p /run support-cp-startup.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

write_if_changed() { # path content
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "$2" > "$1"
    changed=1
  fi
}
changed=0

# restart_if_changed UNIT FILE...: (re)starts UNIT so that it runs with the
# FILEs as they are now. The stamp of what it last started with outlives a
# run that stopped halfway (a secret not there yet, a failed start), so the
# next run still restarts it; a run with nothing new restarts nothing.
restart_if_changed() {
  local unit=$1 want
  shift
  want=$(sha256sum -- "$@" | sha256sum | cut -d' ' -f1)
  mkdir -p "$STAMPS"
  if [ "$(cat "$STAMPS/$unit" 2>/dev/null)" != "$want" ]; then
    log "restarting $unit with its new settings"
    systemctl restart "$unit"
    printf '%s\n' "$want" > "$STAMPS/$unit"
  fi
  systemctl start "$unit"
}

# --- 1. the store's place -----------------------------------------------------
# With redb: the store on its own disk.
data_disk() {
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
}

# With Cloud SQL: no data disk; the proxy the store URL points at.
cloud_sql_proxy() {
  if ! echo "$PROXY_SHA256  $PROXY_BIN" | sha256sum -c --status - 2>/dev/null; then
    log "installing the Cloud SQL Auth Proxy from $PROXY_URL"
    curl -fsS --retry 5 --proto '=https' -o "$tmp/proxy" "$PROXY_URL"
    echo "$PROXY_SHA256  $tmp/proxy" | sha256sum -c - || { log "sha256 mismatch: refusing the proxy"; exit 1; }
    install -D -m 0755 "$tmp/proxy" "$PROXY_BIN"
  fi
  # --private-ip: the instance has no public address. --auto-iam-authn: the
  # database user is the VM's service account, logged in with its token.
  # On loopback only, as a user of its own with nothing to write. (Any
  # local process could reach the database as this account anyway: the
  # metadata server hands its token to every process on the VM.)
  write_if_changed $UNITS/cloud-sql-proxy.service "# Written by the VM's startup script (infra/control-plane-startup.sh).
[Unit]
Description=Cloud SQL Auth Proxy for the support-tunnel control plane's store
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=$PROXY_BIN --private-ip --auto-iam-authn --address 127.0.0.1 --port 5432 $SQL_INSTANCE
Restart=always
RestartSec=2
DynamicUser=yes
UMask=0077
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target"
}

if [ -z "$STORE_URL" ]; then
  data_disk
else
  cloud_sql_proxy
fi

# --- 2. systemd drop-ins (before the package, so its first start uses them) --
write_if_changed $UNITS/support-control-plane.service.d/listen.conf "# Written by the VM's startup script (infra/control-plane-startup.sh).
[Service]
Environment=SUPPORT_CP_LISTEN=0.0.0.0:$LISTEN_PORT
# The counters stay on the VM (an agent here scrapes them), off the internet.
Environment=SUPPORT_CP_METRICS_LISTEN=127.0.0.1:9464"
backup_store=""
if [ -n "$STORE_URL" ]; then
  # No password in it: the proxy logs the user in with a token.
  write_if_changed "$STORE_ENV" "# Written by the VM's startup script: the shared Cloud SQL store, through the
# proxy. Read by the service and the backup job; an operator command on a
# stopped replica takes it as --store.
SUPPORT_CP_STORE=$STORE_URL"
  write_if_changed $UNITS/support-control-plane.service.d/store.conf "# Written by the VM's startup script: the shared Cloud SQL store, through the proxy.
[Unit]
Wants=cloud-sql-proxy.service
After=cloud-sql-proxy.service
# Never without the shared keys: with none, the service would mint a key of
# its own, which no device pins.
AssertPathExistsGlob=$DATA_DIR/server-keys/*.key
[Service]
EnvironmentFile=$STORE_ENV
# Never on a redb file of its own, should the store setting be lost.
ExecStartPre=/usr/bin/test -n \"\$${SUPPORT_CP_STORE}\""
  backup_store="
EnvironmentFile=$STORE_ENV"
fi
write_if_changed $UNITS/support-control-plane-backup.service.d/bucket.conf "# Written by the VM's startup script: where the backup timer puts copies.
[Service]
Environment=SUPPORT_CP_BACKUP_URL=$BACKUP_URL$backup_store"
[ "$changed" = 0 ] || systemctl daemon-reload

# --- 3. the package -----------------------------------------------------------
deb="$tmp/support-control-plane.deb"
# The bucket may still be empty right after the first `tofu apply`: keep
# trying for an hour (the object appears when scripts/release uploads it).
for attempt in $(seq 1 120); do
  if fetch "$PACKAGE_URL" "$deb"; then
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

# --- 4. the shared keys (Cloud SQL) -----------------------------------------------
if [ -n "$KEYS_SECRET" ]; then
  # The secret holds lines "<number> <64 hex digits>", the files
  # DATA/server-keys/<number>.key. The operator writes it once after the
  # first apply; until then, keep trying for an hour.
  got=""
  for attempt in $(seq 1 120); do
    if fetch "https://secretmanager.googleapis.com/v1/$KEYS_SECRET/versions/latest:access" "$tmp/secret.json"; then
      got=1
      break
    fi
    log "cannot read the keys from $KEYS_SECRET yet (attempt $attempt; DEPLOY.md says how to write them); retrying in 30 s"
    sleep 30
  done
  [ -n "$got" ] || { log "gave up reading $KEYS_SECRET; not starting the control plane"; exit 1; }
  # payload.data is base64 (the answer's "data" key; "dataCrc32c" is another).
  sed -n 's/.*"data" *: *"\([A-Za-z0-9+\/=]*\)".*/\1/p' "$tmp/secret.json" | base64 -d > "$tmp/keys" ||
    { log "$KEYS_SECRET: not a Secret Manager answer"; exit 1; }
  # A last line without its newline counts too (a value typed in a form).
  [ ! -s "$tmp/keys" ] || [ -z "$(tail -c 1 "$tmp/keys")" ] || echo >> "$tmp/keys"
  if ! grep -q . "$tmp/keys" || grep -Evq '^(0|[1-9][0-9]{0,8}) [0-9a-f]{64}$' "$tmp/keys"; then
    log "$KEYS_SECRET must hold lines '<number> <64 hex digits>'; leaving the keys as they are"
    exit 1
  fi
  keys_dir=$DATA_DIR/server-keys
  owner=$(stat -c %u:%g "$DATA_DIR")
  install -d -m 0700 -o "$${owner%:*}" -g "$${owner#*:}" "$keys_dir"
  while read -r number hex; do
    if [ "$(cat "$keys_dir/$number.key" 2>/dev/null)" != "$hex" ]; then
      log "writing key $number from $KEYS_SECRET"
      printf '%s\n' "$hex" > "$tmp/key"
      install -m 0600 -o "$${owner%:*}" -g "$${owner#*:}" "$tmp/key" "$keys_dir/$number.key"
    fi
  done < "$tmp/keys"
  # What the service writes once it has served from PostgreSQL, written
  # here already: an operator command on this data directory without the
  # store setting then refuses, even before the service first connects,
  # instead of starting an empty redb store (control-plane/src/main.rs,
  # STORE_MARKER; the URL has no password, so the service leaves it be).
  printf '%s\n' "$STORE_URL" > "$tmp/marker"
  install -m 0600 -o "$${owner%:*}" -g "$${owner#*:}" "$tmp/marker" "$DATA_DIR/postgres-store"
  # A key the secret no longer has was retired by the operator.
  for f in "$keys_dir"/*.key; do
    [ -e "$f" ] || continue
    number=$(basename "$f" .key)
    if ! grep -q "^$number " "$tmp/keys"; then
      log "removing key $number (no longer in $KEYS_SECRET)"
      rm -f -- "$f"
    fi
  done
  systemctl enable cloud-sql-proxy.service
  restart_if_changed cloud-sql-proxy.service "$PROXY_BIN" $UNITS/cloud-sql-proxy.service
fi

# --- 5. run it ------------------------------------------------------------------
systemctl enable support-control-plane.service
settings=($UNITS/support-control-plane.service.d/*.conf)
[ -z "$STORE_URL" ] || settings+=("$STORE_ENV" "$DATA_DIR"/server-keys/*.key)
restart_if_changed support-control-plane.service "$${settings[@]}"
# One backup timer for a shared store: the first VM's.
if [ "$RUN_BACKUPS" = yes ]; then
  systemctl enable support-control-plane-backup.timer
  systemctl start support-control-plane-backup.timer
else
  systemctl disable --now support-control-plane-backup.timer
fi
log "running; listening on 0.0.0.0:$LISTEN_PORT, store $${STORE_URL:-redb on $DATA_DIR}, backups $([ "$RUN_BACKUPS" = yes ] && echo "to $BACKUP_URL" || echo "on the first VM")"
