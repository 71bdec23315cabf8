#!/usr/bin/env bash
# Runs the control plane's startup script in a sandbox, rendered both ways:
#  * redb (one VM, its data disk): the first boot formats, mounts and
#    installs, the second changes nothing (no format, no second fstab line,
#    no restart); a disk holding something else is refused, not formatted;
#  * Cloud SQL (a replica): no disk; the proxy checked, installed and run
#    with IAM login; the store drop-in; the shared keys from Secret Manager
#    (never started without them, rewritten when the secret changes, a bad
#    secret refused), and no backup timer on a replica that is not the
#    first.
#
# The sandbox: a private mount namespace (tmpfs over /etc/systemd/system), a
# 64 MiB loop device as the data disk, the data directory and fstab under a
# temp dir, and stubs for curl (metadata token, downloads, Secret Manager),
# apt-get, systemctl and sleep that only record their calls. Needs root and a free
# loop device; without them it says so and passes (an extra for a developer
# without root), unless SUPPORT_REQUIRE_SANDBOX=1 (the test command) makes
# that a failure.
#
# Usage: startup_sandbox.sh INFRA_DIR PYTHON
set -euo pipefail
infra=$(cd "$1" && pwd)
py=$2

if [ "$(id -u)" -ne 0 ] || ! loop=$(losetup -f 2>/dev/null) || [ ! -e "$loop" ]; then
  if [ "${SUPPORT_REQUIRE_SANDBOX:-}" = 1 ]; then
    echo "  FAIL startup-script sandbox: needs root and a loop device (SUPPORT_REQUIRE_SANDBOX=1)"
    exit 1
  fi
  echo "  skip startup-script sandbox: needs root and a loop device"
  exit 0
fi

sim=$(mktemp -d /tmp/cp-startup.XXXXXX)
cleanup() {
  [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null || true
  rm -rf "$sim"
}
trap cleanup EXIT

truncate -s 64M "$sim/disk.img"
dev=$(losetup -f --show "$sim/disk.img")
mkdir -p "$sim/bin" "$sim/data"
printf 'not really a deb\n' > "$sim/package.deb"
printf 'not really the proxy\n' > "$sim/proxy.bin"
printf '# fstab\n' > "$sim/fstab"
sha=$(sha256sum "$sim/package.deb" | cut -d' ' -f1)
proxy_sha=$(sha256sum "$sim/proxy.bin" | cut -d' ' -f1)

cat > "$sim/bin/curl" <<EOF
#!/bin/bash
# A header given on stdin (-H @-) is recorded with the call.
hdr=""; for a in "\$@"; do [ "\$a" = @- ] && hdr=" \$(cat)"; done
echo "curl \$*\$hdr" >> "$sim/calls"
out=""; url=""; while [ \$# -gt 0 ]; do [ "\$1" = -o ] && out=\$2; url=\$1; shift; done
if [ -z "\$out" ]; then echo '{"access_token":"tok","expires_in":3599}'; exit 0; fi
case "\$url" in
  *cloud-sql-proxy*) cp "$sim/proxy.bin" "\$out" ;;
  *secretmanager*) [ -f "$sim/secret.json" ] || exit 22; cp "$sim/secret.json" "\$out" ;;
  *) cp "$sim/package.deb" "\$out" ;;
esac
EOF
for c in apt-get systemctl sleep; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/calls"\n' "$c" "$sim" > "$sim/bin/$c"
done
# A unit that fails to start, when asked to.
printf '[ "$1" = restart ] && [ -e "%s/fail-restart" ] && exit 1\nexit 0\n' "$sim" >> "$sim/bin/systemctl"
chmod +x "$sim"/bin/*

# Render as templatefile() would, both ways, then point the device, fstab,
# data directory and proxy into the sandbox.
render() { # redb|cloud-sql OUT
  "$py" - "$infra/control-plane-startup.sh" "$sim" "$sha" "$proxy_sha" "$1" > "$2" <<'EOF'
import re, sys
template, sim, sha, proxy_sha, mode = sys.argv[1:]
sql = mode == "cloud-sql"
values = {
    "package_url": "https://storage.googleapis.com/p-support-artifacts/packages/1.0/cp.deb",
    "package_sha256": sha,
    "listen_port": "8080",
    "backup_url": "gs://p-support-backups/backups",
    "data_device": "" if sql else "support-cp-data",
    "data_dir": f"{sim}/data-sql" if sql else f"{sim}/data",
    "store_url": "postgres://support-control-plane%40p.iam@127.0.0.1:5432/support_cp" if sql else "",
    "sql_instance": "p:europe-west1:support-control-plane" if sql else "",
    "proxy_url": "https://storage.googleapis.com/cloud-sql-connectors/cloud-sql-proxy/v2.14.1/cloud-sql-proxy.linux.amd64" if sql else "",
    "proxy_sha256": proxy_sha if sql else "",
    "keys_secret": "projects/p/secrets/support-control-plane-keys" if sql else "",
    "run_backups": "no" if sql else "yes",
}
text = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: values[m.group(1)], open(template).read())
text = text.replace("$${", "${")
# Every path into the sandbox must be found: a template that changed them
# must fail here, never run as root against the host's disk, fstab, /usr,
# /etc or /var.
for real, fake in [
    ("/dev/disk/by-id/google-", f"{sim}/device-"),
    ("/etc/fstab", f"{sim}/fstab"),
    ('mount "$DATA_DIR"', f'mount -T {sim}/fstab "$DATA_DIR"'),
    ("/usr/local/lib/support-tunnel/", f"{sim}/lib/"),
    ("/etc/support-tunnel/", f"{sim}/etc/"),
    ("/var/lib/support-tunnel/", f"{sim}/state/"),
]:
    if real not in text:
        sys.exit(f"startup_sandbox: {real!r} is no longer in the startup script; update the sandbox")
    text = text.replace(real, fake)
for left in ["/etc/fstab", "/dev/disk/", "/usr/local/", "/etc/support-tunnel", "/var/lib/support-tunnel"]:
    if left in text:
        sys.exit(f"startup_sandbox: {left!r} still in the rendered script")
print(text)
EOF
}
ln -s "$dev" "$sim/device-support-cp-data"
render redb "$sim/startup.sh"
render cloud-sql "$sim/startup-sql.sh"
# The same with the next proxy version pinned.
printf 'the next proxy\n' > "$sim/proxy2.bin"
proxy_sha=$(sha256sum "$sim/proxy2.bin" | cut -d' ' -f1)
render cloud-sql "$sim/startup-sql-2.sh"

unshare -m bash -s "$sim" "$infra/.." <<'EOF'
set -euo pipefail
sim=$1
repo=$2
mount --make-rprivate /
mount -t tmpfs tmpfs /etc/systemd/system
fail() { echo "  FAIL startup script, $1"; exit 1; }
# systemd-analyze verify on every unit the script wrote, with the package's
# units under them (their programs swapped for /bin/true, their man pages left out): it prints what
# systemd would ignore or refuse, e.g. a % it takes for a specifier.
verify_units() { # what
  local u out
  for u in support-control-plane.service support-control-plane-backup.service; do
    sed -e 's#^ExecStart=.*#ExecStart=/bin/true#' -e '/^Documentation=/d' "$repo/control-plane/dist/$u" > "/etc/systemd/system/$u"
  done
  for u in /etc/systemd/system/*.service; do
    out=$(systemd-analyze verify "$u" 2>&1) || fail "$1: systemd-analyze verify $u failed: $out"
    [ -z "$out" ] || fail "$1: systemd-analyze verify $u: $out"
  done
  rm -f /etc/systemd/system/support-control-plane.service /etc/systemd/system/support-control-plane-backup.service
}
for boot in 1 2; do
  : > "$sim/calls"
  PATH=$sim/bin:$PATH bash "$sim/startup.sh" > "$sim/log" 2>&1 || { cat "$sim/log"; fail "boot $boot: exited non-zero"; }
  mountpoint -q "$sim/data" || fail "boot $boot: data disk not mounted"
  [ "$(grep -c " $sim/data ext4 " "$sim/fstab")" = 1 ] || fail "boot $boot: fstab should have exactly one line for the data disk"
  grep -q 'Environment=SUPPORT_CP_LISTEN=0.0.0.0:8080' /etc/systemd/system/support-control-plane.service.d/listen.conf || fail "listen drop-in"
  grep -q 'Environment=SUPPORT_CP_METRICS_LISTEN=127.0.0.1:' /etc/systemd/system/support-control-plane.service.d/listen.conf || fail "metrics stay on the VM"
  grep -q 'Environment=SUPPORT_CP_BACKUP_URL=gs://p-support-backups/backups' /etc/systemd/system/support-control-plane-backup.service.d/bucket.conf || fail "backup drop-in"
  grep -q "^apt-get install .*$sim\|^apt-get install .*/support-control-plane.deb" "$sim/calls" || fail "boot $boot: package not installed"
  grep -q '^curl .*Authorization: Bearer tok' "$sim/calls" || fail "boot $boot: download without the VM's token"
  grep -q '^systemctl enable support-control-plane.service' "$sim/calls" || fail "boot $boot: service not enabled"
  grep -q '^systemctl enable support-control-plane-backup.timer' "$sim/calls" || fail "boot $boot: the backup timer not enabled (the only VM)"
  if [ $boot = 1 ]; then
    grep -q 'formatting the new data disk' "$sim/log" || fail "boot 1: blank disk not formatted"
    grep -q '^systemctl restart support-control-plane.service' "$sim/calls" || fail "boot 1: service not started with its drop-ins"
    verify_units "redb"
    echo "  ok   startup script, first boot: formats, mounts (fstab by UUID), drop-ins, checked install, enable, start; units verify"
  else
    ! grep -q 'formatting' "$sim/log" || fail "boot 2: formatted the disk again"
    ! grep -q '^systemctl restart' "$sim/calls" || fail "boot 2: restarted although nothing changed"
    echo "  ok   startup script, second boot: no format, one fstab line, no restart"
  fi
done
# A disk with something else on it (here: swap) is never formatted.
umount "$sim/data"
dev=$(readlink "$sim/device-support-cp-data")
mkswap -q "$dev" >/dev/null
if PATH=$sim/bin:$PATH bash "$sim/startup.sh" > "$sim/log" 2>&1; then fail "accepted a disk that holds swap"; fi
grep -q 'leaving it alone' "$sim/log" && [ "$(blkid -p -o value -s TYPE "$dev")" = swap ] || fail "touched a disk that holds swap"
echo "  ok   startup script, foreign disk: refused, left as it was"

# --- Cloud SQL: a replica that is not the first ---------------------------------
sql=$sim/startup-sql.sh
units=/etc/systemd/system
mkdir -p "$sim/data-sql"
chown nobody:nogroup "$sim/data-sql"   # as the package makes it: the service's user
chmod 0700 "$sim/data-sql"
keys=$sim/data-sql/server-keys
k1=$(printf 'a%.0s' $(seq 64)); k2=$(printf 'b%.0s' $(seq 64)); k3=$(printf 'c%.0s' $(seq 64))
secret() { # the Secret Manager answer holding $1, as the API prints it
  printf '{\n  "name": "projects/1/secrets/support-control-plane-keys/versions/1",\n  "payload": {\n    "data": "%s",\n    "dataCrc32c": "3735928559"\n  }\n}\n' \
    "$(printf '%b' "$1" | base64 -w0)" > "$sim/secret.json"
}
sql_boot() { # what [script]; runs it, expects success
  : > "$sim/calls"
  PATH=$sim/bin:$PATH bash "${2:-$sql}" > "$sim/log" 2>&1 || { cat "$sim/log"; fail "cloud-sql, $1: exited non-zero"; }
}
sql_boot_fails() { # what; runs it, expects failure
  : > "$sim/calls"
  if PATH=$sim/bin:$PATH bash "$sql" > "$sim/log" 2>&1; then fail "cloud-sql, $1: succeeded"; fi
}
started() { grep -q "^systemctl \(start\|restart\) $1" "$sim/calls"; }
restarted() { grep -q "^systemctl restart $1" "$sim/calls"; }
fstab_before=$(cat "$sim/fstab")

# No keys in Secret Manager yet: the service is never started, and its
# drop-in (written before the package) keeps systemd from starting it.
rm -f "$sim/secret.json"
sql_boot_fails "no keys"
grep -q 'gave up reading projects/p/secrets/support-control-plane-keys' "$sim/log" || { cat "$sim/log"; fail "cloud-sql: no word about the missing keys"; }
! started support-control-plane.service || fail "cloud-sql: started without the keys"
[ ! -e "$keys" ] || [ -z "$(ls -A "$keys")" ] || fail "cloud-sql: keys appeared from nowhere"
grep -qx "AssertPathExistsGlob=$sim/data-sql/server-keys/\*.key" $units/support-control-plane.service.d/store.conf || fail "cloud-sql: systemd may start the service without keys"
echo "  ok   startup script, Cloud SQL without keys in Secret Manager: keeps trying, never starts the service, nor lets systemd"

# The operator wrote the secret; the last line without its newline, as a
# value typed into a form is.
secret '1 '"$k1"'\n2 '"$k2"
sql_boot "first boot"
[ "$(cat "$sim/fstab")" = "$fstab_before" ] || fail "cloud-sql: touched fstab"
! grep -q 'formatting\|waiting for' "$sim/log" || fail "cloud-sql: looked for a data disk"
cmp -s "$sim/proxy.bin" "$sim/lib/cloud-sql-proxy" || fail "cloud-sql: proxy not installed"
grep -qx "ExecStart=$sim/lib/cloud-sql-proxy --private-ip --auto-iam-authn --address 127.0.0.1 --port 5432 p:europe-west1:support-control-plane" $units/cloud-sql-proxy.service || fail "cloud-sql: proxy unit"
grep -qx 'DynamicUser=yes' $units/cloud-sql-proxy.service || fail "cloud-sql: the proxy runs as root"
grep -qx 'SUPPORT_CP_STORE=postgres://support-control-plane%40p.iam@127.0.0.1:5432/support_cp' "$sim/etc/control-plane-store.env" || fail "cloud-sql: store setting"
grep -qx "EnvironmentFile=$sim/etc/control-plane-store.env" $units/support-control-plane.service.d/store.conf || fail "cloud-sql: the service does not read the store setting"
grep -qx "EnvironmentFile=$sim/etc/control-plane-store.env" $units/support-control-plane-backup.service.d/bucket.conf || fail "cloud-sql: the backup job does not read the store setting"
grep -qx 'ExecStartPre=/usr/bin/test -n "${SUPPORT_CP_STORE}"' $units/support-control-plane.service.d/store.conf || fail "cloud-sql: nothing keeps the service off a redb file of its own"
grep -qx 'After=cloud-sql-proxy.service' $units/support-control-plane.service.d/store.conf || fail "cloud-sql: service not ordered after the proxy"
[ "$(cat "$keys/1.key")" = "$k1" ] && [ "$(cat "$keys/2.key")" = "$k2" ] || fail "cloud-sql: keys not written: $(ls "$keys")"
grep -qx 'postgres://support-control-plane%40p.iam@127.0.0.1:5432/support_cp' "$sim/data-sql/postgres-store" && [ "$(stat -c '%a %U' "$sim/data-sql/postgres-store")" = "600 nobody" ] ||
  fail "cloud-sql: the data directory does not say where its store is"
[ "$(stat -c '%a %U' "$keys/1.key" "$keys/2.key" "$keys")" = "600 nobody
600 nobody
700 nobody" ] || fail "cloud-sql: keys' mode or owner: $(stat -c '%n %a %U' "$keys"/*.key "$keys")"
grep -q '^curl .*secretmanager.googleapis.com/v1/projects/p/secrets/support-control-plane-keys/versions/latest:access Authorization: Bearer tok' "$sim/calls" || fail "cloud-sql: keys read without the VM's token"
grep -q '^systemctl enable cloud-sql-proxy.service' "$sim/calls" || fail "cloud-sql: proxy not enabled"
restarted cloud-sql-proxy.service || fail "cloud-sql: proxy not (re)started"
restarted support-control-plane.service || fail "cloud-sql: service not (re)started with its keys"
grep -q '^systemctl disable --now support-control-plane-backup.timer' "$sim/calls" || fail "cloud-sql: a second VM runs backups too"
! grep -q '^systemctl \(enable\|start\) support-control-plane-backup.timer' "$sim/calls" || fail "cloud-sql: backup timer started on a second VM"
verify_units "cloud-sql"
echo "  ok   startup script, Cloud SQL first boot: no disk, checked proxy with IAM login, store setting for the service, backups and operator commands, keys 0600 (last line without newline too), no backup timer; units verify"

sql_boot "second boot"
! grep -q '^curl .*cloud-sql-proxy' "$sim/calls" || fail "cloud-sql boot 2: fetched the proxy again"
! grep -q '^systemctl restart' "$sim/calls" || fail "cloud-sql boot 2: restarted although nothing changed"
echo "  ok   startup script, Cloud SQL second boot: no download, no restart"

# The operator rotated (key 3) and retired (key 1) in the secret; the
# restart fails the first time (the run stops there), so the next run,
# with the keys already on disk, must still restart.
secret '2 '"$k2"'\n3 '"$k3"'\n'
touch "$sim/fail-restart"
sql_boot_fails "rotation, failed restart"
rm "$sim/fail-restart"
[ ! -e "$keys/1.key" ] && [ "$(cat "$keys/3.key")" = "$k3" ] && [ "$(cat "$keys/2.key")" = "$k2" ] || fail "cloud-sql: rotation not applied: $(ls "$keys")"
sql_boot "rotation, again"
restarted support-control-plane.service || fail "cloud-sql: a restart that failed was not tried again"
! restarted cloud-sql-proxy.service || fail "cloud-sql: proxy restarted for a key rotation"
sql_boot "rotation, once more"
! restarted support-control-plane.service || fail "cloud-sql: restarted again after a successful restart"
echo "  ok   startup script, Cloud SQL keys rotated: new key written, retired key removed, restarted (again after a failed restart, then not)"

# A new proxy version: installed, the proxy restarted, the service not.
cp "$sim/proxy2.bin" "$sim/proxy.bin"
sql_boot "new proxy" "$sim/startup-sql-2.sh"
cmp -s "$sim/proxy2.bin" "$sim/lib/cloud-sql-proxy" || fail "cloud-sql: new proxy not installed"
restarted cloud-sql-proxy.service || fail "cloud-sql: proxy not restarted on a new version"
! restarted support-control-plane.service || fail "cloud-sql: service restarted for a proxy update"
echo "  ok   startup script, Cloud SQL new proxy version: installed, proxy restarted, service left running"
sql=$sim/startup-sql-2.sh   # from now on, the script that pins it

# A secret that is not key lines changes nothing.
secret '2 '"$k2"'\nnot a key\n'
sql_boot_fails "bad secret"
grep -q "must hold lines" "$sim/log" && [ "$(ls "$keys")" = "2.key
3.key" ] || fail "cloud-sql: a bad secret touched the keys: $(ls "$keys")"
! started support-control-plane.service || fail "cloud-sql: started on a bad secret"
echo "  ok   startup script, Cloud SQL bad secret: refused, keys left as they were"

# A proxy download that is not the pinned file is refused.
rm -f "$sim/lib/cloud-sql-proxy"
printf 'something else\n' > "$sim/proxy.bin"
secret '2 '"$k2"'\n3 '"$k3"'\n'
sql_boot_fails "proxy of another sha256"
grep -q 'sha256 mismatch: refusing the proxy' "$sim/log" && [ ! -e "$sim/lib/cloud-sql-proxy" ] || fail "cloud-sql: installed a proxy of another sha256"
echo "  ok   startup script, Cloud SQL proxy of another sha256: refused"
EOF
