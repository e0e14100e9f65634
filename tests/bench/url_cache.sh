#!/usr/bin/env bash
# Cache-hit throughput and latency of the URL API (`GET /api/generate`) against nginx serving
# the very same image bytes as a static file: how close a cached imgproxy answer comes to the
# floor of "send a file from disk".
#
# Method (one run, one machine, loopback only, no upstream ever called):
#   1. Start the release binary (`imgproxy serve`, default ./target/release/imgproxy, or
#      IMGPROXY_BIN) on a free 127.0.0.1 port with a fresh temporary data dir and a clean
#      environment: no provider keys, no master key (open loopback server, so no auth and no
#      metering on the hot path), the placeholder model.
#   2. Warm one URL: placeholder model, fixed seed, fixed size (SIZE, default 512x512). The
#      first GET must answer X-Cache-Status: MISS-GENERATED, the second HIT with identical
#      bytes; those bytes are written to nginx's document root as image.png.
#   3. Start nginx (worker_processes auto, sendfile, no access log, keep-alive, in the
#      foreground as a child of this script) on another free
#      127.0.0.1 port serving that file, and check it answers the same bytes.
#   4. Run `wrk -t2 -c16 -d<DURATION> --latency` (DURATION default 10s) against imgproxy's
#      URL, then against nginx's, one after the other (each bounded by `timeout`), so both
#      get the same client and the same idle machine. wrk runs on the same cores as the
#      servers: compare the ratio, not the absolute numbers.
#   5. Check imgproxy still answers HIT (the benchmark never regenerated), print a table of
#      req/s, p50 and p99 for each and the imgproxy/nginx ratio, and stop everything.
# wrk's non-2xx/3xx and socket error counts are printed too: a run with errors is not valid.
#
# Needs: curl, python3 (free ports), nginx and wrk (installed with apt-get if missing).
# Usage: tests/bench/url_cache.sh [path/to/imgproxy]
#   env: IMGPROXY_BIN, DURATION (wrk -d, e.g. 10s), SIZE (e.g. 512x512), THREADS (2), CONNECTIONS (16)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_NAME=url_cache.sh
# shellcheck source=tests/bench/common.sh
. "$ROOT/tests/bench/common.sh"
BIN="${1:-${IMGPROXY_BIN:-$ROOT/target/release/imgproxy}}"
DURATION="${DURATION:-10s}"
SIZE="${SIZE:-512x512}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-16}"

need_release_binary "$BIN"

# -- tools ----------------------------------------------------------------------------------
need_nginx_and_wrk

# -- scratch space and cleanup ------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/imgproxy-url-bench.XXXXXX")"
IMGPROXY_PID=""
NGINX_PID=""
cleanup() {
    stop_pid "$NGINX_PID" QUIT
    stop_pid "$IMGPROXY_PID" TERM
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- imgproxy -------------------------------------------------------------------------------
IMG_PORT="$(free_port)"
mkdir -p "$WORK/data" "$WORK/www"
env -i PATH="$PATH" HOME="$WORK" RUST_LOG=warn NO_COLOR=1 IMGPROXY_URL_API_DEFAULT_MODEL=placeholder \
    "$BIN" serve --listen "127.0.0.1:$IMG_PORT" --data-dir "$WORK/data" >"$WORK/imgproxy.log" 2>&1 &
IMGPROXY_PID=$!
wait_http "http://127.0.0.1:$IMG_PORT/healthz" || { cat "$WORK/imgproxy.log" >&2; die "imgproxy did not start"; }

IMG_URL="http://127.0.0.1:$IMG_PORT/api/generate?prompt=a+benchmark+lighthouse&model=placeholder&seed=7&size=$SIZE"
cache_status() { # headers file
    tr -d '\r' <"$1" | awk -F': *' 'tolower($1) == "x-cache-status" { print $2 }'
}
curl -fsS --max-time 120 -D "$WORK/h1" -o "$WORK/first.png" "$IMG_URL" || die "warm-up request failed"
curl -fsS --max-time 30 -D "$WORK/h2" -o "$WORK/www/image.png" "$IMG_URL" || die "second request failed"
[ "$(cache_status "$WORK/h1")" = "MISS-GENERATED" ] || die "first request: X-Cache-Status $(cache_status "$WORK/h1"), expected MISS-GENERATED"
[ "$(cache_status "$WORK/h2")" = "HIT" ] || die "second request: X-Cache-Status $(cache_status "$WORK/h2"), expected HIT"
cmp -s "$WORK/first.png" "$WORK/www/image.png" || die "the cache hit served other bytes than the generation"
BYTES="$(wc -c <"$WORK/www/image.png" | tr -d ' ')"
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/image.png"

# -- nginx ----------------------------------------------------------------------------------
NGINX_PORT="$(free_port)"
write_nginx_conf "$WORK/nginx" "    types { image/png png; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        location / { }
    }"
start_nginx "$WORK/nginx"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/image.png"
wait_http "$NGINX_URL" || { cat "$WORK/nginx/error.log" >&2; die "nginx did not start"; }
curl -fsS --max-time 10 -o "$WORK/from-nginx.png" "$NGINX_URL"
cmp -s "$WORK/from-nginx.png" "$WORK/www/image.png" || die "nginx serves other bytes"

# -- wrk ------------------------------------------------------------------------------------
seconds="${DURATION%s}"
case "$seconds" in *[!0-9]*) seconds=60 ;; esac
bound=$((seconds + 30))
run_wrk() { # name url
    echo "url_cache.sh: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $2" >&2
    timeout "$bound" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2" >"$WORK/wrk-$1.txt" \
        || die "wrk against $1 failed or overran: $(cat "$WORK/wrk-$1.txt")"
}
run_wrk imgproxy "$IMG_URL"
run_wrk nginx "$NGINX_URL"

curl -fsS --max-time 10 -D "$WORK/h3" -o /dev/null "$IMG_URL"
[ "$(cache_status "$WORK/h3")" = "HIT" ] || die "after the run: X-Cache-Status $(cache_status "$WORK/h3"), expected HIT"

for name in imgproxy nginx; do
    [ -n "$(wrk_field "$WORK/wrk-$name.txt" rps)" ] || die "cannot read wrk's output for $name: $(cat "$WORK/wrk-$name.txt")"
done

echo
echo "cache-hit GET /api/generate vs nginx static file: $BYTES-byte PNG ($SIZE), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(basename "$BIN") at $BIN"
awk -v ir="$(wrk_field "$WORK/wrk-imgproxy.txt" rps)" -v nr="$(wrk_field "$WORK/wrk-nginx.txt" rps)" \
    -v i50="$(wrk_field "$WORK/wrk-imgproxy.txt" p50)" -v n50="$(wrk_field "$WORK/wrk-nginx.txt" p50)" \
    -v i99="$(wrk_field "$WORK/wrk-imgproxy.txt" p99)" -v n99="$(wrk_field "$WORK/wrk-nginx.txt" p99)" \
    -v ie="$(wrk_field "$WORK/wrk-imgproxy.txt" errors)" -v ne="$(wrk_field "$WORK/wrk-nginx.txt" errors)" '
    function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
    BEGIN {
        printf "%-10s %12s %12s %12s %8s\n", "", "req/s", "p50 (ms)", "p99 (ms)", "errors"
        printf "%-10s %12.0f %12.3f %12.3f %8d\n", "imgproxy", ir, i50 / 1000, i99 / 1000, ie
        printf "%-10s %12.0f %12.3f %12.3f %8d\n", "nginx", nr, n50 / 1000, n99 / 1000, ne
        printf "%-10s %12s %12s %12s\n", "ratio", ratio(ir, nr), ratio(i50, n50), ratio(i99, n99)
        print "(ratio: imgproxy / nginx)"
        if (ie + ne > 0) print "WARNING: wrk saw errors or non-2xx answers: this run is not valid"
    }'
