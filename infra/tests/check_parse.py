"""Check 1: every .tf file in the directory parses with python-hcl2, and
terraform.tfvars.example sets only declared variables and every required one.

Usage: check_parse.py INFRA_DIR
"""

import sys
from pathlib import Path

from hcl import labelled, parse_file


def main(directory):
    files = sorted(Path(directory).glob("*.tf"))
    if not files:
        print(f"  FAIL no .tf files in {directory}")
        return 1
    failed = 0
    variables = {}
    for path in files:
        try:
            variables.update(dict(labelled(parse_file(path), "variable")))
            print(f"  ok   {path.name}")
        except ValueError as e:
            print(f"  FAIL {e}")
            failed += 1
    example = Path(directory, "terraform.tfvars.example")
    if example.exists() and not failed:
        try:
            values = parse_file(example)
        except ValueError as e:
            print(f"  FAIL {e}")
            return 1
        unknown = sorted(k for k in values if not k.startswith("__") and k not in variables)
        required = sorted(k for k, v in variables.items() if "default" not in v)
        missing = [k for k in required if k not in values]
        if unknown or missing:
            print(f"  FAIL {example.name}: undeclared {unknown}, required but unset {missing}")
            failed += 1
        else:
            print(f"  ok   {example.name} sets declared variables only, all {len(required)} required ones")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
