#!/usr/bin/env python3
"""Validate the WasmPlugin (or TrafficExtension) documents of a (multi-document) YAML file.

The kind is the one the --schema file describes: wasmplugin-crd-schema.json checks the
`kind: WasmPlugin` documents, trafficextension-crd-schema.json the `kind: TrafficExtension`
ones (whose Wasm fields - url, vmConfig, pluginConfig, pluginName - sit under `spec.wasm`
instead of directly under `spec`). Documents of the other kind are skipped.

1. Every document of that kind is checked against the CRD's openAPIV3Schema with
   `jsonschema` (the schema of istio/api; see README.md for where to get it).
2. The CRD's CEL rules (`x-kubernetes-validations`), which `jsonschema` cannot evaluate, are
   re-implemented here by hand:
     - at most one of selector / targetRef / targetRefs;
     - TrafficExtension: exactly one of wasm / lua;
     - selector.matchLabels: no '*' in keys or values, no empty keys;
     - targetRef(s).namespace must be empty (no cross-namespace references);
     - url scheme is one of "", http, https, oci, file;
     - vmConfig.env[]: `value` only when valueFrom is not HOST.
   Fields the CRD does not define are errors (`failstrategy`, `pluginConfg`): the API server
   would prune them silently.
3. With --envoy and --wasm, each pluginConfig is also loaded by the real filter: a throwaway
   Envoy config carries it (with a stub cluster for every cluster it names, and a dummy value
   for every vmConfig.env variable) through `envoy --mode validate`, which runs the plugin's
   configuration code and fails if Portcullis refuses the configuration.

Other kinds (ServiceEntry, DestinationRule) are listed and skipped: no schema for them here.

Usage (from the repository root):
  python3 -m venv /tmp/jsv && /tmp/jsv/bin/pip install jsonschema pyyaml
  /tmp/jsv/bin/python examples/istio/validate.py examples/istio/wasmplugin.yaml \
      --schema ../shared/istio/wasmplugin-crd-schema.json \
      [--envoy .venv/bin/envoy --wasm dist/portcullis.wasm]
Exit status 0 when every document of the schema's kind passes (and there is at least one),
1 otherwise.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import urlsplit

import jsonschema
import yaml


def schema_kind(schema):
    """The kind a --schema file describes: TrafficExtension's spec has `wasm` (and `lua`),
    WasmPlugin's has `url` directly under spec. None if neither."""
    props = (((schema.get("properties") or {}).get("spec") or {}).get("properties")) or {}
    if "wasm" in props:
        return "TrafficExtension"
    if "url" in props:
        return "WasmPlugin"
    if "rules" in props and "action" in props:
        return "AuthorizationPolicy"
    return None


def wasm_fields(kind, spec):
    """Where the Wasm module's fields (url, vmConfig, pluginConfig, pluginName) are, and their
    path: `spec` for a WasmPlugin, `spec.wasm` for a TrafficExtension (None there when it has
    no `wasm`, e.g. a Lua extension)."""
    if kind == "TrafficExtension":
        wasm = spec.get("wasm")
        return (wasm if isinstance(wasm, dict) else None), "spec.wasm"
    if kind == "AuthorizationPolicy":
        return None, "spec"
    return spec, "spec"


def cel_checks(spec, kind="WasmPlugin"):
    """The CRD's CEL rules, by hand. Returns a list of error strings."""
    errors = []
    if kind == "TrafficExtension" and ("wasm" in spec) == ("lua" in spec):
        errors.append("spec: exactly one of wasm or lua must be set")
    present = [k for k in ("selector", "targetRef", "targetRefs") if k in spec]
    if len(present) > 1:
        errors.append(f"spec: only one of targetRefs or selector can be set (found {', '.join(present)})")
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    for k, v in labels.items():
        if "*" in k:
            errors.append(f"spec.selector.matchLabels: wildcard not allowed in label key match ({k!r})")
        if len(k) == 0:
            errors.append("spec.selector.matchLabels: key must not be empty")
        if isinstance(v, str) and "*" in v:
            errors.append(f"spec.selector.matchLabels.{k}: wildcard not allowed in label value match")
    refs = ([spec["targetRef"]] if "targetRef" in spec else []) + list(spec.get("targetRefs") or [])
    for i, r in enumerate(refs):
        if isinstance(r, dict) and r.get("namespace"):
            errors.append(f"spec.targetRef(s)[{i}].namespace: cross namespace referencing is not currently supported")
    body, where = wasm_fields(kind, spec)
    body = body or {}
    url = body.get("url")
    if isinstance(url, str) and url:
        # CEL: isURL(self) ? scheme in [...] : isURL("http://" + self) && ...
        scheme = urlsplit(url).scheme if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) else ""
        if scheme not in ("", "http", "https", "oci", "file"):
            errors.append(f"{where}.url: url must have schema one of [http, https, file, oci] (got {scheme!r})")
    for i, e in enumerate((body.get("vmConfig") or {}).get("env") or []):
        if isinstance(e, dict) and e.get("valueFrom", "") == "HOST" and "value" in e:
            errors.append(f"{where}.vmConfig.env[{i}]: value may only be set when valueFrom is INLINE")
    return errors


def unknown_fields(value, schema, path="spec"):
    """Fields the CRD does not define. The API server prunes them silently (a structural schema
    drops what it does not know), so `failstrategy: FAIL_OPEN` or `pluginConfg:` would be
    accepted and then ignored; here they are errors. Objects that preserve unknown fields
    (pluginConfig) or declare additionalProperties (maps such as matchLabels) are left alone."""
    errors = []
    if not isinstance(schema, dict):
        return errors
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return errors
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if props is not None and k in props:
                errors += unknown_fields(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                errors += unknown_fields(v, extra, f"{path}.{k}")
            elif props is not None and extra is None:
                close = [p for p in props if p.lower() == k.lower()]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"{path}.{k}: unknown field{hint}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += unknown_fields(v, schema["items"], f"{path}[{i}]")
    return errors


def clusters_named(obj):
    """Every `cluster` string in the plugin configuration (callout targets)."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "cluster" and isinstance(v, str):
                found.append(v)
            else:
                found.extend(clusters_named(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(clusters_named(v))
    return found


def envoy_check(spec, envoy, wasm):
    """Loads pluginConfig into Portcullis through `envoy --mode validate`. `spec` is what
    wasm_fields() returns: a WasmPlugin's spec, or a TrafficExtension's spec.wasm."""
    plugin_config = json.dumps(spec.get("pluginConfig") or {})
    env = {e["name"]: "dummy-value-for-validation-only-0123456789abcdef"
           for e in (spec.get("vmConfig") or {}).get("env") or [] if isinstance(e, dict) and "name" in e}
    clusters = [{
        "name": c, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": c, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]},
    } for c in sorted(set(clusters_named(spec.get("pluginConfig") or {}))) if c]
    vm_config = {"vm_id": "portcullis", "runtime": "envoy.wasm.runtime.v8",
                 "code": {"local": {"filename": os.path.abspath(wasm)}}}
    if env:
        vm_config["environment_variables"] = {"key_values": env}
    config = {
        "static_resources": {
            "listeners": [{
                "name": "check",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "check",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.wasm", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": {"name": "portcullis", "root_id": spec.get("pluginName", "portcullis"),
                                           "vm_config": vm_config,
                                           "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                             "value": plugin_config}}}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": clusters,
        }
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
        path = f.name
    try:
        r = subprocess.run([envoy, "--mode", "validate", "--disable-hot-restart", "-l", "error", "-c", path],
                           capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    if r.returncode == 0:
        return []
    out = (r.stderr + r.stdout).splitlines()
    lines = [l[l.index("invalid configuration"):] for l in out if "invalid configuration" in l]
    lines = lines or [l for l in out if "critical" in l] or out[-3:]
    return ["pluginConfig refused (envoy --mode validate): " + " | ".join(lines)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", help="YAML file, one or more documents")
    ap.add_argument("--schema", required=True,
                    help="WasmPlugin or TrafficExtension CRD openAPIV3Schema as JSON (picks the kind checked)")
    ap.add_argument("--envoy", help="Envoy binary: also load each pluginConfig into Portcullis")
    ap.add_argument("--wasm", help="the Portcullis module for --envoy (dist/portcullis.wasm)")
    args = ap.parse_args()
    if bool(args.envoy) != bool(args.wasm):
        ap.error("--envoy and --wasm go together")

    with open(args.schema) as f:
        schema = json.load(f)
    want = schema_kind(schema)
    if want is None:
        ap.error(f"{args.schema}: neither a WasmPlugin nor a TrafficExtension openAPIV3Schema")
    validator = jsonschema.Draft7Validator(schema)
    with open(args.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]

    failed = 0
    plugins = 0
    for i, doc in enumerate(docs):
        kind = doc.get("kind", "?")
        name = (doc.get("metadata") or {}).get("name", "?")
        label = f"document {i + 1} ({kind} {name})"
        if kind != want:
            print(f"skipped: {label}: no schema for this kind here")
            continue
        plugins += 1
        errors = []
        want_api = "security.istio.io/v1" if kind == "AuthorizationPolicy" else "extensions.istio.io/v1alpha1"
        if doc.get("apiVersion") != want_api:
            errors.append(f"apiVersion: expected {want_api}, got {doc.get('apiVersion')!r}")
        if not name or name == "?":
            errors.append("metadata.name: missing")
        body = {k: v for k, v in doc.items() if k in ("spec", "status")}
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in e.absolute_path) or "(document)"
            errors.append(f"schema: {where}: {e.message}")
        errors += cel_checks(doc.get("spec") or {}, kind)
        spec_schema = (schema.get("properties") or {}).get("spec")
        if isinstance(doc.get("spec"), dict) and spec_schema:
            errors += unknown_fields(doc["spec"], spec_schema)
        for k in doc:
            if k not in ("apiVersion", "kind", "metadata", "spec", "status"):
                errors.append(f"{k}: unknown top-level field")
        fields = wasm_fields(kind, doc["spec"])[0] if isinstance(doc.get("spec"), dict) else None
        if args.envoy and not errors and fields is not None:
            errors += envoy_check(fields, args.envoy, args.wasm)
        if errors:
            failed += 1
            print(f"INVALID: {label}")
            for e in errors:
                print(f"  - {e}")
        else:
            checks = "schema + CEL rules" + (" + Portcullis pluginConfig" if args.envoy and fields is not None else "")
            print(f"valid: {label} ({checks})")
    if plugins == 0:
        print(f"no {want} document found")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
