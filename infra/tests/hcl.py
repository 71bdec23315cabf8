"""Shared helpers: parse infra/*.tf with python-hcl2 and walk the result.

python-hcl2 (8.x) keeps string quotes ('"abc"'), wraps expressions as
'${...}', marks blocks with "__is_block__": True and puts comments under
"__comments__" / "__inline_comments__". Block labels keep their quotes too.
"""

import re
from pathlib import Path

import hcl2

META = "__"  # keys python-hcl2 adds (blocks, comments)


def parse_file(path):
    """The parsed file, or raises with the file name in the message."""
    text = Path(path).read_text()
    try:
        return hcl2.loads(text)
    except Exception as e:  # the parser's own exceptions vary by rule
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from None


def parse_dir(directory):
    """{path: parsed} for every .tf file directly in `directory`."""
    return {p: parse_file(p) for p in sorted(Path(directory).glob("*.tf"))}


def unquote(s):
    """'"abc"' -> 'abc'; anything else unchanged."""
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def fields(body):
    """A block body's own keys (attributes and nested blocks), without python-hcl2's."""
    return {k: v for k, v in body.items() if not k.startswith(META)}


def is_block(value):
    """True for a nested block: a list of dicts marked as blocks."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def labelled(parsed, kind):
    """Yield (label, body) of top-level blocks with one label (variable, output)."""
    for entry in parsed.get(kind, []):
        for label, body in fields(entry).items():
            yield unquote(label), body


def resources(parsed, kind="resource"):
    """Yield (type, name, body) of `resource` (or `data`) blocks."""
    for entry in parsed.get(kind, []):
        for rtype, named in fields(entry).items():
            for name, body in fields(named).items():
                yield unquote(rtype), unquote(name), body


def locals_of(parsed):
    """{name: raw value} of every locals block."""
    out = {}
    for entry in parsed.get("locals", []):
        out.update(fields(entry))
    return out


def comments(body):
    """Every comment text python-hcl2 attached to a block body (recursively)."""
    out = []
    for key, value in body.items():
        if key in ("__comments__", "__inline_comments__"):
            out += [c.get("value", "") for c in value]
        elif isinstance(value, dict):
            out += comments(value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, dict):
                    out += comments(v)
    return out


INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


def resolve(value, env):
    """A string value with ${var.x} / ${local.x} replaced from env
    ({"var.x": ..., "local.x": ...}); unknown references stay as they are."""
    value = unquote(value)
    if not isinstance(value, str):
        return value

    def sub(m):
        key = m.group(1).strip()
        return str(env[key]) if key in env else m.group(0)

    # A bare "${var.x}" resolves to the value itself (lists stay lists).
    whole = re.fullmatch(r"\$\{\s*([\w.]+)\s*\}", value)
    if whole and whole.group(1) in env:
        return env[whole.group(1)]
    return INTERPOLATION.sub(sub, value)
