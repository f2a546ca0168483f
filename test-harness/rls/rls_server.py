"""A protocol-faithful stand-in for Envoy's rate limit service (envoy.service.ratelimit.v3),
for Portcullis's end-to-end tests. Counts hits per (domain, plan, client) in fixed windows
and answers OK / OVER_LIMIT with duration_until_reset, like Envoy's `ratelimit` service.

usage: rls_server.py '<limits json>'   e.g. '{"global": {"requests": 10, "window": 60}}'
Prints "READY <port>" once listening on 127.0.0.1 (port chosen by the OS). Exits when stdin
closes, so the test harness that started it never leaves it behind.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

LIMITS = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
COUNTS = {}
LOCK = threading.Lock()
CALLS = [0]


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def ShouldRateLimit(self, request, context):
        hits = request.hits_addend or 1
        now = time.time()
        overall = rls_pb2.RateLimitResponse.OK
        statuses = []
        with LOCK:
            CALLS[0] += 1
            for d in request.descriptors:
                entries = {e.key: e.value for e in d.entries}
                limit = LIMITS.get(entries.get("plan", ""))
                if limit is None:
                    statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK))
                    continue
                window = int(limit["window"])
                key = (request.domain, entries.get("plan"), entries.get("client"), int(now // window))
                COUNTS[key] = COUNTS.get(key, 0) + hits
                used = COUNTS[key]
                code = rls_pb2.RateLimitResponse.OK if used <= limit["requests"] else rls_pb2.RateLimitResponse.OVER_LIMIT
                if code == rls_pb2.RateLimitResponse.OVER_LIMIT:
                    overall = code
                status = rls_pb2.RateLimitResponse.DescriptorStatus(
                    code=code,
                    limit_remaining=max(0, limit["requests"] - used),
                )
                status.duration_until_reset.seconds = max(1, int(window - now % window))
                statuses.append(status)
        return rls_pb2.RateLimitResponse(overall_code=overall, statuses=statuses)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)
    sys.stdin.read()  # until the harness closes our stdin (or dies)
    server.stop(0)


if __name__ == "__main__":
    main()
