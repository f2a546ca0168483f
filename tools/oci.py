#!/usr/bin/env python3
"""Publish the module as the two OCI image layouts Istio's Wasm image fetcher accepts, and
check an image the way that fetcher reads it (istio/istio pkg/wasm/imagefetcher.go).

  oci.py push IMAGE WASM      push IMAGE (oci layout: exactly two layers, the module as
                              application/vnd.module.wasm.content.layer.v1+wasm plus a
                              application/vnd.module.wasm.config.v1+json layer) and
                              IMAGE-compat (one application/vnd.oci.image.layer.v1.tar+gzip layer,
                              a tar+gzip holding plugin.wasm); print, for each, the oci:// URL
                              and the manifest digest that WasmPlugin `sha256` must carry.
  oci.py verify IMAGE WASM [--sha256 HEX]
                              fetch IMAGE's manifest, pin it to HEX like Istio does (the
                              manifest digest, not the module's hash), pick the layout exactly as
                              the fetcher does (docker, then compat, then oci), check every blob's
                              digest and compare the extracted module with WASM byte for byte.

IMAGE is registry/name:tag. A registry on localhost or 127.0.0.0/8 is spoken to over plain
HTTP without extra flags; any other over HTTPS. Credentials: ORAS_USER / ORAS_PASS (push: oras-py's
login; verify: HTTP Basic only, not the bearer-token dance of Docker Hub-style registries).
Only anonymous access is exercised by the test.
Pushing uses PyPI `oras` (oras-py); verifying uses nothing but the registry HTTP API, so the
two sides are independent.
"""

import gzip
import hashlib
import io
import ipaddress
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
OCI_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_TGZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Refused(Exception):
    """The image is not one Istio would load."""


def split_image(image):
    if "/" not in image:
        raise SystemExit(f"IMAGE must be registry/name:tag, got {image!r}")
    host, rest = image.split("/", 1)
    if "@" in rest:
        repo, ref = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        repo, ref = rest.rsplit(":", 1)
    else:
        repo, ref = rest, "latest"
    return host, repo, ref


def plain_http(host):
    """Plain HTTP only for localhost or a loopback IP literal: a name such as 127.example.com
    is not local and gets HTTPS."""
    name = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def compat_archive(wasm_bytes):
    """tar+gzip holding plugin.wasm, byte-reproducible (fixed mtime, owner and mode)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm_bytes)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm_bytes))
    return gzip.compress(tar_buf.getvalue(), mtime=0)


def push(image, wasm_path):
    import oras.client  # only the push side needs oras-py

    host, repo, tag = split_image(image)
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    client = oras.client.OrasClient(hostname=host, insecure=plain_http(host))
    if os.environ.get("ORAS_USER"):
        client.login(hostname=host, username=os.environ["ORAS_USER"], password=os.environ.get("ORAS_PASS", ""))
    results = []
    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)
        try:
            with open("portcullis.wasm", "wb") as f:
                f.write(wasm)
            with open("config.json", "w") as f:
                f.write("{}")
            with open("portcullis.tar.gz", "wb") as f:
                f.write(compat_archive(wasm))
            # Both files are LAYERS: `--config` would make the config the manifest's config and
            # leave one layer, which Istio refuses ("number of layers must be 2 but got 1").
            for ref, files in (
                (f"{host}/{repo}:{tag}", [f"config.json:{WASM_CONFIG}", f"portcullis.wasm:{WASM_LAYER}"]),
                (f"{host}/{repo}:{tag}-compat", [f"portcullis.tar.gz:{OCI_TGZ}"]),
            ):
                client.push(target=ref, files=files, quiet=True)
                digest = manifest(host, repo, ref.rsplit(":", 1)[1])[1]
                results.append((ref, digest))
        finally:
            os.chdir(cwd)
    for ref, digest in results:
        print(f"url: oci://{ref}")
        print(f"  sha256: {digest}        # WasmPlugin spec.sha256 (the manifest digest)")
        print(f"  pinned: oci://{ref.rsplit(':', 1)[0]}@sha256:{digest}")
    return results


def http_get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    user = os.environ.get("ORAS_USER")
    if user:
        import base64
        token = base64.b64encode(f"{user}:{os.environ.get('ORAS_PASS', '')}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read(), r.headers


def base(host):
    return f"{'http' if plain_http(host) else 'https'}://{host}/v2"


def manifest(host, repo, ref):
    accept = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])
    body, _ = http_get(f"{base(host)}/{repo}/manifests/{ref}", accept)
    return body, hashlib.sha256(body).hexdigest()


def blob(host, repo, desc):
    body, _ = http_get(f"{base(host)}/{repo}/blobs/{desc['digest']}")
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    if got != desc["digest"] or len(body) != desc.get("size", len(body)):
        raise Refused(f"blob {desc['digest']} came back as {got}, {len(body)} bytes")
    return body


def plugin_from_tgz(data):
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
            for m in tar.getmembers():
                if os.path.basename(m.name) == "plugin.wasm":
                    return tar.extractfile(m).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise Refused(f"failed to parse layer as tar.gz: {e}") from e
    raise Refused("plugin.wasm not found in the archive")


def fetch_like_istio(image, expected_sha256=None):
    """Returns (layout, module bytes, manifest digest hex) or raises Refused with Istio's reason."""
    host, repo, ref = split_image(image)
    body, digest = manifest(host, repo, ref)
    if expected_sha256 and digest != expected_sha256:
        raise Refused(f"fetched image's digest does not match the expected one: got {digest}, but want {expected_sha256}")
    m = json.loads(body)
    layers = m.get("layers") or []
    if m.get("mediaType") == DOCKER_MANIFEST:
        if len(layers) != 1 or layers[0].get("mediaType") != DOCKER_TGZ:
            raise Refused("docker image: exactly one layer of type " + DOCKER_TGZ)
        return "docker", plugin_from_tgz(blob(host, repo, layers[0])), digest
    errors = []
    if len(layers) != 1:
        errors.append(f"could not parse as compat variant: number of layers must be 1 but got {len(layers)}")
    elif layers[0].get("mediaType") != OCI_TGZ:
        errors.append(f"could not parse as compat variant: invalid media type {layers[0].get('mediaType')} (expect {OCI_TGZ})")
    else:
        return "compat", plugin_from_tgz(blob(host, repo, layers[0])), digest
    if len(layers) != 2:
        errors.append(f"could not parse as oci variant: number of layers must be 2 but got {len(layers)}")
    else:
        wasm = [l for l in layers if l.get("mediaType") == WASM_LAYER]
        if not wasm:
            errors.append(f"could not parse as oci variant: could not find the layer of type {WASM_LAYER}")
        else:
            return "oci", blob(host, repo, wasm[0]), digest
    raise Refused("the given image is in invalid format as an OCI image: " + "; ".join(errors))


def verify(image, wasm_path, expected_sha256=None):
    with open(wasm_path, "rb") as f:
        want = f.read()
    layout, got, digest = fetch_like_istio(image, expected_sha256)
    if got != want:
        raise Refused(f"{image}: the module in the image ({len(got)} bytes) is not {wasm_path} ({len(want)} bytes)")
    print(f"ok: oci://{image} ({layout} layout, manifest sha256:{digest}, module {len(got)} bytes identical)")
    return layout, digest


def main(argv):
    if len(argv) >= 3 and argv[0] == "push":
        push(argv[1], argv[2])
        return 0
    if len(argv) >= 3 and argv[0] == "verify":
        sha = argv[argv.index("--sha256") + 1] if "--sha256" in argv else None
        try:
            verify(argv[1], argv[2], sha)
        except (Refused, urllib.error.URLError) as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
