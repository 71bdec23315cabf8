#!/usr/bin/env bash
# Installs what the armv7 device build needs, from Debian's own packages
# (rustup cannot download targets on these machines):
#
#   * rustc-web 1.85 (/usr/bin/rustc) and cargo-web 1.85 (/usr/bin/cargo:
#     rustup's newer cargo rejects -Zbuild-std-features with Debian's library
#     sources), and rust-web-src (the standard library's sources, at
#     /usr/lib/rustlib/src/rust): the shipped agent is a static musl binary
#     built with -Zbuild-std (cross/build-armv7.sh);
#   * musl-dev:armhf + musl:armhf, extracted (not installed: the armhf
#     packages' dependencies cannot be met on amd64) under $MUSL_ROOT, and
#     there the ARM cross compiler's libgcc_eh.a offered as libunwind.a
#     (std's unwind crate asks for -lunwind);
#   * the prebuilt armhf (glibc) standard library, extracted the same way,
#     for scripts/test's quick `cargo check --target armv7-unknown-linux-gnueabihf`
#     of every device crate; and the ARM C cross compiler (the linker).
#
# Idempotent: exits at once when all of it is in place. The Debian revisions
# are selected at run time, never pinned (see ../shared/NOTES-environment.md):
# a point release replaces them on the mirror. Run as root.
set -euo pipefail

want_major=1.85
# cross/build-armv7.sh and cross/footprint.sh read the same path.
MUSL_ROOT=/usr/local/lib/support-tunnel/armv7-musl
musl_lib=$MUSL_ROOT/usr/lib/arm-linux-musleabihf
armv7_std=/usr/lib/rustlib/armv7-unknown-linux-gnueabihf
rust_src=/usr/lib/rustlib/src/rust/library

installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }

ready() {
  local rv
  rv=$(installed rustc-web)
  [[ "$rv" == "$want_major".* ]] &&
    [ "$(installed cargo-web)" = "$rv" ] &&
    [ "$(installed rust-web-src)" = "$rv" ] &&
    [ -d "$rust_src" ] &&
    /usr/bin/rustc --version 2>/dev/null | grep -q "^rustc ${want_major}" &&
    /usr/bin/cargo --version 2>/dev/null | grep -q "^cargo ${want_major}" &&
    [ -f "$armv7_std/.debian-version" ] && [ "$(cat "$armv7_std/.debian-version")" = "$rv" ] &&
    command -v arm-linux-gnueabihf-gcc >/dev/null &&
    [ -f "$musl_lib/libc.a" ] && [ -f "$musl_lib/crt1.o" ] &&
    [ -e "$MUSL_ROOT/unwind/libunwind.a" ]
}
if ready; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-rust185: the armv7 toolchain is incomplete; run this as root (it installs Debian packages)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
  dpkg --add-architecture armhf
fi
# An armhf security-index error is expected and harmless.
apt-get update -qq || true

# The newest 1.85.x offered for all of: amd64 rustc-web and cargo-web,
# rust-web-src, and the armhf standard library.
pick() { apt-cache madison "$1" | awk '{print $3}' | grep "^${want_major}\." | sort -Vu; }
v=$(comm -12 <(pick rustc-web) <(pick cargo-web) | comm -12 - <(pick rust-web-src) |
  comm -12 - <(pick libstd-rust-web-dev:armhf) | tail -n1)
if [ -z "$v" ]; then
  echo "install-rust185: no ${want_major}.x of rustc-web, cargo-web, rust-web-src and libstd-rust-web-dev:armhf offered at one version" >&2
  exit 1
fi
echo "install-rust185: installing rustc-web, cargo-web, rust-web-src $v and the armv7 standard library and musl" >&2
apt-get install -y -qq "rustc-web=$v" "libstd-rust-web-dev=$v" "cargo-web=$v" "rust-web-src=$v" \
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross >/dev/null

# musl for armhf: whatever version the archive offers (musl-dev depends on
# the musl of exactly its own version).
musl_v=$(apt-cache policy musl-dev:armhf | sed -n 's/^ *Candidate: //p')
if [ -z "$musl_v" ] || [ "$musl_v" = "(none)" ]; then
  echo "install-rust185: no musl-dev:armhf offered" >&2
  exit 1
fi

# Installing the armhf packages fails on their dependencies; extracting works.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# (apt's "download is performed unsandboxed as root" note is expected: the
# scratch directory is root's own.)
(cd "$work" && apt-get download -qq "libstd-rust-web-dev:armhf=$v" "libstd-rust-web-${want_major}:armhf=$v" \
  "musl-dev:armhf=$musl_v" "musl:armhf=$musl_v" 2>"$work/download.log") ||
  { cat "$work/download.log" >&2; echo "install-rust185: apt-get download failed" >&2; exit 1; }
for d in "$work"/libstd-rust-web*_armhf.deb; do dpkg-deb -x "$d" "$work/std"; done
rm -rf "$armv7_std"
cp -r "$work/std/usr/lib/rustlib/armv7-unknown-linux-gnueabihf" /usr/lib/rustlib/
echo "$v" > "$armv7_std/.debian-version"

rm -rf "$MUSL_ROOT"
mkdir -p "$MUSL_ROOT/unwind"
for d in "$work"/musl*_armhf.deb; do dpkg-deb -x "$d" "$MUSL_ROOT"; done
echo "$musl_v" > "$MUSL_ROOT/.debian-version"
eh=$(arm-linux-gnueabihf-gcc -print-file-name=libgcc_eh.a)
[ -f "$eh" ] || { echo "install-rust185: the ARM cross compiler has no libgcc_eh.a" >&2; exit 1; }
ln -s "$eh" "$MUSL_ROOT/unwind/libunwind.a"
ready || { echo "install-rust185: installed, but the toolchain is still incomplete" >&2; exit 1; }
/usr/bin/rustc --version
/usr/bin/cargo --version
