#!/usr/bin/env python3
"""Drops exported callbacks Portcullis never uses from the built module.

The Rust proxy-wasm SDK exports every `proxy_on_*` callback, and proxy-wasm hosts
(proxy-wasm-cpp-host: Envoy, Istio) enter the VM for every exported callback whether or not
the module does anything in it; a callback a module does not export is skipped. Portcullis
implements no response-body, response-trailer, log, done, network-filter, gRPC-stream or
foreign-function callback, so removing those exports saves VM entries on every request (a
response body, the log and the done callback each cost one) and changes nothing else: the
functions stay in the module, only the host no longer calls them (for `proxy_on_done` the host
then takes the context as done, which is what the SDK answers).

usage: wasm_exports.py MODULE.wasm     (rewrites the file in place; prints what it dropped)
"""
import sys

DROP = {
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_foreign_function",
}
# What Portcullis needs; the rewrite refuses a module without any of them.
KEEP = {
    "proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_context_create", "proxy_on_vm_start",
    "proxy_on_configure", "proxy_on_tick", "proxy_on_queue_ready", "proxy_on_request_headers",
    "proxy_on_request_body", "proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_delete",
    "proxy_on_http_call_response", "proxy_on_grpc_receive", "proxy_on_grpc_close",
}


def leb(data, i):
    """Unsigned LEB128 at data[i]: (value, next index)."""
    v, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def enc(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rewrite(data):
    if data[:8] != b"\0asm\x01\0\0\0":
        raise SystemExit("not a wasm module (version 1)")
    out, i, dropped, kept = bytearray(data[:8]), 8, [], set()
    while i < len(data):
        sid = data[i]
        size, body = leb(data, i + 1)
        end = body + size
        if sid != 7:
            out += data[i:end]
            i = end
            continue
        count, j = leb(data, body)
        entries = bytearray()
        n = 0
        for _ in range(count):
            nlen, k = leb(data, j)
            name = data[k:k + nlen].decode()
            kind = data[k + nlen]
            _, nxt = leb(data, k + nlen + 1)
            if name in DROP:
                dropped.append(name)
            else:
                entries += data[j:nxt]
                kept.add(name)
                n += 1
            j = nxt
        section = enc(n) + bytes(entries)
        out += bytes([7]) + enc(len(section)) + section
        i = end
    missing = KEEP - kept
    if missing:
        raise SystemExit(f"the module lacks exports Portcullis needs: {sorted(missing)}")
    return bytes(out), dropped


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    path = sys.argv[1]
    with open(path, "rb") as fh:
        data = fh.read()
    new, dropped = rewrite(data)
    with open(path, "wb") as fh:
        fh.write(new)
    print(f"{path}: dropped {len(dropped)} unused exports ({', '.join(sorted(dropped)) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
