# What the benchmarks in tests/bench/ share: tools, processes, ports, nginx and wrk's figures.
# Sourced, never run; the sourcing script sets BENCH_NAME (its name, for messages) first.
# shellcheck shell=bash

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

need_release_binary() { # path: a built imgproxy; a debug build's figures mean nothing
    [ -x "$1" ] || die "no imgproxy binary at $1 (cargo build --release -p imgproxy-server, or pass its path)"
    case "$1" in
        */debug/*) echo "$BENCH_NAME: WARNING: $1 is a debug build; its figures mean nothing" >&2 ;;
    esac
    command -v curl >/dev/null || die "curl is required"
    command -v python3 >/dev/null || die "python3 is required"
}

# Installs nginx and wrk with apt-get when missing; sets NGINX and WRK to their paths.
need_nginx_and_wrk() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "$BENCH_NAME: installing ${missing[*]} with apt-get" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
    WRK="$(command -v wrk)"
}

stop_pid() { # pid, signal: signal it, wait up to 5 s, then SIGKILL
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "-$2" "$1" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url [tries, 0.1 s apart; default 300]
    for _ in $(seq 1 "${2:-300}"); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Writes <dir>/nginx.conf: nginx in the foreground, no access log, sendfile, long keep-alive,
# every temporary path inside <dir>, and the given server block(s).
write_nginx_conf() { # dir, server block(s)
    mkdir -p "$1/tmp"
    cat >"$1/nginx.conf" <<EOF
user $(id -un) $(id -gn);
worker_processes auto;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
$2
}
EOF
}

start_nginx() { # dir (with nginx.conf); sets NGINX_PID
    "$NGINX" -p "$1" -c "$1/nginx.conf" -e "$1/error.log" 2>>"$1/error.log" &
    NGINX_PID=$!
}

# wrk figures -> numbers: requests/s, and latencies in microseconds.
to_us() { # "123.45us" | "1.20ms" | "2.00s"
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /m$/) print n * 60e6;
        else if (v ~ /s$/) print n * 1e6; else print n
    }'
}

wrk_field() { # file (wrk --latency output), what: rps | p50 | p99 | errors
    case "$2" in
        rps) awk '/^Requests\/sec:/ { print $2 }' "$1" ;;
        p50) to_us "$(awk '$1 == "50%" { print $2 }' "$1")" ;;
        p99) to_us "$(awk '$1 == "99%" { print $2 }' "$1")" ;;
        errors)
            awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
                 END { print n + 0 }' "$1" ;;
    esac
}
