#!/usr/bin/env python3
"""`make oci-test`: push the module to a real registry (Debian's docker-registry, CNCF
distribution, on 127.0.0.1 with a config of our own) and pull it back as Istio's fetcher does.

Usage: oci_test.py WASM   (docker-registry on PATH, oras-py importable)
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oci  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(root):
    registry = shutil.which("docker-registry") or shutil.which("registry")
    if not registry:
        raise SystemExit("docker-registry not found (apt-get install docker-registry)")
    port = free_port()
    cfg = os.path.join(root, "config.yml")
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {root}/data}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
""")
    proc = subprocess.Popen([registry, "serve", cfg], stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "log"), "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                if r.status == 200:
                    return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("registry did not come up:\n" + open(os.path.join(root, "log")).read())


def expect_refused(what, fn, needle):
    try:
        fn()
    except oci.Refused as e:
        assert needle in str(e), f"{what}: refused for the wrong reason: {e}"
        print(f"ok: {what} refused: {e}")
        return
    raise AssertionError(f"{what}: accepted, Istio would refuse it")


def main(wasm):
    # Plain HTTP only for loopback: a name that merely starts with "127." gets HTTPS.
    for host, plain in [("127.0.0.1:5000", True), ("localhost:5000", True), ("[::1]:5000", True),
                        ("127.example.com", False), ("127.0.0.1.nip.io:5000", False), ("10.0.0.1:5000", False)]:
        assert oci.plain_http(host) == plain, host
    print("ok: plain HTTP for loopback registries only")
    root = tempfile.mkdtemp(prefix="portcullis-registry-")
    proc, host = start_registry(root)
    try:
        image = f"{host}/portcullis/filter:test"
        pushed = oci.push(image, wasm)
        assert [r for r, _ in pushed] == [image, image + "-compat"], pushed
        layouts = [oci.verify(ref, wasm, digest)[0] for ref, digest in pushed]
        assert layouts == ["oci", "compat"], layouts

        # Pinning is by manifest digest: the module's own hash (the old README advice) fails.
        module_hex = hashlib.sha256(open(wasm, "rb").read()).hexdigest()
        expect_refused("sha256 = hash of the module", lambda: oci.verify(image, wasm, module_hex),
                       "digest does not match")

        # Pushing the same module again gives the same digests (reproducible archive + manifest).
        again = oci.push(image, wasm)
        assert again == pushed, f"not reproducible: {pushed} then {again}"
        print("ok: a second push gives the same manifest digests")

        # The mistake the issue found: `--config` makes a one-layer image Istio refuses.
        import oras.client
        client = oras.client.OrasClient(hostname=host, insecure=True)
        d = tempfile.mkdtemp(prefix="portcullis-oci-")
        cwd = os.getcwd()
        os.chdir(d)
        try:
            shutil.copy(wasm, "portcullis.wasm")
            with open("config.json", "w") as f:
                f.write("{}")
            client.push(target=f"{host}/portcullis/filter:one-layer", files=[f"portcullis.wasm:{oci.WASM_LAYER}"],
                        manifest_config=f"config.json:{oci.WASM_CONFIG}", quiet=True)
            with open("plugin.wasm", "wb") as f:
                f.write(open(wasm, "rb").read())
            client.push(target=f"{host}/portcullis/filter:raw-compat", files=[f"plugin.wasm:{oci.OCI_TGZ}"], quiet=True)
        finally:
            os.chdir(cwd)
            shutil.rmtree(d)
        expect_refused("--config push (one layer)", lambda: oci.verify(f"{host}/portcullis/filter:one-layer", wasm),
                       "number of layers must be 2 but got 1")
        expect_refused("compat layer that is not tar+gzip",
                       lambda: oci.verify(f"{host}/portcullis/filter:raw-compat", wasm), "failed to parse layer as tar.gz")
        print("oci-test: all passed")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(os.path.abspath(sys.argv[1])))
