#!/usr/bin/env bash
# Runs the control plane's startup script twice in a sandbox and checks that
# the first boot formats, mounts and installs, and that the second changes
# nothing (no format, no second fstab line, no restart); and that a disk
# holding something else is refused, not formatted.
#
# The sandbox: a private mount namespace (tmpfs over /etc/systemd/system), a
# 64 MiB loop device as the data disk, the data directory and fstab under a
# temp dir, and stubs for curl (metadata token, download), apt-get,
# systemctl and sleep that only record their calls. Needs root and a free
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
ln -s "$dev" "$sim/device"
mkdir -p "$sim/bin" "$sim/data"
printf 'not really a deb\n' > "$sim/package.deb"
printf '# fstab\n' > "$sim/fstab"
sha=$(sha256sum "$sim/package.deb" | cut -d' ' -f1)

cat > "$sim/bin/curl" <<EOF
#!/bin/bash
# A header given on stdin (-H @-) is recorded with the call.
hdr=""; for a in "\$@"; do [ "\$a" = @- ] && hdr=" \$(cat)"; done
echo "curl \$*\$hdr" >> "$sim/calls"
out=""; while [ \$# -gt 0 ]; do [ "\$1" = -o ] && out=\$2; shift; done
if [ -n "\$out" ]; then cp "$sim/package.deb" "\$out"; else echo '{"access_token":"tok","expires_in":3599}'; fi
EOF
for c in apt-get systemctl sleep; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/calls"\n' "$c" "$sim" > "$sim/bin/$c"
done
chmod +x "$sim"/bin/*

# Render as templatefile() would, then point the device, fstab and data
# directory into the sandbox.
"$py" - "$infra/control-plane-startup.sh" "$sim" "$sha" > "$sim/startup.sh" <<'EOF'
import re, sys
template, sim, sha = sys.argv[1:]
values = {
    "package_url": "https://storage.googleapis.com/p-support-artifacts/packages/1.0/cp.deb",
    "package_sha256": sha,
    "listen_port": "8080",
    "backup_url": "gs://p-support-backups/backups",
    "data_device": "support-cp-data",
    "data_dir": f"{sim}/data",
}
text = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: values[m.group(1)], open(template).read())
text = text.replace("$${", "${")
# Every path into the sandbox must be found: a template that changed them
# must fail here, never run as root against the host's disk or fstab.
for real, fake in [
    ("/dev/disk/by-id/google-support-cp-data", f"{sim}/device"),
    ("/etc/fstab", f"{sim}/fstab"),
    ('mount "$DATA_DIR"', f'mount -T {sim}/fstab "$DATA_DIR"'),
]:
    if real not in text:
        sys.exit(f"startup_sandbox: {real!r} is no longer in the startup script; update the sandbox")
    text = text.replace(real, fake)
for left in ["/etc/fstab", "/dev/disk/"]:
    if left in text:
        sys.exit(f"startup_sandbox: {left!r} still in the rendered script")
print(text)
EOF

unshare -m bash -s "$sim" <<'EOF'
set -euo pipefail
sim=$1
mount --make-rprivate /
mount -t tmpfs tmpfs /etc/systemd/system
fail() { echo "  FAIL startup script, $1"; exit 1; }
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
  grep -q '^systemctl enable support-control-plane.service support-control-plane-backup.timer' "$sim/calls" || fail "boot $boot: units not enabled"
  if [ $boot = 1 ]; then
    grep -q 'formatting the new data disk' "$sim/log" || fail "boot 1: blank disk not formatted"
    echo "  ok   startup script, first boot: formats, mounts (fstab by UUID), drop-ins, checked install, enable --now"
  else
    ! grep -q 'formatting' "$sim/log" || fail "boot 2: formatted the disk again"
    ! grep -q '^systemctl restart' "$sim/calls" || fail "boot 2: restarted although nothing changed"
    echo "  ok   startup script, second boot: no format, one fstab line, no restart"
  fi
done
# A disk with something else on it (here: swap) is never formatted.
umount "$sim/data"
dev=$(readlink "$sim/device")
mkswap -q "$dev" >/dev/null
if PATH=$sim/bin:$PATH bash "$sim/startup.sh" > "$sim/log" 2>&1; then fail "accepted a disk that holds swap"; fi
grep -q 'leaving it alone' "$sim/log" && [ "$(blkid -p -o value -s TYPE "$dev")" = swap ] || fail "touched a disk that holds swap"
echo "  ok   startup script, foreign disk: refused, left as it was"
EOF
