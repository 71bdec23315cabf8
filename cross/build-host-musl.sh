#!/usr/bin/env bash
# Builds the agent as shipped (static musl, std built with it, Rust 1.85),
# but for this x86_64 machine: the binary to measure the shipped allocator's
# resident memory and CPU natively (cross/FOOTPRINT.md), which qemu-user
# cannot show. Prints its path.
#
#   SUPPORT_AGENT_BIN=$(cross/build-host-musl.sh) cargo bench -p support-agent --bench footprint
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/armv7-musl.sh
. cross/armv7-musl.sh
for t in /usr/bin/rustc /usr/bin/cargo /usr/lib/rustlib/src/rust/library/std/Cargo.toml "$HOST_MUSL_LIB/libc.a"; do
  [ -e "$t" ] || { echo "build-host-musl: missing $t (scripts/setup installs it)" >&2; exit 1; }
done
host_musl_cargo build --release -p support-agent >&2
echo "$armv7_target_dir/$HOST_MUSL_TRIPLE/release/support-agent"
