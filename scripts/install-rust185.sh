#!/usr/bin/env bash
# Installs Debian's rustc-web 1.85 (at /usr/bin/rustc) so the device crates can be
# checked against the compiler the armv7 build uses. Idempotent. See
# ../shared/NOTES-environment.md: the Debian revision is selected at run time,
# never pinned, because a point release replaces it on the mirror.
set -euo pipefail

want_major=1.85
if [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q "^rustc ${want_major}"; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
  dpkg --add-architecture armhf
fi
# An armhf security-index error is expected and harmless.
apt-get update -qq || true

# Pick the newest rustc-web 1.85.x offered for amd64 and (for later cross builds) armhf.
pick() { apt-cache madison "$1" | awk '{print $3}' | grep "^${want_major}\." | sort -V | tail -n1; }
v_host=$(pick rustc-web)
v_arm=$(pick libstd-rust-web-dev:armhf)
if [ -z "$v_host" ]; then
  echo "install-rust185: no rustc-web ${want_major}.x in the apt sources" >&2
  exit 1
fi
if [ -n "$v_arm" ] && [ "$v_arm" != "$v_host" ]; then
  echo "install-rust185: note: armhf libstd is $v_arm, host rustc-web is $v_host" >&2
fi
echo "install-rust185: installing rustc-web $v_host" >&2
apt-get install -y -qq "rustc-web=$v_host" "libstd-rust-web-dev=$v_host" >/dev/null
/usr/bin/rustc --version
