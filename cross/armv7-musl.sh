# shellcheck shell=bash
# Sourced by cross/build-armv7.sh and cross/footprint.sh (not run on its own):
# the one place that says how the device agent is built, as a static
# armv7-unknown-linux-musleabihf binary with a standard library compiled for
# it (-Zbuild-std), from Debian's packages only (scripts/install-rust185.sh
# installs and extracts them; ../shared/NOTES-environment.md, "A static musl
# armv7 build with a size-built std"):
#
#   /usr/bin/rustc, /usr/bin/cargo   Debian's rustc-web and cargo-web 1.85
#                                    (rustup's newer cargo rejects
#                                    -Zbuild-std-features with these sources);
#                                    RUSTC_BOOTSTRAP=1 lets 1.85 take -Z flags
#   /usr/lib/rustlib/src/rust        rust-web-src: std's sources
#   $ARMV7_MUSL/usr/lib/arm-linux-musleabihf
#                                    musl-dev:armhf + musl:armhf, extracted
#   $ARMV7_MUSL/unwind/libunwind.a   -> the ARM cross gcc's libgcc_eh.a (std's
#                                    unwind crate links -lunwind)
#
# Everything goes on cargo's command line (--config) and into this process's
# environment: no .cargo/config.toml with absolute paths, so a clone works
# from any directory (also one with spaces, or only root can enter).
#
# Defines: ARMV7_TRIPLE, ARMV7_MUSL, armv7_target_dir, armv7_missing (prints
# what is missing, returns non-zero if anything is), armv7_cargo ARGS...
# (`cargo ARGS` for the musl target with the size-built std; ARGS need
# --release or --profile), and host_musl_cargo ARGS... (the same build for
# x86_64, to measure the shipped allocator natively; needs musl-dev).

ARMV7_TRIPLE=armv7-unknown-linux-musleabihf
# The same path as in scripts/install-rust185.sh.
ARMV7_MUSL=/usr/local/lib/support-tunnel/armv7-musl
# The build's own target dir (Debian's cargo and rustc, -Zbuild-std): beside
# the workspace's, as scripts/test's Rust 1.85 checks use it.
armv7_target_dir=${CARGO_TARGET_DIR:-$PWD/target}
case "$armv7_target_dir" in /*) ;; *) armv7_target_dir=$PWD/$armv7_target_dir ;; esac
armv7_target_dir=$armv7_target_dir/rust-1.85

# std's features (-Zbuild-std-features). Empty, rather than cargo's default
# list (backtrace, panic-unwind, default): no `backtrace`, that is no DWARF
# reader in the binary (~170 KB; a stripped binary has no symbols to show in
# a backtrace anyway), no `panic-unwind` (the profile aborts). Panics still
# print their message and location. `panic_immediate_abort` would drop those
# too; cross/FOOTPRINT.md has what each choice costs and why it is not used.
ARMV7_STD_FEATURES=${ARMV7_STD_FEATURES-}

armv7_missing() {
  local missing=0 t
  for t in /usr/bin/rustc /usr/bin/cargo arm-linux-gnueabihf-gcc qemu-arm-static; do
    command -v "$t" >/dev/null || { echo "  $t" >&2; missing=1; }
  done
  for t in /usr/lib/rustlib/src/rust/library/std/Cargo.toml \
    "$ARMV7_MUSL/usr/lib/arm-linux-musleabihf/libc.a" \
    "$ARMV7_MUSL/usr/lib/arm-linux-musleabihf/crt1.o" \
    "$ARMV7_MUSL/unwind/libunwind.a"; do
    [ -e "$t" ] || { echo "  $t" >&2; missing=1; }
  done
  /usr/bin/cargo --version 2>/dev/null | grep -q '^cargo 1\.85\.' || { echo "  Debian's cargo 1.85 at /usr/bin/cargo" >&2; missing=1; }
  return $missing
}

armv7_cargo() {
  local m=$ARMV7_MUSL/usr/lib/arm-linux-musleabihf
  # Thumb-2 code (std included): about 28% smaller than ARM code here, and
  # every ARMv7-A core runs it; Debian's armhf is built this way too.
  musl_cargo "$ARMV7_TRIPLE" arm-linux-gnueabihf-gcc "$m" "$ARMV7_MUSL/unwind" \
    -C target-feature=+thumb-mode -- "$@"
}

# The same build for this machine (x86_64-unknown-linux-musl, Debian's
# musl-dev): the shipped agent's allocator and std, natively, for measuring
# its resident memory and CPU (qemu-user shows neither). Builds into
# $HOST_MUSL_TARGET_DIR.
HOST_MUSL_TRIPLE=x86_64-unknown-linux-musl
HOST_MUSL_LIB=/usr/lib/x86_64-linux-musl
HOST_MUSL_UNWIND=${armv7_target_dir%/rust-1.85}/host-musl-unwind
host_musl_cargo() {
  mkdir -p "$HOST_MUSL_UNWIND"
  ln -sf "$(gcc -print-file-name=libgcc_eh.a)" "$HOST_MUSL_UNWIND/libunwind.a"
  # Not position-independent: the target defaults to static-pie, whose
  # start file (rcrt1.o) Debian's musl-dev does not ship.
  musl_cargo "$HOST_MUSL_TRIPLE" gcc "$HOST_MUSL_LIB" "$HOST_MUSL_UNWIND" \
    -C relocation-model=static -- "$@"
}

# musl_cargo TRIPLE LINKER MUSL_LIBDIR UNWIND_DIR [RUSTFLAGS...] -- CARGO_ARGS...
musl_cargo() {
  local triple=$1 linker=$2 m=$3 unwind=$4
  shift 4
  local flags=(
    -L "native=$m" -L "native=$unwind"
    # musl's own start files and libc.a, not rustc's self-contained copies
    # (Debian ships none for these targets).
    -C link-self-contained=no
    -Z pre-link-arg=-nostartfiles -Z "pre-link-arg=$m/crt1.o" -Z "pre-link-arg=$m/crti.o"
    -C link-arg=-lgcc -C "link-arg=$m/crtn.o"
  )
  while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  local toml="" f
  for f in "${flags[@]}"; do toml+="${toml:+, }\"$f\""; done
  # RUSTFLAGS would replace the target's rustflags below (cargo's order), and
  # the link would fail without them.
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$armv7_target_dir" \
    /usr/bin/cargo "$@" --locked --target "$triple" \
    -Zbuild-std=std,panic_abort "-Zbuild-std-features=$ARMV7_STD_FEATURES" \
    --config "target.$triple.linker = \"$linker\"" \
    --config "target.$triple.rustflags = [$toml]"
}
