#!/usr/bin/env bash
# The gateway's own cost on megabyte images (issue 18): `POST /v1/images/generations` through
# imgproxy to a fake OpenAI, against the fake itself (direct) and against LiteLLM's proxy in
# front of the same fake, with the peak memory of each request in flight.
#
# Method (one run, one machine, loopback only):
#   1. The fake upstream is nginx (worker_processes auto, no access log, keep-alive) answering
#      `POST /v1/images/generations` with OpenAI's body and one 1024x1024 PNG inline (1.07 MB,
#      1.42 MB of base64; made by fake_openai_answer.py). 24 bytes of the PNG are each
#      request's `$request_id` (its 32 hex digits read as base64; addition module: a 121-byte
#      head from `return`, the rest from a file by sendfile), so every answer is a new image,
#      as a real upstream's are, and the gateway's content-addressed store writes every one.
#   2. The release binary (`imgproxy serve`, default ./target/release/imgproxy, or
#      IMGPROXY_BIN) serves `gpt-image-2` through its `openai` provider (OPENAI_API_KEY,
#      OPENAI_BASE_URL = the fake), in a clean environment (no trace export), logs at `info`
#      to a file (the access log line of every request, as in production).
#      METERED=1 (the default) runs it as production does: IMGPROXY_MASTER_KEY set, and every
#      request with a key issued by `imgproxy keys create` with credits, so that each miss
#      reserves and settles its charge (issue 18 keeps credits among the guarantees).
#      METERED=0 runs it open (no master key: loopback only, no auth, no metering).
#   3. Phases, each `wrk --latency -d$DURATION` with tests/bench/gateway.lua (every request a
#      new prompt on the miss path, one fixed prompt on the hit path), at 1 connection (-t1)
#      and 8 (-t2):
#        direct nginx (the same requests, straight to the fake);
#        imgproxy, for response_format b64_json and url, miss and hit;
#        LiteLLM's proxy (LITELLM=1, the default), miss with b64_json (it has no store for url).
#      Every imgproxy phase gets a fresh gateway process and data dir (under TMPDIR, all
#      removed at the end of the run, a few GB: ext4 scans past the inodes freed in the last
#      5 to 10 seconds each time it makes a file, so deleting a phase's images just before
#      the next phase would slow that phase's writes for reasons of the benchmark's own
#      making), then warm-up requests, each answer's status
#      and X-Cache-Status checked: a hit phase makes its cached image; a miss phase sends
#      enough new prompts to fill the store's in-memory copy of recent images
#      (`storage.memory_cache_bytes`, set to its default, 64 MiB, in a config file), which a
#      server that has been up a while holds; then the measurement; after it one more request
#      must still answer the path's X-Cache-Status.
#   4. Memory, per imgproxy and LiteLLM phase, from /proc/<pid>/status: idle = VmRSS after the
#      warm-up; the peak counter is reset then (`echo 5 > /proc/<pid>/clear_refs`) and
#      peak = VmHWM after wrk. Memory per request in flight = (peak - idle) / connections,
#      given as a multiple of the PNG's size. CPU per request: the process's user + system
#      time (/proc/<pid>/stat, all threads) during wrk over the requests wrk completed, the
#      steadiest figure here, since throughput moves with whatever else the cores run.
#   5. LiteLLM (PyPI's `litellm[proxy]`, LITELLM_SPEC, installed on first use into
#      .bench/litellm-venv, gitignored) runs one worker (`--num_workers 1`) with a master key
#      (it refuses to start without one; with no database that is a string comparison) and one
#      model, `openai/gpt-image-2`, whose api_base is the fake, and `drop_params` (GPT image
#      models take no `response_format`; without it LiteLLM refuses the request); its cost map
#      is the local one (LITELLM_LOCAL_MODEL_COST_MAP), so it never calls out. It relays the
#      answer and keeps nothing: no store, no cache, no single-flight, no credits.
#   6. Prints one table (req/s, p50, p99, wrk's errors, idle and peak RSS, CPU per request) and the ratios issue
#      18 sets targets for. wrk, nginx, the gateway and LiteLLM share the machine's cores:
#      compare ratios, not absolute numbers, and mind other load (the load average is
#      printed). A run with wrk errors or non-2xx answers is not valid.
#
# Needs: curl, python3, nginx with the addition module and wrk (both installed with apt-get if
# missing); for LiteLLM, python3's venv and PyPI.
# Usage: tests/bench/gateway.sh [path/to/imgproxy]
#   env: IMGPROXY_BIN, DURATION (wrk -d per phase, default 10s), METERED (1), LITELLM (1),
#        LITELLM_SPEC (litellm[proxy]; e.g. 'litellm[proxy]==1.108.7'), TMPDIR (scratch space
#        and the gateway's data dirs; /dev/shm takes the disk, SQLite's fsyncs included, out),
#        GLIBC_TUNABLES (also given to the gateway, whose environment is otherwise clean;
#        glibc.malloc.mmap_threshold=131072 has every large buffer mapped and unmapped, so
#        that the peak RSS counts live memory, not what the allocator keeps for reuse),
#        TOKIO_WORKER_THREADS (also given to the gateway: its async worker threads, one per
#        CPU by default; 1 leaves the other core to nginx and wrk),
#        COMPARE (a second imgproxy binary: an A/B run instead, the two taking turns on the
#        phases COMPARE_PHASES, default b64_json:miss:8, format:mode:connections separated by
#        spaces, for ROUNDS rounds, default 2; no LiteLLM; a change is measured against the
#        binary before it in one run, since single phases here move by up to 1.5x between runs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_NAME=gateway.sh
# shellcheck source=tests/bench/common.sh
. "$ROOT/tests/bench/common.sh"
BIN="${1:-${IMGPROXY_BIN:-$ROOT/target/release/imgproxy}}"
DURATION="${DURATION:-10s}"
METERED="${METERED:-1}"
LITELLM="${LITELLM:-1}"
COMPARE="${COMPARE:-}"
ROUNDS="${ROUNDS:-2}"
COMPARE_PHASES="${COMPARE_PHASES:-b64_json:miss:8}"
LITELLM_SPEC="${LITELLM_SPEC:-litellm[proxy]}"
LITELLM_VENV="$ROOT/.bench/litellm-venv"
MODEL=gpt-image-2
MEMORY_CACHE_BYTES=$((64 * 1024 * 1024))
LUA="$ROOT/tests/bench/gateway.lua"

need_release_binary "$BIN"
if [ -n "$COMPARE" ]; then
    need_release_binary "$COMPARE"
    LITELLM=0
fi

# -- tools ----------------------------------------------------------------------------------
need_nginx_and_wrk
"$NGINX" -V 2>&1 | grep -q -- --with-http_addition_module || die "$NGINX lacks the addition module"
if [ "$LITELLM" = 1 ] && [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    echo "$BENCH_NAME: installing $LITELLM_SPEC into $LITELLM_VENV" >&2
    python3 -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/pip" install -q "$LITELLM_SPEC" >&2
fi

# -- scratch space and cleanup ------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/imgproxy-gateway-bench.XXXXXX")"
NGINX_PID=""
GATEWAY_PID=""
LITELLM_PID=""
cleanup() {
    stop_pid "$LITELLM_PID" TERM
    stop_pid "$GATEWAY_PID" TERM
    stop_pid "$NGINX_PID" QUIT
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# -- the fake upstream ----------------------------------------------------------------------
mkdir -p "$WORK/www"
read -r PNG_BYTES B64_CHARS < <(python3 "$ROOT/tests/bench/fake_openai_answer.py" "$WORK/www")
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/"*
NGINX_PORT="$(free_port)"
UPSTREAM="http://127.0.0.1:$NGINX_PORT/v1"
# nginx answers a POST to a static file 405; `error_page` turns it into the file (a GET).
write_nginx_conf "$WORK/nginx" "    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /v1/images/generations {
            default_type application/json;
            alias $WORK/www/tail.json;
            error_page 405 =200 \$uri;
            addition_types application/json;
            add_before_body /answer-head;
        }
        location = /answer-head {
            internal;
            default_type application/json;
            return 200 \"$(sed 's/["\\]/\\&/g' "$WORK/www/head.txt")\$request_id\";
        }
    }"
start_nginx "$WORK/nginx"
for _ in $(seq 1 100); do
    curl -s -o /dev/null -X POST -d '{}' "$UPSTREAM/images/generations" && break
    sleep 0.1
done
# Two answers: the same size, valid JSON holding the PNG, and different images.
for i in 1 2; do
    curl -fsS --max-time 10 -X POST -d '{}' -o "$WORK/upstream-$i.json" "$UPSTREAM/images/generations" \
        || { cat "$WORK/nginx/error.log" >&2; die "the fake upstream does not answer"; }
done
python3 - "$WORK/upstream-1.json" "$WORK/upstream-2.json" "$PNG_BYTES" <<'EOF' || die "the fake upstream's answers are wrong"
import base64, json, sys
images = [base64.b64decode(json.load(open(p))["data"][0]["b64_json"]) for p in sys.argv[1:3]]
assert all(len(i) == int(sys.argv[3]) and i.startswith(b"\x89PNG") for i in images)
assert images[0] != images[1]
EOF

# -- measuring --------------------------------------------------------------------------------
seconds="${DURATION%s}"
case "$seconds" in *[!0-9]*) seconds=60 ;; esac
bound=$((seconds + 30))
status_kb() { # pid, field (VmRSS | VmHWM)
    awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"
}
# CPU time the process has used, all its threads, in clock ticks (user + system).
cpu_ticks() { # pid
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
# One wrk run, recorded in $RESULTS as: name, req/s, p50 µs, p99 µs, errors, idle kB, peak kB,
# CPU ms per request.
measure() { # name, url, connections, mode, response_format, bearer, pid to watch ("" for none)
    local name="$1" url="$2" connections="$3" mode="$4" format="$5" bearer="$6" pid="$7"
    local threads=$((connections < 2 ? connections : 2)) idle="" peak="" cpu="" out="$WORK/wrk-${1// /-}.txt"
    if [ -n "$pid" ]; then
        idle="$(status_kb "$pid" VmRSS)"
        echo 5 >"/proc/$pid/clear_refs" || die "cannot reset the peak RSS of $pid"
        cpu="$(cpu_ticks "$pid")"
    fi
    echo "$BENCH_NAME: $name: wrk -t$threads -c$connections -d$DURATION" >&2
    timeout "$bound" "$WRK" -t"$threads" -c"$connections" -d"$DURATION" --latency -s "$LUA" "$url" \
        -- "$mode" "$MODEL" "$format" "$bearer" >"$out" || die "wrk ($name) failed or overran: $(cat "$out")"
    if [ -n "$pid" ]; then
        peak="$(status_kb "$pid" VmHWM)"
        cpu="$(awk -v ticks="$(( $(cpu_ticks "$pid") - cpu ))" -v hz="$(getconf CLK_TCK)" \
            '/ requests in / { printf "%.2f", 1000 * ticks / hz / $1 }' "$out")"
    fi
    [ -n "$(wrk_field "$out" rps)" ] || die "cannot read wrk's output for $name: $(cat "$out")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(wrk_field "$out" rps)" "$(wrk_field "$out" p50)" \
        "$(wrk_field "$out" p99)" "$(wrk_field "$out" errors)" "${idle:--}" "${peak:--}" "${cpu:--}" >>"$RESULTS"
}

# One request as wrk's would be, checked: HTTP 200 and, for imgproxy, the X-Cache-Status.
# `warm-up`-prompted requests never collide with wrk's prompts.
check_request() { # url, bearer, prompt, response_format, expected X-Cache-Status ("" for none)
    local code cache auth=()
    [ -z "$2" ] || auth=(-H "Authorization: Bearer $2")
    code="$(curl -sS --max-time 60 -D "$WORK/headers" -o "$WORK/answer.json" -w '%{http_code}' \
        -H 'Content-Type: application/json' "${auth[@]}" \
        -d "{\"model\":\"$MODEL\",\"prompt\":\"$3\",\"size\":\"1024x1024\",\"quality\":\"low\",\"response_format\":\"$4\"}" \
        "$1")" || die "request to $1 failed"
    [ "$code" = 200 ] || die "$1 answered $code: $(head -c 500 "$WORK/answer.json")"
    cache="$(tr -d '\r' <"$WORK/headers" | awk -F': *' 'tolower($1) == "x-cache-status" { print $2 }')"
    [ -z "$5" ] || [ "$cache" = "$5" ] || die "$1: X-Cache-Status '$cache', expected $5"
}

# -- direct ---------------------------------------------------------------------------------
for connections in 1 8; do
    measure "direct c$connections" "$UPSTREAM/images/generations" "$connections" miss b64_json "" ""
done

# -- imgproxy -------------------------------------------------------------------------------
GATEWAY_PORT="$(free_port)"
GATEWAY="http://127.0.0.1:$GATEWAY_PORT/v1/images/generations"
printf '[storage]\nmemory_cache_bytes = %d\n' "$MEMORY_CACHE_BYTES" >"$WORK/imgproxy.toml"
MASTER_KEY=""
[ "$METERED" = 1 ] && MASTER_KEY="bench-master-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
phase=0
gateway_phase() { # binary, label, response_format, miss | hit, connections
    local bin="$1" label="$2" format="$3" mode="$4" connections="$5" data="$WORK/data-$phase" secret=""
    phase=$((phase + 1))
    mkdir -p "$data"
    local env=(env -i PATH="$PATH" HOME="$WORK" RUST_LOG=info NO_COLOR=1
        OPENAI_API_KEY=sk-bench OPENAI_BASE_URL="$UPSTREAM")
    [ -z "${GLIBC_TUNABLES:-}" ] || env+=(GLIBC_TUNABLES="$GLIBC_TUNABLES")
    [ -z "${TOKIO_WORKER_THREADS:-}" ] || env+=(TOKIO_WORKER_THREADS="$TOKIO_WORKER_THREADS")
    if [ -n "$MASTER_KEY" ]; then
        env+=(IMGPROXY_MASTER_KEY="$MASTER_KEY")
        secret="$("${env[@]}" "$bin" keys create --data-dir "$data" --name bench --credits 1000000000 \
            2>>"$WORK/imgproxy.log" | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')" \
            || die "cannot issue a key"
    fi
    "${env[@]}" "$bin" serve --config "$WORK/imgproxy.toml" --listen "127.0.0.1:$GATEWAY_PORT" --data-dir "$data" \
        >>"$WORK/imgproxy.log" 2>&1 &
    GATEWAY_PID=$!
    wait_http "http://127.0.0.1:$GATEWAY_PORT/healthz" || { tail -20 "$WORK/imgproxy.log" >&2; die "imgproxy did not start"; }
    if [ "$mode" = hit ]; then
        check_request "$GATEWAY" "$secret" "a lighthouse at dusk" "$format" MISS-GENERATED
        for _ in 1 2 3; do
            check_request "$GATEWAY" "$secret" "a lighthouse at dusk" "$format" HIT
        done
    else
        for i in $(seq 1 $((MEMORY_CACHE_BYTES / PNG_BYTES + 3))); do
            check_request "$GATEWAY" "$secret" "warm-up $i" "$format" MISS-GENERATED
        done
    fi
    sleep 1
    measure "$label $format $mode c$connections" "$GATEWAY" "$connections" "$mode" "$format" "$secret" "$GATEWAY_PID"
    if [ "$mode" = hit ]; then
        check_request "$GATEWAY" "$secret" "a lighthouse at dusk" "$format" HIT
    else
        check_request "$GATEWAY" "$secret" "warm-up after" "$format" MISS-GENERATED
    fi
    stop_pid "$GATEWAY_PID" TERM
    GATEWAY_PID=""
}
if [ -z "$COMPARE" ]; then
    for format in b64_json url; do
        for mode in miss hit; do
            for connections in 1 8; do
                gateway_phase "$BIN" imgproxy "$format" "$mode" "$connections"
            done
        done
    done
else
    # A/B: the two binaries take turns, phase by phase, round by round, so that both meet
    # the same state of the machine (other load, the disk's recently deleted inodes).
    for round in $(seq 1 "$ROUNDS"); do
        for phase_spec in $COMPARE_PHASES; do
            IFS=: read -r format mode connections <<<"$phase_spec"
            gateway_phase "$BIN" "A r$round" "$format" "$mode" "$connections"
            gateway_phase "$COMPARE" "B r$round" "$format" "$mode" "$connections"
        done
    done
fi

# -- LiteLLM --------------------------------------------------------------------------------
LITELLM_RUN="LiteLLM not run"
if [ "$LITELLM" = 1 ]; then
    LITELLM_RUN="LiteLLM $("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))'), 1 worker"
    LITELLM_PORT="$(free_port)"
    LITELLM_KEY="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: $MODEL
    litellm_params:
      model: openai/$MODEL
      api_base: $UPSTREAM
      api_key: sk-bench
litellm_settings:
  drop_params: true
EOF
    env -i PATH="$PATH" HOME="$WORK" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_MASTER_KEY="$LITELLM_KEY" \
        "$LITELLM_VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
        --num_workers 1 >"$WORK/litellm.log" 2>&1 &
    LITELLM_PID=$!
    wait_http "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 1200 \
        || { tail -30 "$WORK/litellm.log" >&2; die "LiteLLM did not start"; }
    for i in 1 2 3; do
        check_request "http://127.0.0.1:$LITELLM_PORT/v1/images/generations" "$LITELLM_KEY" "warm-up $i" b64_json ""
    done
    sleep 1
    for connections in 1 8; do
        measure "litellm b64_json miss c$connections" "http://127.0.0.1:$LITELLM_PORT/v1/images/generations" \
            "$connections" miss b64_json "$LITELLM_KEY" "$LITELLM_PID"
    done
    stop_pid "$LITELLM_PID" TERM
    LITELLM_PID=""
fi

# -- report ---------------------------------------------------------------------------------
echo
echo "POST /v1/images/generations, one ${PNG_BYTES}-byte 1024x1024 PNG (${B64_CHARS} characters of base64) from an nginx fake OpenAI;"
echo "wrk -d$DURATION per phase (c1: -t1, c8: -t2); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
[ -z "$COMPARE" ] || echo "A/B: A = $BIN, B = $COMPARE, taking turns over $ROUNDS rounds"
echo "imgproxy $(basename "$BIN") at $BIN, $([ "$METERED" = 1 ] && echo "metered (an issued key with credits)" || echo "open (no master key, unmetered)")$([ -z "${TOKIO_WORKER_THREADS:-}" ] || echo ", TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS")$([ -z "${GLIBC_TUNABLES:-}" ] || echo ", GLIBC_TUNABLES=$GLIBC_TUNABLES"); $LITELLM_RUN"
awk -F'\t' -v image="$PNG_BYTES" -v compare="$COMPARE" '
    { rps[$1] = $2; p50[$1] = $3; p99[$1] = $4; errors[$1] = $5; idle[$1] = $6; peak[$1] = $7; cpu[$1] = $8; order[NR] = $1; bad += $5 }
    function mb(kb) { return kb == "-" ? "-" : sprintf("%.1f", kb / 1024) }
    function have(a, b) { return (a in rps) && (b in rps) && rps[b] > 0 }
    function share(a, b) { return have(a, b) ? sprintf("%.1f %%", 100 * rps[a] / rps[b]) : "n/a" }
    function times(a, b) { return have(a, b) ? sprintf("%.2fx", rps[a] / rps[b]) : "n/a" }
    function above(a, b) { return have(a, b) ? sprintf("%.2f ms", (p50[a] - p50[b]) / 1000) : "n/a" }
    function per_flight(a) {
        if (!(a in peak) || peak[a] == "-") return "n/a"
        return sprintf("%.1f MB = %.2fx the image", (peak[a] - idle[a]) / 8 / 1024, (peak[a] - idle[a]) * 1024 / 8 / image)
    }
    END {
        printf "\n%-26s %9s %9s %9s %7s %9s %9s %10s\n", "", "req/s", "p50 ms", "p99 ms", "errors", "idle MB", "peak MB", "CPU ms/req"
        for (i = 1; i <= NR; i++) {
            n = order[i]
            printf "%-26s %9.1f %9.2f %9.2f %7d %9s %9s %10s\n", n, rps[n], p50[n] / 1000, p99[n] / 1000, errors[n], mb(idle[n]), mb(peak[n]), cpu[n]
        }
        if (compare != "") {
            print "\nmemory per request in flight, miss phases at 8 connections:"
            for (i = 1; i <= NR; i++) if (order[i] ~ /^[AB] .* c8$/) printf "  %-24s %s\n", order[i], per_flight(order[i])
            if (bad > 0) print "WARNING: wrk saw errors or non-2xx answers: this run is not valid"
            exit
        }
        print "\nissue 18 ratios (target in brackets):"
        for (f = 1; f <= 2; f++) {
            fmt = f == 1 ? "b64_json" : "url"
            m8 = "imgproxy " fmt " miss c8"; m1 = "imgproxy " fmt " miss c1"; h8 = "imgproxy " fmt " hit c8"
            printf "  %-8s miss@8 / direct@8 throughput      %-10s [>= 40 %%]\n", fmt, share(m8, "direct c8")
            printf "  %-8s miss@8 / LiteLLM miss@8 throughput %-10s [>= 10x]\n", fmt, times(m8, "litellm b64_json miss c8")
            printf "  %-8s miss@1 p50 above direct@1 p50      %-10s [<= 1.5 ms]\n", fmt, above(m1, "direct c1")
            printf "  %-8s hit@8 / direct@8 throughput       %-10s [>= 85 %%]\n", fmt, share(h8, "direct c8")
            printf "  %-8s memory per request in flight, miss@8: %s [<= 3x]\n", fmt, per_flight(m8)
            printf "  %-8s memory per request in flight, hit@8:  %s\n", fmt, per_flight(h8)
        }
        printf "  LiteLLM  memory per request in flight, miss@8: %s\n", per_flight("litellm b64_json miss c8")
        if (bad > 0) print "WARNING: wrk saw errors or non-2xx answers: this run is not valid"
    }' "$RESULTS"
