"""Check 2: the values infra/ gives enum-typed arguments are values Google's
APIs accept, read from Google's discovery documents (the ones
google-api-python-client ships, pinned in requirements.txt), and the
startup script reads the shared keys with the Secret Manager call those
documents describe.

The provider schema (check_schema.py) says which arguments exist; it does
not say which strings an API takes ("ENCRYPTED_ONLY", "VPC_PEERING"). Each
row of VALUES names an argument, by its path in a resource, and the API
field it becomes; every string literal in its value (both arms of a
conditional too) must be in that field's enum, and each row must find at
least one literal, so a renamed argument fails here instead of passing
unchecked.

Usage: check_api_values.py INFRA_DIR
       check_api_values.py --self-test INFRA_DIR  (a wrong value must fail)
"""

import contextlib
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import googleapiclient

from hcl import fields, parse_dir, resources

DOCS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"

# (resource type, argument path, discovery document, schema, field)
VALUES = [
    ("google_sql_database_instance", "database_version", "sqladmin.v1", "DatabaseInstance", "databaseVersion"),
    ("google_sql_database_instance", "settings.edition", "sqladmin.v1", "Settings", "edition"),
    ("google_sql_database_instance", "settings.availability_type", "sqladmin.v1", "Settings", "availabilityType"),
    ("google_sql_database_instance", "settings.disk_type", "sqladmin.v1", "Settings", "dataDiskType"),
    ("google_sql_database_instance", "settings.ip_configuration.ssl_mode", "sqladmin.v1", "IpConfiguration", "sslMode"),
    (
        "google_sql_database_instance",
        "settings.backup_configuration.backup_retention_settings.retention_unit",
        "sqladmin.v1",
        "BackupRetentionSettings",
        "retentionUnit",
    ),
    ("google_sql_database_instance", "settings.maintenance_window.update_track", "sqladmin.v1", "MaintenanceWindow", "updateTrack"),
    ("google_sql_user", "type", "sqladmin.v1", "User", "type"),
    ("google_compute_global_address", "purpose", "compute.v1", "Address", "purpose"),
    ("google_compute_global_address", "address_type", "compute.v1", "Address", "addressType"),
    ("google_compute_address", "address_type", "compute.v1", "Address", "addressType"),
    ("google_compute_address", "network_tier", "compute.v1", "Address", "networkTier"),
    ("google_compute_firewall", "direction", "compute.v1", "Firewall", "direction"),
    ("google_compute_network", "routing_mode", "compute.v1", "NetworkRoutingConfig", "routingMode"),
    ("google_compute_subnetwork", "log_config.aggregation_interval", "compute.v1", "SubnetworkLogConfig", "aggregationInterval"),
    ("google_compute_subnetwork", "log_config.metadata", "compute.v1", "SubnetworkLogConfig", "metadata"),
    ("google_compute_instance", "scheduling.on_host_maintenance", "compute.v1", "Scheduling", "onHostMaintenance"),
    ("google_compute_instance", "scheduling.provisioning_model", "compute.v1", "Scheduling", "provisioningModel"),
    ("google_compute_instance", "network_interface.access_config.network_tier", "compute.v1", "AccessConfig", "networkTier"),
    ("google_compute_instance", "attached_disk.mode", "compute.v1", "AttachedDisk", "mode"),
]

LITERAL = re.compile(r'"((?:[^"\\$]|\\.)*)"')


def load(doc):
    return json.loads((DOCS / f"{doc}.json").read_text())


def values_at(body, path):
    """Every value at `path` (a.b.c) under a resource body, through nested
    and dynamic blocks."""
    head, _, rest = path.partition(".")
    found = []
    for key, value in fields(body).items():
        if key == "dynamic":
            for dyn in value:
                for label, dbody in fields(dyn).items():
                    if label.strip('"') == head:
                        for content in dbody.get("content", []):
                            found += values_at(content, rest) if rest else []
            continue
        if key != head:
            continue
        if not rest:
            found.append(value)
        elif isinstance(value, list):
            for block in value:
                if isinstance(block, dict):
                    found += values_at(block, rest)
    return found


def literals(value):
    """The string literals of an argument's value ('"X"', or inside ${...})."""
    if not isinstance(value, str):
        return []
    if value.startswith('"') and "${" not in value:
        return [value[1:-1]]
    return LITERAL.findall(value)


def check_values(directory, quiet=False):
    docs = {}
    failed = 0
    parsed = parse_dir(directory)
    for rtype, path, doc, schema, field in VALUES:
        d = docs.setdefault(doc, load(doc))
        prop = d["schemas"][schema]["properties"][field]
        enum = prop.get("enum")
        if not enum:
            print(f"  FAIL {doc} {schema}.{field} is not an enum; fix the table")
            failed += 1
            continue
        seen = []
        for file, p in parsed.items():
            for t, name, body in resources(p):
                if t != rtype:
                    continue
                for value in values_at(body, path):
                    for lit in literals(value):
                        seen.append(lit)
                        if lit not in enum:
                            print(f"  FAIL {file.name}: {t}.{name} {path} = {lit!r}: {doc} {schema}.{field} takes {enum}")
                            failed += 1
        if not seen:
            print(f"  FAIL no {rtype} in {directory} sets {path} (renamed? update the table)")
            failed += 1
        elif not quiet:
            print(f"  ok   {rtype} {path} {sorted(set(seen))} are {doc} {schema}.{field} values")
    return failed


def check_secret_call(directory, quiet=False):
    """The startup script's Secret Manager URL is the `access` method's,
    and the name it fills in matches that method's pattern."""
    doc = load("secretmanager.v1")
    method = doc["resources"]["projects"]["resources"]["secrets"]["resources"]["versions"]["methods"]["access"]
    failed = 0
    script = Path(directory, "control-plane-startup.sh").read_text()
    m = re.search(r'fetch "(https://[^"]*:access)"', script)
    expected = doc["rootUrl"] + method["path"].replace("{+name}", "$KEYS_SECRET/versions/latest")
    if not m or m.group(1) != expected or method["httpMethod"] != "GET":
        print(f"  FAIL the startup script reads the keys from {m and m.group(1)!r}, not {expected!r} (GET)")
        failed += 1
    pattern = method["parameters"]["name"]["pattern"]
    tf = "\n".join(p.read_text() for p in Path(directory).glob("*.tf"))
    secret = re.search(r'keys_secret\s*=.*?"(projects/[^"]*)"', tf)
    sample = secret and re.sub(r"\$\{[^}]*\}", "x", secret.group(1)) + "/versions/latest"
    if not sample or not re.match(pattern, sample):
        print(f"  FAIL keys_secret {secret and secret.group(1)!r} + /versions/latest does not match {pattern}")
        failed += 1
    payload = doc["schemas"]["AccessSecretVersionResponse"]["properties"]["payload"]["$ref"]
    data = doc["schemas"][payload]["properties"].get("data", {})
    if data.get("format") != "byte" or '"data"' not in script:
        print("  FAIL the answer's payload.data (base64) is not what the startup script decodes")
        failed += 1
    if not failed and not quiet:
        print(f"  ok   keys read with secretmanager.projects.secrets.versions.access (GET {method['path']}), name matching {pattern}, payload.data base64")
    return failed


def self_test(directory):
    # The checks' own FAIL lines are expected here; only the verdict shows.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()) as said:
        result = mutants(directory, tmp)
    if result:
        print(said.getvalue().splitlines()[-1])
        return 1
    print("  ok   self-test: a wrong enum value, a wrong conditional arm and a wrong Secret Manager URL each fail")
    return 0


def mutants(directory, tmp):
    """0 when every mutant fails the check it targets."""
    copy = Path(tmp, "infra")
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("tests", ".terraform*"))
    db = copy / "database.tf"
    text = db.read_text()
    bad = text.replace('"TRUSTED_CLIENT_CERTIFICATE_REQUIRED"', '"REQUIRE_CLIENT_CERTIFICATE"', 1)
    assert bad != text, "self-test: ssl_mode is no longer in database.tf"
    db.write_text(bad)
    if check_values(copy, quiet=True) == 0:
        print("  FAIL self-test: a wrong ssl_mode passed")
        return 1
    db.write_text(text.replace('"ZONAL"', '"ZONE"', 1))
    if check_values(copy, quiet=True) == 0:
        print("  FAIL self-test: a wrong arm of a conditional passed")
        return 1
    script = copy / "control-plane-startup.sh"
    s = script.read_text()
    script.write_text(s.replace("/versions/latest:access", "/versions/latest:get", 1))
    if check_secret_call(copy, quiet=True) == 0:
        print("  FAIL self-test: a wrong Secret Manager URL passed")
        return 1
    return 0


def main(argv):
    if argv[:1] == ["--self-test"]:
        return self_test(argv[1])
    failed = check_values(argv[0]) + check_secret_call(argv[0])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
