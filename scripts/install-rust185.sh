#!/usr/bin/env bash
# Installs Debian's rustc-web 1.85 (at /usr/bin/rustc) with the armhf standard
# library and the ARM C cross-compiler, so the device crates can be checked
# for armv7 with the compiler the device build uses. Idempotent. See
# ../shared/NOTES-environment.md: the Debian revision is selected at run time,
# never pinned, because a point release replaces it on the mirror.
set -euo pipefail

want_major=1.85
armv7_std=/usr/lib/rustlib/armv7-unknown-linux-gnueabihf
if [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q "^rustc ${want_major}" \
  && [ -d "$armv7_std" ] && command -v arm-linux-gnueabihf-gcc >/dev/null; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
  dpkg --add-architecture armhf
fi
# An armhf security-index error is expected and harmless.
apt-get update -qq || true

# The newest 1.85.x offered for both amd64 rustc-web and the armhf standard library.
pick() { apt-cache madison "$1" | awk '{print $3}' | grep "^${want_major}\." | sort -V; }
v=$(comm -12 <(pick rustc-web) <(pick libstd-rust-web-dev:armhf) | tail -n1)
if [ -z "$v" ]; then
  echo "install-rust185: no rustc-web ${want_major}.x offered for both amd64 and armhf" >&2
  exit 1
fi
echo "install-rust185: installing rustc-web $v and the armv7 standard library" >&2
apt-get install -y -qq "rustc-web=$v" "libstd-rust-web-dev=$v" gcc-arm-linux-gnueabihf libc6-dev-armhf-cross >/dev/null

# Installing the armhf library packages fails on their dependencies; extracting works.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "libstd-rust-web-dev:armhf=$v" "libstd-rust-web-${want_major}:armhf=$v" 2>/dev/null)
for d in "$work"/libstd-rust-web*_armhf.deb; do dpkg-deb -x "$d" "$work/root"; done
rm -rf "$armv7_std"
cp -r "$work/root/usr/lib/rustlib/armv7-unknown-linux-gnueabihf" /usr/lib/rustlib/
/usr/bin/rustc --version
