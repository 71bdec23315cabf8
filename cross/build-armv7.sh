#!/usr/bin/env bash
# Builds the device agent as shipped: a statically linked
# armv7-unknown-linux-gnueabihf binary, compiled by Debian's rustc-web 1.85
# with the armhf standard library (selected at run time, never pinned; see
# scripts/install-rust185.sh). Idempotent; installs what it needs. Prints
# the stripped size and runs the binary under qemu-arm-static.
#
#   cross/build-armv7.sh            # -> prints the artifact's path last
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-rust185.sh
  if ! command -v qemu-arm-static >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
  fi
fi
for tool in /usr/bin/rustc arm-linux-gnueabihf-gcc qemu-arm-static; do
  command -v "$tool" >/dev/null || {
    echo "build-armv7: $tool is missing; run this script as root once to install it" >&2
    exit 1
  }
done

triple=armv7-unknown-linux-gnueabihf
target_dir=${CARGO_TARGET_DIR:-$PWD/target}/rust-1.85
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=$target_dir
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
# Static glibc: one file, no loader or libc version on the device to match.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
cargo build --locked --release -p support-agent --target "$triple" >&2

bin=$target_dir/$triple/release/support-agent
file "$bin" | grep -q "statically linked" || {
  echo "build-armv7: $bin is not statically linked" >&2
  exit 1
}
size=$(stat -c %s "$bin")
echo "support-agent (armv7, static, stripped): $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}') MiB)" >&2
qemu-arm-static "$bin" --version >&2
echo "$bin"
