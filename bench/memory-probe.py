#!/usr/bin/env python3
"""The memory probe behind the README's "What dominates memory" table: one Envoy with one
listener (a direct-response route, optionally one Wasm filter), 3,000 requests, then its RSS,
Envoy's tcmalloc figures (`/memory`) and each VM's linear memory (the module's own log line).

  python3 bench/memory-probe.py none '{}' [CONCURRENCY]
  python3 bench/memory-probe.py dist/portcullis.wasm @config.json 2
  RELEASE=1 python3 bench/memory-probe.py dist/portcullis.wasm @config.json 2   # memory_allocator_manager on
  TOKEN=<jwt> ...                                                                  # sent as a bearer token
  HEADER='x-api-key: k' ...                                                        # sent instead
  HOLD=60 ...       # then keep Envoy up 60 s more (its PID and port printed), e.g. for wrk + perf

Envoy from .venv/bin/envoy (ENVOY_BIN to override); everything on 127.0.0.1, stopped at the end.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    wasm, cfg = sys.argv[1], sys.argv[2]
    if cfg.startswith("@"):
        with open(cfg[1:]) as fh:
            cfg = fh.read()
    conc = sys.argv[3] if len(sys.argv) > 3 else "2"
    token = os.environ.get("TOKEN", "")
    envoy = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy"))
    filters = []
    if wasm != "none":
        filters.append({"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "m", "root_id": "m",
                       "vm_config": {"vm_id": "m", "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": os.path.abspath(wasm)}}},
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": cfg}}}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "probe", "http_filters": filters,
           "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]}}
    boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [{"name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}]}}
    if os.environ.get("RELEASE"):
        boot["memory_allocator_manager"] = {"bytes_to_release": 1073741824, "memory_release_interval": "1s"}
    d = tempfile.mkdtemp()
    bp, ap, lp = (os.path.join(d, n) for n in ("bootstrap.json", "admin.txt", "envoy.log"))
    with open(bp, "w") as fh:
        json.dump(boot, fh)
    log = open(lp, "w")
    p = subprocess.Popen([envoy, "-c", bp, "--concurrency", conc, "--disable-hot-restart",
                          "--admin-address-path", ap, "-l", "info"], stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = port = None
        deadline = time.time() + 20
        while time.time() < deadline and not port:
            time.sleep(0.1)
            try:
                admin = open(ap).read().strip()
                t = urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=2).read()
                port = json.loads(t)["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            except (OSError, ValueError, KeyError, IndexError):
                pass
        if not port:
            print("Envoy did not start; see", lp)
            return 1
        statuses = {}
        headers = {"authorization": "Bearer " + token} if token else {}
        if os.environ.get("HEADER"):
            k, v = os.environ["HEADER"].split(":", 1)
            headers[k.strip()] = v.strip()
        for _ in range(3000):
            try:
                r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers), timeout=5)
                statuses[r.status] = statuses.get(r.status, 0) + 1
            except urllib.error.HTTPError as e:
                statuses[e.code] = statuses.get(e.code, 0) + 1
        time.sleep(3 if os.environ.get("RELEASE") else 1.5)
        rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1)) / 1024
        mem = json.loads(urllib.request.urlopen(f"http://{admin}/memory", timeout=2).read())
        print(f"RSS {rss:.1f} MiB after 3000 requests {statuses}")
        print("tcmalloc MiB:", {k: round(int(v) / 1048576, 1) for k, v in mem.items() if str(v).isdigit()})
        if os.environ.get("HOLD"):
            print(f"holding: pid {p.pid} port {port}", flush=True)
            time.sleep(float(os.environ["HOLD"]))
    finally:
        p.terminate()
        p.wait(timeout=20)
        log.close()
    for line in open(lp):
        if "linear memory" in line or "invalid configuration" in line:
            print("  ", line.strip().split("] ")[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
