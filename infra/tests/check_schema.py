"""Check 2: every resource and data source in infra/ uses only what the
google provider's schema has.

The schema comes from the jsii manifest (.jsii) of @cdktf/provider-google,
which is generated from the provider's own schema (the pinned package says
which provider version: 6.50.0 for 16.12.1). In it each resource is a class
(base cdktf.TerraformResource, or cdktf.TerraformDataSource) whose docs link
names the Terraform type (google_compute_instance); its constructor's
`config` parameter is a struct (ComputeInstanceConfig) whose properties are
the arguments, in camelCase, each documented with a registry link ending in
`#snake_case_name`. A nested block is a property whose type is another struct
(ComputeInstanceBootDisk), or a list of them. A property that is not
`optional` is required.

Checked, for every resource and data block:
  * the type exists;
  * every argument and nested block (also inside `dynamic` blocks) exists,
    and blocks are written as blocks, arguments as arguments;
  * every required argument and block is present;
and in every expression: references to resources and data sources name a
declared one and an attribute its type has; var.X and local.X are declared.

Usage: check_schema.py INFRA_DIR
       check_schema.py --self-test   (a misspelt attribute must fail)
"""

import difflib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from hcl import fields, is_block, labelled, locals_of, parse_dir, resources, unquote

NPM = Path(os.environ.get("SUPPORT_TUNNEL_NPM", "/var/cache/support-tunnel/npm"))
JSII = NPM / "node_modules/@cdktf/provider-google/.jsii"
CACHE_DIR = Path(os.environ.get("SUPPORT_TUNNEL_CACHE", "/var/cache/support-tunnel"))

# Terraform's own arguments, valid on every resource and data block.
META_ARGS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
# Names that are not references to resources.
NOT_RESOURCES = {"var", "local", "data", "each", "count", "path", "module", "self", "terraform"}

DOC_LINK = re.compile(
    r"registry\.terraform\.io/providers/hashicorp/google/([0-9.]+)/docs/(resources|data-sources)/(\w+) (google_\w+)"
)
ANCHOR = re.compile(r"#(\w+) ")


def snake(camel):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


# --- the schema, from the .jsii manifest -----------------------------------------


def struct_of(type_ref, types):
    """The struct fqn a property's type refers to (directly, as a list or
    map element, or inside a union), or None for a plain value."""
    if "fqn" in type_ref:
        t = types.get(type_ref["fqn"])
        return type_ref["fqn"] if t and t.get("datatype") else None
    if "collection" in type_ref:
        return struct_of(type_ref["collection"]["elementtype"], types)
    if "union" in type_ref:
        for member in type_ref["union"]["types"]:
            found = struct_of(member, types)
            if found:
                return found
    return None


def property_name(prop):
    """The Terraform name: the registry anchor, else camelCase -> snake_case."""
    docs = prop.get("docs", {})
    m = ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
    return m.group(1) if m else snake(prop["name"])


def extract_schema(jsii):
    types = jsii["types"]
    schema = {"provider_version": None, "resource": {}, "data": {}, "structs": {}}
    pending = []
    for t in types.values():
        if t.get("base") not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            continue
        m = DOC_LINK.search(t.get("docs", {}).get("summary", ""))
        if not m:
            continue
        schema["provider_version"] = m.group(1)
        kind = "resource" if m.group(2) == "resources" else "data"
        config = next(p for p in t["initializer"]["parameters"] if p["name"] == "config")
        attributes = sorted(
            {snake(p["name"]) for p in t.get("properties", []) if not p.get("static")}
        )
        schema[kind][m.group(4)] = {"struct": config["type"]["fqn"], "attributes": attributes}
        pending.append(config["type"]["fqn"])
    while pending:
        fqn = pending.pop()
        if fqn in schema["structs"]:
            continue
        props = {}
        for p in types[fqn].get("properties", []):
            block = struct_of(p["type"], types)
            props[property_name(p)] = {"block": block, "required": not p.get("optional", False)}
            if block:
                pending.append(block)
        schema["structs"][fqn] = props
    return schema


def load_schema():
    """The compact schema, cached next to the npm tree (the .jsii is 100 MB)."""
    if not JSII.exists():
        sys.exit(f"  FAIL {JSII} is missing: run scripts/setup")
    st = JSII.stat()
    cache = CACHE_DIR / f"google-schema-{st.st_size}-{int(st.st_mtime)}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    schema = extract_schema(json.loads(JSII.read_text()))
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(schema))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache directory only costs time
    return schema


# --- checking the configuration ----------------------------------------------------


class Checker:
    def __init__(self, schema):
        self.schema = schema
        self.errors = []

    def error(self, where, msg, name=None, choices=()):
        hint = ""
        if name is not None:
            close = difflib.get_close_matches(name, list(choices), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        self.errors.append(f"{where}: {msg}{hint}")

    def body(self, body, struct_fqn, where, top=False):
        struct = self.schema["structs"][struct_fqn]
        present = set()
        for key, value in fields(body).items():
            if top and key in META_ARGS:
                continue
            if key == "dynamic":
                for entry in value:
                    for label, dyn in fields(entry).items():
                        label = unquote(label)
                        spec = struct.get(label)
                        if not spec or not spec["block"]:
                            self.error(where, f"dynamic \"{label}\": no such block", label, struct)
                            continue
                        present.add(label)
                        for content in fields(dyn).get("content", []):
                            self.body(content, spec["block"], f"{where}.{label}")
                continue
            spec = struct.get(key)
            if spec is None:
                self.error(where, f"unknown argument or block \"{key}\"", key, struct)
                continue
            present.add(key)
            if spec["block"]:
                if not is_block(value):
                    self.error(where, f"\"{key}\" is a block: write `{key} {{ ... }}`")
                    continue
                for nested in value:
                    self.body(nested, spec["block"], f"{where}.{key}")
            elif is_block(value):
                self.error(where, f"\"{key}\" is an argument, not a block: write `{key} = ...`")
        for name, spec in struct.items():
            if spec["required"] and name not in present:
                self.error(where, f"required \"{name}\" is missing")

    def block(self, kind, rtype, name, body, path):
        where = f"{path.name}: {'data.' if kind == 'data' else ''}{rtype}.{name}"
        known = self.schema[kind]
        if rtype not in known:
            self.error(where, f"unknown {kind} type \"{rtype}\"", rtype, known)
            return
        self.body(body, known[rtype]["struct"], where, top=True)


def expressions(value):
    """Every ${...} expression in a parsed value (nested braces allowed)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from expressions(v)
    elif isinstance(value, list):
        for v in value:
            yield from expressions(v)
    elif isinstance(value, str):
        i = 0
        while (start := value.find("${", i)) >= 0:
            depth, j = 0, start + 1
            while j < len(value):
                depth += {"{": 1, "}": -1}.get(value[j], 0)
                if depth == 0:
                    break
                j += 1
            yield value[start + 2 : j]
            i = j + 1


REF = re.compile(r"(?<![\w.])(data\.)?([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)((?:\[[^\]]*\])?)(?:\.(\w+))?")


def check_references(checker, parsed_files):
    declared = {"resource": set(), "data": set()}
    variables, local_names = set(), set()
    for parsed in parsed_files.values():
        for kind in ("resource", "data"):
            declared[kind] |= {(t, n) for t, n, _ in resources(parsed, kind)}
        variables |= {name for name, _ in labelled(parsed, "variable")}
        local_names |= set(locals_of(parsed))
    for path, parsed in parsed_files.items():
        for expr in expressions(parsed):
            # Drop string literals inside the expression ("a.b" is not a reference).
            expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
            for data, head, name, _index, attr in REF.findall(expr):
                where = f"{path.name}: ${{{expr.strip()[:60]}}}"
                if data:
                    kind, rtype = "data", head
                elif head == "var":
                    if name not in variables:
                        checker.error(where, f"undeclared variable var.{name}", name, variables)
                    continue
                elif head == "local":
                    if name not in local_names:
                        checker.error(where, f"undeclared local local.{name}", name, local_names)
                    continue
                elif head.startswith("google_"):
                    kind, rtype = "resource", head
                else:
                    continue  # each.value, count.index, path.module, functions...
                if (rtype, name) not in declared[kind]:
                    checker.error(where, f"reference to undeclared {kind} {rtype}.{name}")
                    continue
                attrs = checker.schema[kind].get(rtype, {}).get("attributes", [])
                if attr and attrs and attr not in attrs:
                    checker.error(where, f"{rtype} has no attribute \"{attr}\"", attr, attrs)


def check_pin(checker, parsed_files):
    """versions.tf pins `~> X.Y` of hashicorp/google; the schema must be that major, >= X.Y."""
    for path, parsed in parsed_files.items():
        for block in parsed.get("terraform", []):
            for providers in block.get("required_providers", []):
                google = providers.get("google")
                if not google:
                    continue
                source = unquote(google.get("source", ""))
                pin = unquote(google.get("version", ""))
                m = re.fullmatch(r"~>\s*(\d+)\.(\d+)", pin)
                have = tuple(int(x) for x in checker.schema["provider_version"].split(".")[:2])
                if source != "hashicorp/google" or not m:
                    checker.error(path.name, f"google provider must be hashicorp/google pinned as ~> X.Y, not {source} {pin}")
                elif not (have[0] == int(m.group(1)) and have >= (int(m.group(1)), int(m.group(2)))):
                    checker.error(
                        path.name,
                        f"google pinned {pin} but the checked schema is {checker.schema['provider_version']}: "
                        "bump @cdktf/provider-google in scripts/setup with it",
                    )


def check(directory, schema):
    checker = Checker(schema)
    try:
        parsed_files = parse_dir(directory)
    except ValueError as e:
        return [str(e)], 0
    check_pin(checker, parsed_files)
    count = 0
    for path, parsed in parsed_files.items():
        for kind in ("resource", "data"):
            for rtype, name, body in resources(parsed, kind):
                checker.block(kind, rtype, name, body, path)
                count += 1
    check_references(checker, parsed_files)
    return checker.errors, count


BAD_SNIPPETS = {
    "misspelt argument": (
        'resource "google_compute_network" "n" {\n'
        '  name                   = "x"\n'
        "  auto_create_subnetwork = false\n"
        "}\n",
        "auto_create_subnetwork",
    ),
    "misspelt nested block": (
        'resource "google_compute_instance" "i" {\n'
        '  name         = "x"\n'
        '  machine_type = "e2-small"\n'
        '  boot_disk {\n    initialize_params {\n      image = "debian-cloud/debian-12"\n    }\n  }\n'
        '  network_interface {\n    network = "default"\n  }\n'
        "  shielded_vm_config {\n    enable_vtpm = true\n  }\n"
        "}\n",
        "shielded_vm_config",
    ),
    "unknown resource type": ('resource "google_compute_firewal" "f" {\n  name = "x"\n}\n', "google_compute_firewal"),
    "missing required argument": ('resource "google_storage_bucket" "b" {\n  name = "x"\n}\n', '"location"'),
    "misspelt attribute reference": (
        'resource "google_service_account" "s" {\n  account_id = "support-hub"\n}\n'
        'output "o" {\n  value = google_service_account.s.emial\n}\n',
        '"emial"',
    ),
}

GOOD_SNIPPET = (
    'resource "google_compute_network" "n" {\n'
    '  name                    = "x"\n'
    "  auto_create_subnetworks = false\n"
    "}\n"
)


def self_test(schema):
    """The checker must reject each bad snippet, naming the culprit, and accept a good one."""
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for what, (snippet, culprit) in BAD_SNIPPETS.items():
            Path(tmp, "bad.tf").write_text(snippet)
            errors, _ = check(tmp, schema)
            if errors and any(culprit in e for e in errors):
                print(f"  ok   self-test: {what} is refused ({errors[0]})")
            else:
                print(f"  FAIL self-test: {what} was not refused: {errors}")
                failed += 1
        Path(tmp, "bad.tf").write_text(GOOD_SNIPPET)
        errors, _ = check(tmp, schema)
        if errors:
            print(f"  FAIL self-test: a correct snippet was refused: {errors}")
            failed += 1
        else:
            print("  ok   self-test: a correct snippet passes")
    return failed


def main(argv):
    schema = load_schema()
    if argv[1:] == ["--self-test"]:
        return 1 if self_test(schema) else 0
    errors, count = check(argv[1], schema)
    for e in errors:
        print(f"  FAIL {e}")
    if not errors:
        print(
            f"  ok   {count} resources and data sources match google provider "
            f"{schema['provider_version']}, the version infra/versions.tf pins "
            "(types, arguments, blocks, required, references)"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
