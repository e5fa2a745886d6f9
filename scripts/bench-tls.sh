#!/usr/bin/env bash
# bench-tls.sh - TLS termination in front of one plain HTTP backend, in one run: `proxy tcp`
# with --tls-cert/--tls-key (and `proxy http` with them, when it takes them), nginx (stream
# module) and HAProxy (mode tcp), next to the backend itself without TLS: new handshakes per
# second, kept-alive HTTPS requests per second, bulk download Gbit/s over 1 and 8 streams,
# and each terminator's CPU, as ratios to the best terminator.
#
# Usage:
#   scripts/bench-tls.sh [--rounds N] [--secs S] [--bin PATH] [--out DIR] [--rsa]
#                        [--size MIB] [--workers N] [--conns C] [--threads T]
#                        [--hs-client auto|wrk|s_time] [--hs-clients N] [--streams N]
#                        [--no-http]
#
#   --rounds N       rounds, each running every test on every target (default 3); cells are
#                    medians over rounds, ratios against the best terminator of the same
#                    round (throughput: the highest; CPU: the lowest)
#   --secs S         seconds per run: each wrk and s_time run, and the limit of each
#                    download (default 5)
#   --bin PATH       the `proxy` binary (default: target/release/proxy, built with
#                    `cargo build --release` when missing)
#   --out DIR        results directory (default: a new /tmp/tls-bench.XXXXXX)
#   --rsa            an RSA-2048 certificate instead of ECDSA P-256
#   --size MIB       the large file's size in MiB (default 1024)
#   --workers N      nginx worker processes, HAProxy threads (nbthread) and proxy threads
#                    (--threads) of every terminator (default 1)
#   --conns C        wrk connections (default 50)
#   --threads T      wrk threads (default 2)
#   --hs-client C    the handshake client: wrk (`-H 'Connection: close'`), s_time (N
#                    parallel `openssl s_time -new -www /`), or auto (default): wrk unless a
#                    probe finds that wrk resumes sessions, s_time then
#   --hs-clients N   parallel s_time processes (default 4)
#   --streams N      parallel downloads of the multi-stream test (default 8)
#   --no-http        leave out `proxy http` with TLS
#
# Everything listens on 127.0.0.1 and is stopped on exit. The backend is nginx (one
# worker) serving `return 200 "ok\n"` at / and a file of --size MiB at /big from a tmpfs
# (/dev/shm); every terminator has the same certificate (self-signed, made with openssl at
# start, for localhost and 127.0.0.1) and forwards to it:
#   direct      the backend over plain HTTP, a reference without TLS;
#   proxy       `proxy tcp PORT BACKEND --listen 127.0.0.1 --tls-cert --tls-key --threads N`;
#   proxy-http  `proxy http ...` with the same flags (skipped, saying so, when it refuses
#               --tls-cert at start, or takes it and answers plain HTTP);
#   nginx       `stream { server { listen ... ssl; proxy_pass BACKEND; } }`, N workers;
#   haproxy     `mode tcp`, `bind ... ssl crt FILE`, nbthread N.
# TLS 1.2 and 1.3 only everywhere, the same TLS 1.3 suites in the same server-preferred order
# (AES-128-GCM first, as `proxy` prefers), each with its own session tickets and caches:
# the negotiated protocol, cipher and key exchange of each are printed.
# The tests, in each round one after the other, every target in turn:
#   handshakes/s  full handshakes, each carrying one request. wrk with `Connection: close`
#                 makes a connection per request, but wrk's OpenSSL may resume the session
#                 of the previous connection: a probe (wrk through an nginx that logs
#                 $ssl_session_reused) tells, and in auto mode s_time (`-new`: never a
#                 resumption, each `r` it prints would be one and counts as an error)
#                 measures instead (Debian 12's wrk 4.1.0 resumes nearly every session);
#                 direct: new plain connections/s (wrk, Connection: close) whichever
#                 client measures the others;
#   keep-alive    wrk -tT -cC over kept-alive HTTPS, GET / (3 bytes);
#   1-stream      one `curl -k` of /big, for at most S seconds: bytes / curl's time;
#   N-stream      N such curls at once: all their bytes / the wall time of the batch;
#   CPU           user + system time of the terminator (nginx: master and workers) from
#                 /proc/PID/stat around each run, per handshake, per request and per GiB.
# Every client run is wrapped in `timeout`. wrk, nginx and its stream module, HAProxy,
# curl, openssl and python3 are installed with apt-get when missing (sudo when not root).
# On a 2-core machine the clients, the terminator and the backend share the cores: nothing
# else should run meanwhile.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
SECS=5
BIN=""
OUT=""
KEY_TYPE=ecdsa
SIZE_MIB=1024
WORKERS=1
CONNS=50
THREADS=2
HS_CLIENT=auto
HS_CLIENTS=4
STREAMS=8
WITH_HTTP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --rsa) KEY_TYPE=rsa; shift ;;
    --size) SIZE_MIB="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --hs-client) HS_CLIENT="$2"; shift 2 ;;
    --hs-clients) HS_CLIENTS="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --no-http) WITH_HTTP=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for n in ROUNDS SECS SIZE_MIB WORKERS CONNS THREADS HS_CLIENTS STREAMS; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-tls.sh: ${n,,} must be a positive integer" >&2; exit 2; }
done
case "$HS_CLIENT" in auto|wrk|s_time) ;; *) echo "bench-tls.sh: --hs-client is auto, wrk or s_time" >&2; exit 2 ;; esac

export PATH="$PATH:/usr/sbin:/sbin"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
apt_install() { # PACKAGE
  command -v apt-get >/dev/null || return 0
  echo "==> installing $1" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null; }
}
need() { # PROGRAM PACKAGE
  command -v "$1" >/dev/null && return
  apt_install "$2"
  command -v "$1" >/dev/null || { echo "bench-tls.sh: $1 is missing (package $2)" >&2; exit 2; }
}
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need curl curl
need openssl openssl
need python3 python3
# nginx-light comes without the stream module (scripts/bench.sh installs it the same way).
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
[ -e "$STREAM_MODULE" ] || apt_install libnginx-mod-stream
[ -e "$STREAM_MODULE" ] || { echo "bench-tls.sh: no $STREAM_MODULE (package libnginx-mod-stream)" >&2; exit 2; }

if [ -z "$BIN" ]; then
  BIN="$PWD/target/release/proxy"
  [ -x "$BIN" ] || cargo build --release --locked -p proxy-cli
fi
[ -x "$BIN" ] || { echo "bench-tls.sh: no binary at $BIN" >&2; exit 2; }

OUT="${OUT:-$(mktemp -d /tmp/tls-bench.XXXXXX)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
chmod 755 "$OUT"
# The files the backend serves, in memory when /dev/shm is a tmpfs; removed on exit.
HTML="$(mktemp -d /dev/shm/tls-bench-html.XXXXXX 2>/dev/null || mktemp -d "$OUT/html.XXXXXX")"
chmod 755 "$HTML"
# Every server and client inherits the most descriptors allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PIDS=()
BATCH=()
cleanup() {
  for p in "${BATCH[@]}" "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BATCH[@]}" "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$HTML"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port the kernel had free on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Prints the logs of everything started so far, for a failure.
show_logs() {
  for f in "$OUT"/*.log "$OUT"/*/error.log; do
    [ -s "$f" ] && { echo "---- $f" >&2; tail -20 "$f" >&2; }
  done
  return 0
}

# Whether URL answers GET with the backend's "ok" within TRIES tenths of a second (at most
# one second a try); with a PID, gives up as soon as that process has exited.
answers() { # URL TRIES [PID]
  local url="$1" tries="$2" pid="${3:-}"
  for _ in $(seq "$tries"); do
    [ "$(curl -sk --max-time 1 "$url" | head -c 2)" = ok ] && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# Waits (at most 10 s) until URL answers; fails the run when it does not.
wait_ok() { # NAME URL [PID]
  answers "$2" 100 "${3:-}" && return 0
  echo "bench-tls.sh: $1 does not answer $2 with the backend's body" >&2
  show_logs
  exit 1
}

# ---- the certificate: one for every terminator ----
CERT="$OUT/cert.pem" KEY="$OUT/key.pem" COMBINED="$OUT/combined.pem"
case "$KEY_TYPE" in
  ecdsa) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) NEWKEY=(-newkey rsa:2048) ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$KEY" -out "$CERT" 2>"$OUT/openssl-req.log" \
  || { cat "$OUT/openssl-req.log" >&2; exit 1; }
cat "$CERT" "$KEY" >"$COMBINED"
chmod 644 "$CERT" "$KEY" "$COMBINED"

# ---- nginx: the backend, and the TLS terminator ----
# nginx in the foreground with a prefix of its own: NAME CONFIG_BODY; sets NAME_PID.
start_nginx() {
  local name="$1" body="$2" dir="$OUT/$1"
  mkdir -p "$dir"
  # nginx started as root runs its workers as nobody: they write their temp files here.
  chmod 777 "$dir"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$body
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 & PIDS+=($!)
  eval "${name^^}_PID=$!"
}

BACKEND_PORT="$(free_port)"
echo "==> a ${SIZE_MIB} MiB file in $HTML" >&2
head -c $((SIZE_MIB * 1048576)) /dev/zero >"$HTML/big"
chmod 644 "$HTML/big"
start_nginx backend "worker_processes 1;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $OUT/backend; proxy_temp_path $OUT/backend;
  fastcgi_temp_path $OUT/backend; uwsgi_temp_path $OUT/backend; scgi_temp_path $OUT/backend;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  sendfile on;
  server {
    listen 127.0.0.1:$BACKEND_PORT backlog=4096;
    root $HTML;
    location = / { default_type text/plain; return 200 \"ok\\n\"; }
    location = /big { default_type application/octet-stream; }
  }
}"
wait_ok backend "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID"

# Every terminator prefers the same TLS 1.3 suites in the same order as `proxy` does
# (AES-128-GCM first), so bulk figures compare relays, not ciphers.
TLS13_SUITES="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

# The measured server keeps no log; the probe's server logs whether each session was
# resumed, to tell whether wrk resumes.
NGINX_PORT="$(free_port)"
PROBE_PORT="$(free_port)"
start_nginx nginx "load_module $STREAM_MODULE;
worker_processes $WORKERS;
events { worker_connections 16384; multi_accept on; }
stream {
  log_format reused \"\$ssl_session_reused\";
  ssl_certificate $CERT;
  ssl_certificate_key $KEY;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_prefer_server_ciphers on;
  ssl_conf_command Ciphersuites $TLS13_SUITES;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl backlog=4096;
    access_log off;
    proxy_pass 127.0.0.1:$BACKEND_PORT;
  }
  server {
    listen 127.0.0.1:$PROBE_PORT ssl;
    access_log $OUT/nginx/probe.log reused;
    proxy_pass 127.0.0.1:$BACKEND_PORT;
  }
}"
wait_ok "nginx (stream, TLS)" "https://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"

# ---- HAProxy ----
HAPROXY_PORT="$(free_port)"
mkdir -p "$OUT/haproxy"
cat >"$OUT/haproxy/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-ciphersuites $TLS13_SUITES
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls
  bind 127.0.0.1:$HAPROXY_PORT ssl crt $COMBINED
  default_backend plain
backend plain
  server backend 127.0.0.1:$BACKEND_PORT
EOF
haproxy -db -f "$OUT/haproxy/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 & HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")
wait_ok haproxy "https://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID"

# ---- proxy ----
start_proxy() { # SUBCOMMAND PORT LOG; prints the pid
  "$BIN" "$1" "$2" "127.0.0.1:$BACKEND_PORT" --listen 127.0.0.1 --tls-cert "$CERT" --tls-key "$KEY" \
    --threads "$WORKERS" --log-level warn >"$3" 2>&1 & echo $!
}
PROXY_PORT="$(free_port)"
PROXY_PID="$(start_proxy tcp "$PROXY_PORT" "$OUT/proxy.log")"; PIDS+=("$PROXY_PID")
wait_ok "proxy tcp" "https://127.0.0.1:$PROXY_PORT/" "$PROXY_PID"

TARGETS=(direct proxy)
PROXY_HTTP_PORT="" PROXY_HTTP_PID=""
if [ "$WITH_HTTP" = 1 ]; then
  PROXY_HTTP_PORT="$(free_port)"
  PROXY_HTTP_PID="$(start_proxy http "$PROXY_HTTP_PORT" "$OUT/proxy-http.log")"; PIDS+=("$PROXY_HTTP_PID")
  if answers "https://127.0.0.1:$PROXY_HTTP_PORT/" 50 "$PROXY_HTTP_PID"; then
    TARGETS+=(proxy-http)
  else
    if ! kill -0 "$PROXY_HTTP_PID" 2>/dev/null; then
      why="it exited at start: $(grep -m1 -i -e error -e tls "$OUT/proxy-http.log" || head -1 "$OUT/proxy-http.log")"
    elif answers "http://127.0.0.1:$PROXY_HTTP_PORT/" 10; then
      why="it took --tls-cert yet answers plain HTTP: no TLS for \`proxy http\` in this build"
    else
      echo "bench-tls.sh: proxy http with TLS does not answer https://127.0.0.1:$PROXY_HTTP_PORT/" >&2
      show_logs
      exit 1
    fi
    echo "==> skipping proxy http with TLS ($why)" >&2
    kill "$PROXY_HTTP_PID" 2>/dev/null || true
    PROXY_HTTP_PID=""
  fi
fi
TARGETS+=(nginx haproxy)

port_of() { # TARGET
  case "$1" in
    direct) echo "$BACKEND_PORT" ;; proxy) echo "$PROXY_PORT" ;; proxy-http) echo "$PROXY_HTTP_PORT" ;;
    nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;;
  esac
}
pid_of() { # TARGET; none for direct
  case "$1" in
    proxy) echo "$PROXY_PID" ;; proxy-http) echo "$PROXY_HTTP_PID" ;;
    nginx) echo "$NGINX_PID" ;; haproxy) echo "$HAPROXY_PID" ;;
  esac
}
url_of() { # TARGET PATH
  if [ "$1" = direct ]; then echo "http://127.0.0.1:$(port_of "$1")$2"; else echo "https://127.0.0.1:$(port_of "$1")$2"; fi
}

# CPU ticks (user + system) of a process and of its children: nginx's master and workers.
cpu_ticks() { # PID
  local total=0 p
  [ -n "$1" ] || { echo 0; return; }
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] && total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}
TICK="$(getconf CLK_TCK)"
now() { date +%s.%N; }

# What each terminator negotiates with an OpenSSL client.
: >"$OUT/negotiated"
for t in "${TARGETS[@]}"; do
  [ "$t" = direct ] && continue
  s="$(timeout 10 openssl s_client -connect "127.0.0.1:$(port_of "$t")" </dev/null 2>&1 || true)"
  proto="$(sed -n 's/^New, \([^,]*\), Cipher is \(.*\)$/\1 \2/p' <<<"$s" | head -1)"
  temp="$(sed -n 's/^\(Server \|Peer \)\{0,1\}Temp Key: \(.*\)$/\2/p' <<<"$s" | head -1)"
  echo "$t: ${proto:-?}, key exchange ${temp:-?}" >>"$OUT/negotiated"
done

# Whether wrk resumes sessions: wrk with Connection: close through the probe server, whose
# log has one line per connection, "r" when it was resumed.
timeout 30 wrk -t1 -c1 -d1s -H "Connection: close" "https://127.0.0.1:$PROBE_PORT/" >"$OUT/wrk-probe.txt" 2>&1 || true
sleep 0.3
PROBE_ALL="$(grep -c . "$OUT/nginx/probe.log" 2>/dev/null || true)"
PROBE_REUSED="$(grep -c '^r$' "$OUT/nginx/probe.log" 2>/dev/null || true)"
PROBE_ALL="${PROBE_ALL:-0}" PROBE_REUSED="${PROBE_REUSED:-0}"
if [ "$PROBE_ALL" -eq 0 ]; then
  WRK_NOTE="the probe saw no connection: whether wrk resumes sessions is unknown"
  [ "$HS_CLIENT" = auto ] && HS_CLIENT=s_time
elif [ "$PROBE_REUSED" -gt 0 ]; then
  WRK_NOTE="wrk resumed $PROBE_REUSED of $PROBE_ALL sessions with Connection: close (nginx's \$ssl_session_reused)"
  [ "$HS_CLIENT" = auto ] && HS_CLIENT=s_time
else
  WRK_NOTE="wrk resumed none of $PROBE_ALL sessions with Connection: close (nginx's \$ssl_session_reused)"
  [ "$HS_CLIENT" = auto ] && HS_CLIENT=wrk
fi
echo "==> $WRK_NOTE: handshakes by $HS_CLIENT" >&2

# Results: lines "target test round value cpu_ticks units errors" in $OUT/results, where
# units is what the CPU is divided by (handshakes, requests, bytes).
record() { echo "$*" >>"$OUT/results"; }

# wrk: TARGET TEST ROUND [wrk args...]; TEST is ka (kept alive) or close.
run_wrk() {
  local target="$1" test="$2" round="$3" pid before after out header=()
  pid="$(pid_of "$target")"
  [ "$test" = close ] && header=(-H "Connection: close")
  before="$(cpu_ticks "$pid")"
  out="$(timeout $((SECS + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "${header[@]}" "$(url_of "$target" /)" 2>&1)" \
    || { echo "bench-tls.sh: wrk failed on $target:" >&2; echo "$out" >&2; show_logs; exit 1; }
  after="$(cpu_ticks "$pid")"
  echo "$out" >"$OUT/wrk.$target.$test.$round.txt"
  python3 - "$OUT/wrk.$target.$test.$round.txt" "$target" "$test" "$round" "$((after - before))" \
    >>"$OUT/results" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
target, test, rnd, ticks = sys.argv[2:]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
requests = int(re.search(r"(\d+) requests in", text).group(1))
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors += int(m.group(1)) if m else 0
print(target, "hs" if test == "close" else "ka", rnd, rps, ticks, requests, errors)
EOF
}

# s_time: HS_CLIENTS processes at once, each `-new` for SECS+1 seconds (its clock counts
# whole seconds: it runs between SECS and SECS+1); connections / the batch's wall time.
run_s_time() { # TARGET ROUND
  local target="$1" round="$2" pid before after t0 t1 i
  pid="$(pid_of "$target")"
  before="$(cpu_ticks "$pid")"
  t0="$(now)"
  BATCH=()
  for i in $(seq "$HS_CLIENTS"); do
    timeout $((SECS + 30)) openssl s_time -connect "127.0.0.1:$(port_of "$target")" -new -www / \
      -time $((SECS + 1)) >"$OUT/s_time.$target.$round.$i.txt" 2>&1 & BATCH+=($!)
  done
  for p in "${BATCH[@]}"; do wait "$p" || true; done
  BATCH=()
  t1="$(now)"
  after="$(cpu_ticks "$pid")"
  python3 - "$target" "$round" "$((after - before))" "$t0" "$t1" "$OUT/s_time.$target.$round".*.txt \
    >>"$OUT/results" <<'EOF'
import re, sys
target, rnd, ticks, t0, t1, *files = sys.argv[1:]
conns = errors = 0
for f in files:
    text = open(f, errors="replace").read()
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", text)
    if not m:
        errors += 1
        continue
    conns += int(m.group(1))
    # One character per connection ("*" a new TLS session, "r" a resumed one) on lines
    # of their own before the summary.
    errors += sum(l.count("r") for l in text.splitlines() if re.fullmatch(r"[*rt3]+", l))
print(target, "hs", rnd, conns / (float(t1) - float(t0)), ticks, conns, errors)
EOF
}

# curl downloads of /big: TARGET TEST ROUND N; N at once, each for at most SECS seconds.
run_curl() {
  local target="$1" test="$2" round="$3" n="$4" pid before after t0 t1 i
  pid="$(pid_of "$target")"
  before="$(cpu_ticks "$pid")"
  t0="$(now)"
  BATCH=()
  for i in $(seq "$n"); do
    # Exit 28: the time limit cut the download, whose bytes and time still count.
    { rc=0
      timeout $((SECS + 30)) curl -sk -o /dev/null --max-time "$SECS" \
        -w '%{size_download} %{time_total} %{http_code}' "$(url_of "$target" /big)" || rc=$?
      echo " $rc"; } >"$OUT/curl.$target.$test.$round.$i.txt" 2>&1 & BATCH+=($!)
  done
  for p in "${BATCH[@]}"; do wait "$p" || true; done
  BATCH=()
  t1="$(now)"
  after="$(cpu_ticks "$pid")"
  python3 - "$target" "$test" "$round" "$((after - before))" "$t0" "$t1" "$OUT/curl.$target.$test.$round".*.txt \
    >>"$OUT/results" <<'EOF'
import sys
target, test, rnd, ticks, t0, t1, *files = sys.argv[1:]
size = errors = 0
times = []
for f in files:
    parts = open(f).read().split()
    if len(parts) != 4 or parts[2] != "200" or parts[3] not in ("0", "28"):
        errors += 1
        continue
    size += int(parts[0])
    times.append(float(parts[1]))
# One stream: curl's own time; several: the batch's wall time.
secs = times[0] if len(files) == 1 and times else float(t1) - float(t0)
print(target, test, rnd, size * 8 / secs / 1e9 if secs > 0 else 0.0, ticks, size, errors)
EOF
}

echo "==> $ROUNDS rounds of ${SECS}s per run; ${KEY_TYPE^^} certificate; $WORKERS worker(s)/thread(s) per terminator" >&2
: >"$OUT/results"
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    if [ "$HS_CLIENT" = wrk ] || [ "$t" = direct ]; then run_wrk "$t" close "$round"; else run_s_time "$t" "$round"; fi
  done
  for t in "${TARGETS[@]}"; do run_wrk "$t" ka "$round"; done
  for t in "${TARGETS[@]}"; do run_curl "$t" bulk1 "$round" 1; done
  for t in "${TARGETS[@]}"; do run_curl "$t" bulkn "$round" "$STREAMS"; done
  echo "    round $round done" >&2
done
for t in "${TARGETS[@]}"; do
  p="$(pid_of "$t")"
  [ -z "$p" ] || kill -0 "$p" 2>/dev/null || { echo "bench-tls.sh: $t died" >&2; show_logs; exit 1; }
done

{
  echo "$ROUNDS rounds of ${SECS}s; medians; ${KEY_TYPE^^} certificate; $WORKERS nginx worker(s) = HAProxy nbthread = proxy --threads"
  echo "handshakes: $HS_CLIENT ($( [ "$HS_CLIENT" = wrk ] && echo "-t$THREADS -c$CONNS, Connection: close" || echo "$HS_CLIENTS parallel \`openssl s_time -new -www /\`")); $WRK_NOTE"
  echo "direct: the backend over plain HTTP, its handshakes/s cell new TCP connections/s (wrk, Connection: close)"
  echo "keep-alive: wrk -t$THREADS -c$CONNS; bulk: curl -k of a ${SIZE_MIB} MiB file, 1 and $STREAMS at once, each cut at ${SECS}s"
  sed 's/^/negotiated: /' "$OUT/negotiated"
  echo
  python3 - "$OUT/results" "$TICK" "$STREAMS" "${TARGETS[@]}" <<'EOF'
import statistics, sys
path, tick, streams, *targets = sys.argv[1:]
tick = float(tick)
by, errors = {}, {}
for line in open(path):
    target, test, rnd, value, ticks, units, errs = line.split()
    by[(target, test, rnd)] = (float(value), int(ticks) / tick, float(units))
    errors[target] = errors.get(target, 0) + int(errs)
rounds = sorted({k[2] for k in by})
peers = [t for t in targets if t != "direct"]
med = lambda xs: statistics.median(xs) if xs else float("nan")
tests = ["hs", "ka", "bulk1", "bulkn"]

def throughput(t, test):
    return [by[(t, test, r)][0] for r in rounds if (t, test, r) in by]

# CPU per unit: µs per handshake or request, s per GiB.
scale = {"hs": 1e6, "ka": 1e6, "bulk1": 2**30, "bulkn": 2**30}
def cpu(t, test, r):
    v = by.get((t, test, r))
    if v is None or v[2] == 0:
        return None
    return v[1] / v[2] * scale[test]

def ratio(t, test, value_of, best):
    out = []
    for r in rounds:
        vals = {p: value_of(p, test, r) for p in peers}
        vals = {p: v for p, v in vals.items() if v is not None}
        if t in vals and vals:
            b = best(vals.values())
            out.append(vals[t] / b if b else float("nan"))
    return med(out)

fmt = {"hs": "{:.0f}", "ka": "{:.0f}", "bulk1": "{:.2f}", "bulkn": "{:.2f}"}
print("Throughput; ratios to the best terminator of the same round (1.00× is the best)\n")
print(f"| target | handshakes/s | ratio | keep-alive req/s | ratio | 1-stream Gbit/s | ratio "
      f"| {streams}-stream Gbit/s | ratio | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
tp = lambda t, test, r: by[(t, test, r)][0] if (t, test, r) in by else None
for t in targets:
    cells = []
    for test in tests:
        cells.append(fmt[test].format(med(throughput(t, test))))
        cells.append("–" if t == "direct" else f"{ratio(t, test, tp, max):.2f}×")
    print(f"| {t} | {' | '.join(cells)} | {errors.get(t, 0)} |")

print("\nCPU of the terminator (user + system; nginx: master and workers); "
      "ratios to the lowest of the same round\n")
print(f"| target | CPU s per round | µs/handshake | ratio | µs/keep-alive req | ratio "
      f"| s/GiB 1-stream | ratio | s/GiB {streams}-stream | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in peers:
    total = med([sum(by[(t, test, r)][1] for test in tests if (t, test, r) in by) for r in rounds])
    cells = [f"{total:.2f}"]
    for test in tests:
        vals = [v for v in (cpu(t, test, r) for r in rounds) if v is not None]
        cells.append("{:.1f}".format(med(vals)) if test in ("hs", "ka") else "{:.3f}".format(med(vals)))
        cells.append(f"{ratio(t, test, cpu, min):.2f}×")
    print(f"| {t} | {' | '.join(cells)} |")
EOF
  echo
  echo "machine: $(nproc) x$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(uname -r)"
  echo "proxy: $("$BIN" --version 2>/dev/null || echo "$BIN"); $(nginx -v 2>&1); $(haproxy -v 2>&1 | head -1)"
  echo "clients: $(wrk -v 2>&1 | head -1); $(curl --version | head -1); $(openssl version)"
  echo "raw: $OUT"
} | tee "$OUT/summary.md"
