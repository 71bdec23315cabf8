#!/usr/bin/env bash
# Builds the device agent as shipped: a static armv7-unknown-linux-musleabihf
# binary, with the standard library compiled for it (-Zbuild-std=std,panic_abort
# at the release profile's opt-level), by Debian's rustc-web and cargo-web 1.85
# from Debian's packages only (cross/armv7-musl.sh says how; the packages are
# selected at run time, never pinned: scripts/install-rust185.sh). Idempotent;
# as root it installs what it needs. Prints the stripped size and runs the
# binary under qemu-arm-static.
#
#   cross/build-armv7.sh            # -> prints the artifact's path last
#
# The artifact: ${CARGO_TARGET_DIR:-target}/rust-1.85/armv7-unknown-linux-musleabihf/release/support-agent
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/armv7-musl.sh
. cross/armv7-musl.sh

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-rust185.sh >&2
  if ! command -v qemu-arm-static >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
  fi
fi
if ! missing=$(armv7_missing 2>&1); then
  printf 'build-armv7: missing (run this script, or scripts/install-rust185.sh, as root once):\n%s\n' "$missing" >&2
  exit 1
fi

armv7_cargo build --release -p support-agent >&2

bin=$armv7_target_dir/$ARMV7_TRIPLE/release/support-agent
desc=$(file -b "$bin")
[[ "$desc" == *"ARM, EABI5"* && "$desc" == *"statically linked"* ]] || {
  echo "build-armv7: $bin is not a static ARM binary: $desc" >&2
  exit 1
}
size=$(stat -c %s "$bin")
echo "support-agent (armv7, static, stripped): $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}') MiB)" >&2
qemu-arm-static "$bin" --version >&2
echo "$bin"
