"""Check 3 (second half): every checkov skip in infra/ is an inline
`#checkov:skip=CKV_...:reason` comment inside the resource it concerns,
with a real reason; no other way of silencing checkov is used.

Usage: check_checkov_skips.py INFRA_DIR
"""

import re
import sys
from pathlib import Path

SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?$")
MIN_REASON = 30  # characters: a reason, not "ok" or "n/a"


def main(directory):
    failed = 0
    skips = 0
    for config in (".checkov.yaml", ".checkov.yml"):
        if Path(directory, config).exists():
            print(f"  FAIL {config} present: skips belong next to the resource, with a reason")
            failed += 1
    for path in sorted(Path(directory).glob("*.tf")):
        resource = None
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r'\s*resource\s+"([^"]+)"\s+"([^"]+)"', line)
            if m:
                resource = f"{m.group(1)}.{m.group(2)}"
            s = SKIP.search(line)
            if not s:
                continue
            skips += 1
            check, reason = s.group(1), (s.group(2) or "").strip()
            where = f"{path.name}:{n} {resource}"
            if not re.fullmatch(r"CKV2?_[A-Z]+_\d+", check):
                print(f"  FAIL {where}: '{check}' is not a checkov check id")
                failed += 1
            elif len(reason) < MIN_REASON:
                print(f"  FAIL {where}: skip of {check} without a real reason")
                failed += 1
            else:
                print(f"  ok   skip {check} on {resource}: {reason}")
    if not failed:
        print(f"  ok   {skips} skips, each inline with its reason")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
