"""Check: every templatefile() in infra/ passes exactly the variables its
template uses, and a rendered shell template is valid bash (`bash -n`).

OpenTofu fails at plan time on a template that names a variable it was not
given; a shell script's own ${VAR} must be written $${VAR} to survive
rendering. This catches both without OpenTofu.

Usage: check_templates.py INFRA_DIR
"""

import re
import subprocess
import sys
from pathlib import Path

from check_schema import expressions
from hcl import parse_dir

CALL = re.compile(r'templatefile\(\s*"\$\{path\.module\}/([^"]+)"\s*,\s*\{(.*)\}\s*\)', re.S)
PLACEHOLDER = re.compile(r"(?<!\$)\$\{([^}]*)\}")


def passed_keys(args):
    """Top-level keys of the variables object literal."""
    keys, depth = [], 0
    for m in re.finditer(r"[{}()\[\]]|(\b[a-z_]\w*)\s*=(?!=)", args):
        tok = m.group(0)
        if tok in "{([":
            depth += 1
        elif tok in "})]":
            depth -= 1
        elif depth == 0:
            keys.append(m.group(1))
    return keys


def main(directory):
    failed = 0
    calls = 0
    for path, parsed in parse_dir(directory).items():
        for expr in expressions(parsed):
            for name, args in CALL.findall(expr):
                calls += 1
                template = Path(directory, name)
                if not template.exists():
                    print(f"  FAIL {path.name}: templatefile names a missing {name}")
                    failed += 1
                    continue
                text = template.read_text()
                keys = set(passed_keys(args))
                used = set(PLACEHOLDER.findall(text))
                if "%{" in text.replace("%%{", ""):
                    print(f"  FAIL {name}: template directives (%{{...}}) are not expected here")
                    failed += 1
                bad = sorted(u for u in used if u not in keys)
                unused = sorted(keys - used)
                if bad:
                    print(f"  FAIL {name}: ${{...}} not passed by {path.name}: {bad} (a shell variable must be written $${{VAR}})")
                    failed += 1
                if unused:
                    print(f"  FAIL {name}: passed but never used: {unused}")
                    failed += 1
                if not bad and not unused:
                    print(f"  ok   {name}: uses exactly the {len(keys)} variables {path.name} passes")
                if name.endswith(".sh") and not bad:
                    rendered = PLACEHOLDER.sub(lambda m: f"sample-{m.group(1)}", text).replace("$${", "${")
                    r = subprocess.run(["bash", "-n"], input=rendered, text=True, capture_output=True)
                    if r.returncode:
                        print(f"  FAIL {name}: rendered script is not valid bash: {r.stderr.strip()}")
                        failed += 1
                    else:
                        print(f"  ok   {name}: rendered script passes bash -n")
    if calls == 0:
        print("  FAIL no templatefile() call found (the control plane's startup script?)")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
