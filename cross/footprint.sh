#!/usr/bin/env bash
# What the armv7 agent's size is made of, by crate: builds it exactly as
# cross/build-armv7.sh does (static musl, size-built std) but with the
# release-symbols profile (the same code, not stripped) and sums symbol sizes
# by the crate in each symbol's path. Symbols without a Rust path are musl's
# libc, libgcc or compiler helpers.
#
#   cross/footprint.sh      (after cross/build-armv7.sh has set things up)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/armv7-musl.sh
. cross/armv7-musl.sh
armv7_cargo build --profile release-symbols -p support-agent >&2
bin=$armv7_target_dir/$ARMV7_TRIPLE/release-symbols/support-agent
arm-linux-gnueabihf-size "$bin" >&2
arm-linux-gnueabihf-nm -C -S --size-sort "$bin" | python3 -c '
import re, sys, collections
sizes = collections.Counter()
for line in sys.stdin:
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2] not in "tTrRdDbBwW":
        continue
    size, name = int(parts[1], 16), parts[3].strip()
    name = name.lstrip("<&*( ")
    if name.startswith("impl "):
        name = name[5:]
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    crate = m.group(1) if m else "(C: musl libc, libgcc, compiler helpers)"
    if crate in ("core", "alloc", "std", "compiler_builtins", "hashbrown", "std_detect", "memchr", "addr2line", "gimli", "miniz_oxide", "object", "rustc_demangle", "adler2"):
        crate = "(Rust std, core, alloc)"
    sizes[crate] += size
total = sum(sizes.values())
print("%-40s %8s %6s" % ("crate", "KiB", "share"))
for crate, size in sizes.most_common(25):
    print(f"{crate:<40} {size/1024:>8.1f} {100*size/total:>5.1f}%")
print("%-40s %8.1f" % ("(all symbols)", total / 1024))
'
