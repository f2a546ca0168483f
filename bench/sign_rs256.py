#!/usr/bin/env python3
"""Fast RS256 token minting for `make bench` (OpenSSL through `cryptography`, ~10x faster
than the pure-Rust signer). The bench falls back to jwt-simple when this script fails (for
example without the `cryptography` module).

usage: sign_rs256.py KEY_PEM KID ISSUER AUDIENCE LIFETIME_S TAG FIRST COUNT OUT_FILE
Writes COUNT tokens, one per line, with `sub` = TAG-user-<i> for i in FIRST..FIRST+COUNT.
"""
import base64
import json
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    pem, kid, iss, aud, lifetime, tag, first, count, out = sys.argv[1:10]
    with open(pem, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    now = int(time.time())
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())
    with open(out, "w") as f:
        for i in range(int(first), int(first) + int(count)):
            claims = {"iat": now, "exp": now + int(lifetime), "nbf": now, "iss": iss, "sub": f"{tag}-user-{i}",
                      "aud": aud, "client_id": "bench-client", "scope": "orders:read"}
            payload = b64(json.dumps(claims, separators=(",", ":")).encode())
            signing_input = f"{header}.{payload}".encode()
            sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
            f.write(f"{header}.{payload}.{b64(sig)}\n")


if __name__ == "__main__":
    main()
