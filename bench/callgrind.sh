#!/usr/bin/env bash
# Instructions per request of the pure core (filter/benches/core.rs) under callgrind: a count
# that does not depend on the machine's load, so regressions show without Envoy's noise.
#
#   bash bench/callgrind.sh            (also run by `make bench-core`)
#
# Each case runs 1 time and 1+N times in the same binary; the difference divided by N is the
# cost of one request, setup excluded. Results: target/bench/callgrind.json (and stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${CALLGRIND_ITERS:-100}"
CASES=(jwt_cached jwt_uncached_native_stub rs256_pure_uncached es256_pure_uncached api_key_10k)

if ! command -v valgrind >/dev/null; then
  echo "valgrind not found: installing Debian's valgrind with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q valgrind >/dev/null || { $SUDO apt-get update -q >/dev/null; $SUDO apt-get install -y -q valgrind >/dev/null; }
fi

BIN="$(cargo bench --locked -p portcullis --bench core --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)"
[ -x "$BIN" ] || { echo "cannot find the core bench binary" >&2; exit 1; }
OUT=target/bench
mkdir -p "$OUT"

instructions() { # case iterations -> total instructions (Ir)
  local f="$OUT/callgrind.$1.$2.out"
  PORTCULLIS_CORE_CASE="$1" PORTCULLIS_CORE_ITERS="$2" \
    valgrind --tool=callgrind --callgrind-out-file="$f" "$BIN" >/dev/null 2>&1
  local ir
  ir="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$f" | head -n 1)"
  rm -f "$f"
  echo "$ir"
}

printf '%-28s %16s\n' "case" "instructions/req"
json="{\"iterations\": $N, \"instructions_per_request\": {"
sep=""
for c in "${CASES[@]}"; do
  one="$(instructions "$c" 1)"
  many="$(instructions "$c" $((N + 1)))"
  per=$(( (many - one) / N ))
  printf '%-28s %16s\n' "$c" "$per"
  json+="$sep\"$c\": $per"
  sep=", "
done
json+="}}"
echo "$json" > "$OUT/callgrind.json"
echo "written: $OUT/callgrind.json"
