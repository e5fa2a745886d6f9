#!/usr/bin/env bash
# bench-http.sh - HTTP/1.1 through `proxy http`, through nginx as a reverse proxy, and
# direct, in one run: wrk's requests per second and p99 latency, with keep-alive and with a
# new connection per request, as ratios to direct, and the proxies' CPU per request.
#
# Usage:
#   scripts/bench-http.sh [--rounds N] [--secs S] [--conns C] [--threads T] [--path PATH]
#                         [--subcommand http|tcp] [--proxy-cmd 'CMD'] [--bin PATH]
#                         [--backend-workers N]
#
#   --rounds N           rounds, each running every target after a direct run (default 3);
#                        cells are medians over rounds, ratios against the direct run of
#                        the same round
#   --secs S             seconds per wrk run (default 5)
#   --conns C            wrk connections (default 50)
#   --threads T          wrk threads (default 2)
#   --path PATH          what to ask for: / is `return 200 "ok\n"`, /1k a 1 KiB static file
#                        (default /)
#   --subcommand NAME    the `proxy` subcommand measured (default http); `tcp` is a stand-in
#                        with the same grammar (`proxy tcp PORT TARGET`), for a dry run of
#                        this script before `proxy http` exists
#   --proxy-cmd 'CMD'    the whole proxy command instead, with {BIN}, {PORT} and {TARGET}
#                        replaced (also $PROXY_CMD); default
#                        '{BIN} SUBCOMMAND {PORT} {TARGET} --listen 127.0.0.1 --log-level warn'
#   --bin PATH           the `proxy` binary (default: cargo build --release, target/release/proxy)
#   --backend-workers N  nginx worker processes of the backend (default 1)
#
# The backend is nginx (one worker by default, 16384 worker connections, keep-alive without
# limits) on 127.0.0.1, the same for every target:
#   direct   wrk to the backend;
#   nginx    wrk to nginx as a reverse proxy (one worker per CPU) with proxy_pass to an
#            `upstream` with `keepalive 64`, `proxy_http_version 1.1` and
#            `proxy_set_header Connection ""`: upstream connections kept alive;
#   proxy    wrk to `proxy SUBCOMMAND PORT 127.0.0.1:BACKEND_PORT`.
# Each runs `wrk --latency -tT -cC -dS` twice: keep-alive, and `-H 'Connection: close'` (a new
# client connection per request). Everything listens on 127.0.0.1 and is stopped on exit;
# every wrk run is wrapped in `timeout`. wrk and nginx are installed with apt-get when
# missing (sudo when not root). On a 2-core machine wrk, the proxy and the backend share
# the cores: nothing else should run meanwhile.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
SECS=5
CONNS=50
THREADS=2
URL_PATH=/
SUBCOMMAND=http
PROXY_CMD="${PROXY_CMD:-}"
BIN=""
BACKEND_WORKERS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --path) URL_PATH="$2"; shift 2 ;;
    --subcommand) SUBCOMMAND="$2"; shift 2 ;;
    --proxy-cmd) PROXY_CMD="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --backend-workers) BACKEND_WORKERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-http.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
DEFAULT_CMD='{BIN} '"$SUBCOMMAND"' {PORT} {TARGET} --listen 127.0.0.1 --log-level warn'
PROXY_CMD="${PROXY_CMD:-$DEFAULT_CMD}"

export PATH="$PATH:/usr/sbin:/sbin"
need() { # PROGRAM PACKAGE
  command -v "$1" >/dev/null && return
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    echo "==> installing $2" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null || { echo "bench-http.sh: $1 is missing (package $2)" >&2; exit 2; }
}
need wrk wrk
need nginx nginx-light
need python3 python3

if [ -z "$BIN" ]; then
  cargo build --release --locked -p proxy-cli
  BIN="$PWD/target/release/proxy"
fi
[ -x "$BIN" ] || { echo "bench-http.sh: no binary at $BIN" >&2; exit 2; }

WORK="$(mktemp -d /tmp/http-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port the kernel had free on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until PORT answers GET PATH with a 200 whose body is the backend's.
wait_http() { # NAME PORT
  local name="$1" port="$2"
  for _ in $(seq 100); do
    if [ "$(curl -s --max-time 1 "http://127.0.0.1:$port$URL_PATH" | head -c 3)" = "$EXPECT" ]; then
      return
    fi
    sleep 0.1
  done
  echo "bench-http.sh: $name on 127.0.0.1:$port does not answer $URL_PATH with the backend's body" >&2
  for f in "$WORK"/*.log "$WORK"/*/error.log; do [ -s "$f" ] && { echo "---- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}

# nginx in the foreground with a prefix of its own: NAME WORKERS HTTP_BLOCK.
start_nginx() {
  local name="$1" workers="$2" block="$3" dir="$WORK/$1"
  mkdir -p "$dir"
  # nginx started as root runs its workers as nobody: they read the files and write the
  # temp files here.
  chmod 777 "$dir"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes $workers;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
$block
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 & PIDS+=($!)
  eval "${name^^}_PID=$!"
}

BACKEND_PORT="$(free_port)"
mkdir -p "$WORK/backend/html"
head -c 1024 /dev/zero | tr '\0' 'k' >"$WORK/backend/html/1k"
chmod -R a+rX "$WORK/backend/html"
start_nginx backend "$BACKEND_WORKERS" "  server {
    listen 127.0.0.1:$BACKEND_PORT backlog=4096;
    root $WORK/backend/html;
    location = / { default_type text/plain; return 200 \"ok\\n\"; }
    location = /1k { default_type application/octet-stream; }
  }"
case "$URL_PATH" in
  /) EXPECT="ok" ;;
  /1k) EXPECT="kkk" ;;
  *) echo "bench-http.sh: --path is / or /1k" >&2; exit 2 ;;
esac
wait_http backend "$BACKEND_PORT"

NGINX_PORT="$(free_port)"
start_nginx nginx auto "  upstream backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
wait_http "nginx (reverse proxy)" "$NGINX_PORT"

PROXY_PORT="$(free_port)"
cmd="${PROXY_CMD//\{BIN\}/$BIN}"
cmd="${cmd//\{PORT\}/$PROXY_PORT}"
cmd="${cmd//\{TARGET\}/127.0.0.1:$BACKEND_PORT}"
# shellcheck disable=SC2086 # the command is a template, split on purpose
$cmd >"$WORK/proxy.log" 2>&1 & PROXY_PID=$!; PIDS+=($PROXY_PID)
sleep 0.2
if ! kill -0 "$PROXY_PID" 2>/dev/null; then
  echo "bench-http.sh: \`$cmd\` exited:" >&2; cat "$WORK/proxy.log" >&2
  [ "$SUBCOMMAND" = http ] && echo "(before \`proxy http\` exists: --subcommand tcp)" >&2
  exit 1
fi
wait_http "proxy" "$PROXY_PORT"

# CPU ticks (user + system) of a process and of its children's threads: nginx's master
# and workers, or the proxy.
cpu_ticks() { # PID
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] && total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}
TICK="$(getconf CLK_TCK)"

# One wrk run: TARGET MODE ROUND PORT PID -> a line "target mode round rps p99_ms errors
# requests ticks" in $WORK/results.
measure() {
  local target="$1" mode="$2" round="$3" port="$4" pid="$5" out before=0 after=0 header=()
  [ "$mode" = close ] && header=(-H "Connection: close")
  [ -z "$pid" ] || before="$(cpu_ticks "$pid")"
  out="$(timeout $((SECS + 30)) wrk --latency -t"$THREADS" -c"$CONNS" -d"${SECS}s" "${header[@]}" \
    "http://127.0.0.1:$port$URL_PATH")" || { echo "bench-http.sh: wrk failed on $target:" >&2; echo "$out" >&2; exit 1; }
  [ -z "$pid" ] || after="$(cpu_ticks "$pid")"
  echo "$out" >"$WORK/wrk.$target.$mode.$round.txt"
  python3 - "$WORK/wrk.$target.$mode.$round.txt" "$target" "$mode" "$round" "$(( after - before ))" \
    >>"$WORK/results" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
target, mode, rnd, ticks = sys.argv[2:]
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
p99 = float(m.group(1)) * unit[m.group(2)] if m else float("nan")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
requests = int(re.search(r"(\d+) requests in", text).group(1))
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors += int(m.group(1)) if m else 0
print(target, mode, rnd, rps, p99, errors, requests, ticks)
EOF
}

echo "==> $ROUNDS rounds of ${SECS}s, $CONNS connections, $THREADS threads, GET $URL_PATH" >&2
echo "    proxy: $cmd" >&2
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  for mode in keepalive close; do
    measure direct "$mode" "$round" "$BACKEND_PORT" ""
    measure nginx "$mode" "$round" "$NGINX_PORT" "$NGINX_PID"
    measure proxy "$mode" "$round" "$PROXY_PORT" "$PROXY_PID"
  done
  echo "    round $round done" >&2
done
kill -0 "$PROXY_PID" 2>/dev/null || { echo "bench-http.sh: the proxy died:" >&2; cat "$WORK/proxy.log" >&2; exit 1; }

python3 - "$WORK/results" "$TICK" "$cmd" "$ROUNDS" <<'EOF'
import statistics, sys
tick = float(sys.argv[2])
by = {}
for line in open(sys.argv[1]):
    target, mode, rnd, rps, p99, errors, requests, ticks = line.split()
    by[(target, mode, rnd)] = (float(rps), float(p99), int(errors), int(requests), int(ticks) / tick)
med = lambda xs: statistics.median(list(xs))
rounds = sorted({k[2] for k in by})
print(f"proxy: {sys.argv[3]}")
print(f"{sys.argv[4]} rounds; medians; ratios to the direct run of the same round; "
      "CPU: the proxy's (nginx: master and workers) CPU µs per request\n")
print("| target | keep-alive req/s | ratio | p99 ms | ratio | CPU µs/req "
      "| close req/s | ratio | p99 ms | ratio | CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for target in ("direct", "nginx", "proxy"):
    cells, errors = [], 0
    for mode in ("keepalive", "close"):
        rs = [(by[(target, mode, r)], by[("direct", mode, r)]) for r in rounds]
        errors += sum(x[2] for x, _ in rs)
        cells.append(f"{med(x[0] for x, _ in rs):.0f}")
        cells.append(f"{med(x[0] / d[0] for x, d in rs):.2f}×")
        cells.append(f"{med(x[1] for x, _ in rs):.2f}")
        cells.append(f"{med(x[1] / d[1] for x, d in rs):.2f}×")
        cells.append("–" if target == "direct" else f"{med(x[4] / x[3] * 1e6 for x, _ in rs):.1f}")
    print(f"| {target} | {' | '.join(cells)} | {errors} |")
EOF
echo
echo "machine: $(nproc) x$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(uname -r)"
echo "proxy: $("$BIN" --version 2>/dev/null || echo "$BIN"); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1)"
echo "raw: $WORK"
