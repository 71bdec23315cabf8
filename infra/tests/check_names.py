"""Check 4: the names support-admin's GCP provider relies on are the names
infra/ declares.

From admin/src/hub/gcp.rs (regex over the Rust constants):
    LABEL, TAG, DEFAULT_PORT, DEFAULT_NETWORK, DEFAULT_SUBNETWORK, FIREWALL_PREFIX,
    HUB_SERVICE_ACCOUNT_ID, RELAY_OBJECT, and the fields of GcpSettings.
From infra/*.tf (parsed with python-hcl2, variables' defaults and locals
substituted), compared:
    * the network resource's name        == DEFAULT_NETWORK's name, and the
      admin_network local (what admin_toml prints) == DEFAULT_NETWORK;
    * the hub firewall rule's name       == FIREWALL_PREFIX + "${var.relay_port}"
      (so it follows the port), its target tags == [TAG], it admits udp on
      var.relay_port only;
    * var.relay_port's default           == DEFAULT_PORT;
    * the hub service account's account_id == HUB_SERVICE_ACCOUNT_ID;
    * local.relay_object                 == RELAY_OBJECT with {version} ->
      ${var.relay_version}, and admin_toml's relay_url is built from it;
    * every key of admin_toml's [gcp] table is a GcpSettings field (the admin
      refuses unknown keys), and service_account is the hub account;
    * LABEL is reserved in var.labels, no infra resource sets it, and no
      infra VM carries TAG (gc and the hub firewall must not reach it).

Usage: check_names.py INFRA_DIR GCP_RS
       check_names.py --self-test INFRA_DIR GCP_RS  (changing either side alone must fail)
"""

import re
import shutil
import sys
import tempfile
from pathlib import Path

from hcl import fields, labelled, locals_of, parse_dir, resolve, resources, unquote

CONSTANTS = {
    "LABEL": "str",
    "TAG": "str",
    "DEFAULT_PORT": "int",
    "DEFAULT_NETWORK": "str",
    "DEFAULT_SUBNETWORK": "str",
    "FIREWALL_PREFIX": "str",
    "HUB_SERVICE_ACCOUNT_ID": "str",
    "RELAY_OBJECT": "str",
}


def rust_constants(source):
    """{NAME: value} of `pub const NAME: &str = "...";` / `: u16 = 51820;`."""
    found = {}
    for name, kind in CONSTANTS.items():
        if kind == "str":
            m = re.search(rf'\bconst\s+{name}\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;', source)
            found[name] = m.group(1) if m else None
        else:
            m = re.search(rf"\bconst\s+{name}\s*:\s*u\d+\s*=\s*([0-9_]+)\s*;", source)
            found[name] = int(m.group(1).replace("_", "")) if m else None
    return found


def settings_fields(source):
    """The field names of `pub struct GcpSettings { ... }`, or None."""
    m = re.search(r"pub struct GcpSettings\s*\{(.*?)\n\}", source, re.S)
    if not m:
        return None
    return set(re.findall(r"^\s*pub\s+(\w+)\s*:", m.group(1), re.M))


class Infra:
    """The parts of infra/ this check compares, with defaults substituted."""

    def __init__(self, directory):
        parsed = parse_dir(directory)
        self.resources = {}
        self.variables = {}
        self.locals = {}
        self.outputs = {}
        for p in parsed.values():
            for rtype, name, body in resources(p):
                self.resources[(rtype, name)] = body
            self.variables.update(dict(labelled(p, "variable")))
            self.outputs.update(dict(labelled(p, "output")))
            self.locals.update(locals_of(p))
        self.env = {f"var.{k}": v["default"] for k, v in self.variables.items() if "default" in v}
        # Locals may refer to variables and to each other: substitute twice.
        for _ in range(2):
            self.env.update({f"local.{k}": resolve(v, self.env) for k, v in self.locals.items()})

    def value(self, rtype, name, key):
        body = self.resources.get((rtype, name))
        if body is None:
            raise KeyError(f"infra declares no {rtype}.{name}")
        return resolve(fields(body).get(key), self.env)

    def raw(self, rtype, name, key):
        return unquote(fields(self.resources[(rtype, name)]).get(key))

    def of_type(self, rtype):
        return [(n, b) for (t, n), b in self.resources.items() if t == rtype]


def heredoc_lines(value):
    """The lines of a heredoc value (python-hcl2 keeps its <<-EOT and EOT), stripped."""
    lines = unquote(value).splitlines()
    if lines and lines[0].startswith("<<"):
        lines = lines[1:-1]
    return [line.strip() for line in lines]


def compare(infra_dir, gcp_rs):
    """A list of (ok, message)."""
    results = []

    def expect(ok, message):
        results.append((bool(ok), message))

    source = Path(gcp_rs).read_text()
    c = rust_constants(source)
    missing = [k for k, v in c.items() if v is None]
    expect(not missing, f"gcp.rs declares {', '.join(CONSTANTS)}" + (f" (missing: {', '.join(missing)})" if missing else ""))
    if missing:
        return results
    infra = Infra(infra_dir)
    try:
        # Network.
        net_name = infra.value("google_compute_network", "support_tunnel", "name")
        expect(
            c["DEFAULT_NETWORK"] == f"global/networks/{net_name}",
            f'DEFAULT_NETWORK "{c["DEFAULT_NETWORK"]}" names infra\'s network "{net_name}"',
        )
        admin_network = infra.env.get("local.admin_network", "")
        expect(
            f'"{c["DEFAULT_NETWORK"]}"' in str(admin_network) or c["DEFAULT_NETWORK"] in str(admin_network),
            f'admin_toml\'s network (local.admin_network) is "{c["DEFAULT_NETWORK"]}" when infra creates the network',
        )
        sub_name = infra.value("google_compute_subnetwork", "support_hubs", "name")
        expect(
            c["DEFAULT_SUBNETWORK"] == sub_name,
            f'DEFAULT_SUBNETWORK "{c["DEFAULT_SUBNETWORK"]}" == infra\'s subnetwork "{sub_name}"',
        )
        # The IAM condition that keeps engineers' instance rights on hubs.
        prefix = infra.env.get("local.hub_name_prefix")
        expect(
            prefix == c["TAG"] + "-",
            f'local.hub_name_prefix {prefix!r} == TAG + "-" (hubs are named {c["TAG"]}-<tunnel id>)',
        )
        # Port.
        port = infra.variables.get("relay_port", {}).get("default")
        expect(port == c["DEFAULT_PORT"], f"var.relay_port default {port} == DEFAULT_PORT {c['DEFAULT_PORT']}")
        # Firewall rule.
        raw_name = infra.raw("google_compute_firewall", "hub_udp", "name")
        expect(
            raw_name == c["FIREWALL_PREFIX"] + "${var.relay_port}",
            f'hub firewall name "{raw_name}" == FIREWALL_PREFIX + port ("{c["FIREWALL_PREFIX"]}" + "${{var.relay_port}}")',
        )
        fw_name = infra.value("google_compute_firewall", "hub_udp", "name")
        expect(
            fw_name == f"{c['FIREWALL_PREFIX']}{c['DEFAULT_PORT']}",
            f'default firewall rule "{fw_name}" is the one the admin GETs ("{c["FIREWALL_PREFIX"]}{c["DEFAULT_PORT"]}")',
        )
        tags = [resolve(t, infra.env) for t in infra.value("google_compute_firewall", "hub_udp", "target_tags")]
        expect(tags == [c["TAG"]], f"hub firewall target_tags {tags} == [TAG \"{c['TAG']}\"]")
        allow = fields(infra.resources[("google_compute_firewall", "hub_udp")])["allow"]
        rules = [(resolve(a["protocol"], infra.env), [resolve(p, infra.env) for p in a.get("ports", [])]) for a in allow]
        expect(
            rules == [("udp", ["${tostring(var.relay_port)}"])],
            f"hub firewall admits only udp on var.relay_port ({rules})",
        )
        # Hub service account.
        sa = infra.value("google_service_account", "hub", "account_id")
        expect(sa == c["HUB_SERVICE_ACCOUNT_ID"], f'hub service account "{sa}" == HUB_SERVICE_ACCOUNT_ID "{c["HUB_SERVICE_ACCOUNT_ID"]}"')
        # Relay object.
        relay_object = unquote(infra.locals.get("relay_object", ""))
        wanted = c["RELAY_OBJECT"].replace("{version}", "${var.relay_version}")
        expect(relay_object == wanted, f'local.relay_object "{relay_object}" == RELAY_OBJECT "{c["RELAY_OBJECT"]}"')
        expect(
            "${local.relay_object}" in unquote(infra.locals.get("relay_url", "")),
            "local.relay_url is built from local.relay_object",
        )
        # admin_toml.
        toml = heredoc_lines(infra.outputs["admin_toml"]["value"])
        after = toml[toml.index("[gcp]") + 1 :] if "[gcp]" in toml else []
        keys = {m.group(1): m.group(2) for line in after if (m := re.match(r"\s*(\w+)\s*=\s*(.*)$", line))}
        expect(keys, "admin_toml has a [gcp] table")
        known = settings_fields(source)
        expect(known is not None, "gcp.rs declares pub struct GcpSettings")
        if known is not None:
            unknown = sorted(set(keys) - known)
            expect(not unknown, f"admin_toml [gcp] keys {sorted(keys)} are GcpSettings fields" + (f" (unknown: {unknown})" if unknown else ""))
        expect(keys.get("relay_url") == '"${local.relay_url}"', "admin_toml relay_url = local.relay_url")
        expect(keys.get("port") == "${var.relay_port}", "admin_toml port = var.relay_port")
        expect(keys.get("network") == '"${local.admin_network}"', "admin_toml network = local.admin_network")
        expect(
            keys.get("service_account") == '"${google_service_account.hub.email}"',
            "admin_toml service_account = the hub service account's email",
        )
        # The label and the tag stay off infra's own resources.
        label_validation = str(infra.variables.get("labels", {}).get("validation", ""))
        expect(f'\\"{c["LABEL"]}\\"' in label_validation or f'"{c["LABEL"]}"' in label_validation,
               f'var.labels refuses the key LABEL "{c["LABEL"]}"')
        offenders = []
        for (rtype, name), body in infra.resources.items():
            labels = fields(body).get("labels")
            if isinstance(labels, dict) and c["LABEL"] in map(unquote, labels):
                offenders.append(f"{rtype}.{name} labels")
            if rtype == "google_compute_instance":
                vm_tags = [resolve(t, infra.env) for t in fields(body).get("tags", [])]
                if c["TAG"] in vm_tags:
                    offenders.append(f"{rtype}.{name} tags")
        expect(not offenders, f'no infra resource carries LABEL "{c["LABEL"]}" or TAG "{c["TAG"]}" on a VM' + (f" ({offenders})" if offenders else ""))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        expect(False, f"infra/ is not shaped as this check expects: {e}")
    return results


def report(results):
    for ok, message in results:
        print(f"  {'ok  ' if ok else 'FAIL'} {message}")
    return 0 if all(ok for ok, _ in results) else 1


# Each edit changes ONE side; the check must then fail.
MUTATIONS = [
    ("gcp.rs LABEL", "rs", 'const LABEL: &str = "support-tunnel";', 'const LABEL: &str = "support-tunnels";'),
    ("gcp.rs TAG", "rs", 'const TAG: &str = "support-hub";', 'const TAG: &str = "support-hubs";'),
    ("gcp.rs DEFAULT_PORT", "rs", "const DEFAULT_PORT: u16 = 51820;", "const DEFAULT_PORT: u16 = 51821;"),
    ("gcp.rs DEFAULT_NETWORK", "rs", '"global/networks/support-tunnel"', '"global/networks/support"'),
    ("gcp.rs FIREWALL_PREFIX", "rs", '"support-hub-udp-"', '"support-relay-udp-"'),
    ("gcp.rs RELAY_OBJECT", "rs", '"relay/{version}/support-relay"', '"relays/{version}/support-relay"'),
    ("gcp.rs HUB_SERVICE_ACCOUNT_ID", "rs", 'HUB_SERVICE_ACCOUNT_ID: &str = "support-hub"', 'HUB_SERVICE_ACCOUNT_ID: &str = "hub"'),
    ("infra network name", "network.tf", 'network_name    = "support-tunnel"', 'network_name    = "support-net"'),
    ("infra firewall name", "network.tf", 'name        = "support-hub-udp-${var.relay_port}"', 'name        = "support-hub-udp-51820"'),
    ("infra relay_port default", "variables.tf", "default     = 51820", "default     = 51821"),
    ("infra hub tag", "network.tf", 'hub_tag         = "support-hub"', 'hub_tag         = "hub"'),
    ("infra hub account", "iam.tf", 'account_id   = "support-hub"', 'account_id   = "support-hubs"'),
    ("infra relay object", "artifacts.tf", 'relay_object = "relay/', 'relay_object = "relays/'),
    ("infra admin_toml key", "outputs.tf", "    service_account = ", "    hub_service_account = "),
]


def self_test(infra_dir, gcp_rs):
    failed = 0
    if not all(ok for ok, _ in compare(infra_dir, gcp_rs)):
        print("  FAIL self-test: needs the real pair to agree first")
        return 1
    for what, target, old, new in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            infra_copy = Path(tmp, "infra")
            shutil.copytree(infra_dir, infra_copy, ignore=shutil.ignore_patterns("tests", ".terraform*"))
            rs_copy = Path(tmp, "gcp.rs")
            shutil.copy(gcp_rs, rs_copy)
            path = rs_copy if target == "rs" else infra_copy / target
            text = path.read_text()
            if old not in text:
                print(f"  FAIL self-test: cannot apply '{what}' ({old!r} not found in {path.name})")
                failed += 1
                continue
            path.write_text(text.replace(old, new, 1))
            if all(ok for ok, _ in compare(infra_copy, rs_copy)):
                print(f"  FAIL self-test: changing {what} alone went unnoticed")
                failed += 1
            else:
                print(f"  ok   self-test: changing {what} alone fails the check")
    return 1 if failed else 0


def main(argv):
    if argv[1] == "--self-test":
        return self_test(argv[2], argv[3])
    return report(compare(argv[1], argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
