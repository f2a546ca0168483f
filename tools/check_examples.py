#!/usr/bin/env python3
"""Every example Portcullis configuration in the repository, checked twice: against the JSON
Schema (schema/portcullis.schema.json) and by `portcullis check` (the filter's own parse and
validation, natively). Also: broken configurations the schema must refuse.

Where the configurations are found:
  examples/config/*.json                      whole files
  envoy/*.yaml, examples/envoy/*.yaml         every wasm filter's `configuration.value` (JSON text)
  examples/istio/*.yaml                       every WasmPlugin / TrafficExtension `pluginConfig`

Secrets named by `*_env` fields get placeholder values (or the file's own `key_values`).

usage: check_examples.py --cli dist/portcullis --schema schema/portcullis.schema.json
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

PLACEHOLDER = "placeholder-secret-value-for-checks-only-0123456789"


def env_names(doc):
    """Every value of a `*_env` field, anywhere in the document."""
    out = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k.endswith("_env") and isinstance(v, str):
                out.add(v)
            out |= env_names(v)
    elif isinstance(doc, list):
        for v in doc:
            out |= env_names(v)
    return out


def envoy_configs(doc, where):
    """(name, config, env) for every Wasm filter configuration in an Envoy bootstrap."""
    found = []

    def walk(node, path, env):
        if isinstance(node, dict):
            vm_env = (((node.get("vm_config") or {}).get("environment_variables") or {}).get("key_values")) or {}
            env = {**env, **vm_env}
            conf = node.get("configuration")
            if isinstance(conf, dict) and "StringValue" in str(conf.get("@type", "")) and "value" in conf:
                found.append((f"{where} {path}", json.loads(conf["value"]), env))
            for k, v in node.items():
                walk(v, f"{path}.{k}", env)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", env)

    walk(doc, "", {})
    return found


def istio_configs(doc, where):
    if not isinstance(doc, dict) or doc.get("kind") not in ("WasmPlugin", "TrafficExtension"):
        return []
    spec = doc.get("spec") or {}
    conf = spec.get("pluginConfig")
    if conf is None:
        conf = ((spec.get("wasm") or {}).get("pluginConfig"))
    if conf is None:
        return []
    env = {}
    vm = spec.get("vmConfig") or (spec.get("wasm") or {}).get("vmConfig") or {}
    for e in vm.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
    name = (doc.get("metadata") or {}).get("name", "?")
    return [(f"{where} {doc['kind']}/{name}", conf, env)]


def collect(root):
    out = []
    for f in sorted(glob.glob(os.path.join(root, "examples/config/*.json"))):
        with open(f) as fh:
            out.append((os.path.relpath(f, root), json.load(fh), {}))
    for f in sorted(glob.glob(os.path.join(root, "envoy/*.yaml")) + glob.glob(os.path.join(root, "examples/envoy/*.yaml"))):
        with open(f) as fh:
            for doc in yaml.safe_load_all(fh):
                out += envoy_configs(doc, os.path.relpath(f, root))
    for f in sorted(glob.glob(os.path.join(root, "examples/istio/*.yaml"))):
        with open(f) as fh:
            for doc in yaml.safe_load_all(fh):
                out += istio_configs(doc, os.path.relpath(f, root))
    return out


def cli_check(cli, config, env):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(config, fh)
        path = fh.name
    try:
        args = [cli, "check", path]
        for name in sorted(env_names(config) | set(env)):
            args += ["--env", f"{name}={env.get(name, PLACEHOLDER)}"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return r.returncode, (r.stdout + r.stderr).strip()
    finally:
        os.unlink(path)


# Broken configurations: the schema refuses each (and so does the filter: cli/tests/cli.rs
# compares the CLI's messages with the filter's for a table of broken configurations).
BROKEN = [
    ("misspelled top-level field", {"modee": "shadow"}),
    ("misspelled nested field", {"providers": {"p": {"issuer": "i", "local_jwks": {"inline_strng": "{}"}}}}),
    ("unknown mode", {"mode": "shadoww"}),
    ("duration without unit", {"rules": [{"name": "r", "on": {"kind": "denied"}, "key": "source",
                                          "threshold": 1, "window": "60", "actions": [{"alert": "s"}]}]}),
    ("wrong type", {"verified_token_cache_size": "big"}),
    ("route without match", {"routes": [{"requires": "none"}]}),
    ("a requires object with an unknown key", {"requires": {"one_of": ["p"]}}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--root", default=".")
    a = ap.parse_args()
    with open(a.schema) as fh:
        schema = json.load(fh)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    configs = collect(a.root)
    failed = 0
    for name, config, env in configs:
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
        if errors:
            failed += 1
            for e in errors[:5]:
                loc = "/".join(str(p) for p in e.path) or "(top)"
                print(f"FAIL schema {name}: {loc}: {e.message}")
            continue
        code, out = cli_check(a.cli, config, env)
        if code != 0:
            failed += 1
            print(f"FAIL check  {name}: exit {code}: {out}")
            continue
        print(f"ok    {name}: schema and portcullis check")
    if len(configs) < 6:
        failed += 1
        print(f"FAIL only {len(configs)} example configurations found: the collector missed some")

    for what, config in BROKEN:
        if validator.is_valid(config):
            failed += 1
            print(f"FAIL schema accepted a broken configuration ({what}): {json.dumps(config)}")
            continue
        code, out = cli_check(a.cli, config, {})
        if code != 1 or not out.startswith("invalid configuration: "):
            failed += 1
            print(f"FAIL check  accepted a broken configuration ({what}): exit {code}: {out}")
            continue
        print(f"ok    refused ({what}): {out}")

    total = len(configs) + len(BROKEN)
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
