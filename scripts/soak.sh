#!/usr/bin/env bash
# The soak of `proxy run` (not run by CI or scripts/test.sh): SOAK_SECS (default 600) of
# mixed TCP and UDP traffic through `proxy run --config FILE`, with the file rewritten and
# SIGHUP sent every RELOAD_SECS (default 60). It reports byte errors (must be 0), the
# proxy's RSS after a warm-up and at the end of the load (must be flat), and its open
# descriptors before the load and after it (must be back where they started).
#
# What runs (all on loopback; `proxy-cli/examples/soak_load.rs` is the load, built here):
#   - `soak_load serve`: a TCP echo server and a UDP echo server on one port of
#     SOAK_ECHO_IP (default 127.0.0.3);
#   - `proxy run --config` (the release build) with four forwards on SOAK_PROXY_IP
#     (default 127.0.0.2) to it: `tcp-a` (tcp), `tcp-b` (tcp), `udp-a` (udp) and `both`
#     (tcp,udp); the access log is off (RUST_LOG=info,proxy_core::access=warn);
#   - `soak_load load`: TCP_CLIENTS (24) TCP clients on tcp-a, tcp-b and both, each
#     connection 1 to 100 exchanges of 1 B to 256 KiB, every echoed byte checked, then a
#     FIN (90 %) or a reset (10 %); UDP_CLIENTS (8) UDP clients on udp-a and both, each up
#     to UDP_RATE (250) datagrams/s of 0 B to 60,000 B, a new source port (a new proxy
#     session) every 100 to 1,000 datagrams, every reply checked byte for byte.
#   - Every RELOAD_SECS the file alternates between two versions and the proxy gets SIGHUP:
#     a forward the load does not use (`spare`, tcp,udp) is added or removed, and settings
#     of used forwards change (tcp-a idle_timeout 60s/90s, tcp-b relay auto/copy, udp-a
#     udp_idle_timeout 5s/10s and max_sessions 4096/2048, both half_close_timeout
#     30s/60s). Each reload must log `reloaded` within 10 s (there is no reload metric), and
#     with `spare` in the file /metrics must show it.
#   - Every 10 s: the proxy's VmRSS and open descriptors (/proc/PID), and from /metrics its
#     open TCP connections and UDP sessions.
#
# Pass/fail (exit 1 on any):
#   - byte errors > 0: a TCP echo that differs or ends early without a reset, data after
#     the last echo, a UDP reply that differs from what was sent;
#   - connection errors > 0 (failed connects, resets the client did not ask for, stalls);
#     UDP loss is allowed and reported apart;
#   - a reload without its `reloaded` line, or a `reload rejected` / `cannot apply` line;
#   - RSS: "start" is sampled once WARMUP_SECS (default 60, at most a quarter of the run)
#     of load have passed, when the buffer and pipe pools, the session tables and the
#     allocator's arenas have grown to what this load needs; "end" is the last sample
#     under load. End may exceed start by at most max(RSS_TOLERANCE_PCT (10) %,
#     RSS_TOLERANCE_KIB (5120) KiB). The slope over the samples after warm-up is printed
#     too, for leaks too slow for that bound.
#   - descriptors: counted before the load (the proxy idle, the file's first version);
#     after the load the first version is applied again and the count must come back to
#     that within FD_SETTLE_SECS (default 30: UDP sessions end after 10 s idle, removed
#     forwards drain for 5 s).
#
# Why not 127.0.0.1: each closed connection leaves 60 s of TIME_WAIT on an ephemeral port
# of the side that closed first, and other tests on the machine that bind 127.0.0.1:PORT
# fail with EADDRINUSE on such ports. The proxy's upstream connections go from
# SOAK_ECHO_IP to SOAK_ECHO_IP (Linux uses a local destination as the source), the
# clients' from SOAK_PROXY_IP, so none of it lands on 127.0.0.1.
#
# Usage: scripts/soak.sh                          (10 minutes, a reload every minute)
#        SOAK_SECS=120 RELOAD_SECS=20 scripts/soak.sh
# Needs: cargo, curl, Linux /proc. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# The rest is one block, read whole before it runs: editing this file during a run (which
# lasts minutes) does not change the run.
{

SOAK_SECS=${SOAK_SECS:-600}
RELOAD_SECS=${RELOAD_SECS:-60}
SAMPLE_SECS=${SAMPLE_SECS:-10}
default_warmup=$((SOAK_SECS / 4 < 60 ? SOAK_SECS / 4 : 60))
WARMUP_SECS=${WARMUP_SECS:-$default_warmup}
RSS_TOLERANCE_PCT=${RSS_TOLERANCE_PCT:-10}
RSS_TOLERANCE_KIB=${RSS_TOLERANCE_KIB:-5120}
FD_SETTLE_SECS=${FD_SETTLE_SECS:-30}
TCP_CLIENTS=${TCP_CLIENTS:-24}
UDP_CLIENTS=${UDP_CLIENTS:-8}
UDP_RATE=${UDP_RATE:-250}
SOAK_PROXY_IP=${SOAK_PROXY_IP:-127.0.0.2}
SOAK_ECHO_IP=${SOAK_ECHO_IP:-127.0.0.3}
SEED=${SEED:-$(date +%s)}

command -v curl >/dev/null || { echo "soak: curl is needed (apt-get install curl)" >&2; exit 2; }
[ "$SOAK_SECS" -gt "$WARMUP_SECS" ] || { echo "soak: SOAK_SECS must exceed WARMUP_SECS" >&2; exit 2; }

target_dir=${CARGO_TARGET_DIR:-target}
echo "==> building the release binary and the load (cargo build --release -p proxy-cli)"
cargo build --release --locked -p proxy-cli --bin proxy --example soak_load
proxy_bin=$target_dir/release/proxy
load_bin=$target_dir/release/examples/soak_load

work=$(mktemp -d "${TMPDIR:-/tmp}/proxy-soak.XXXXXX")
config=$work/proxy.toml
proxy_log=$work/proxy.log
samples=$work/samples
summary=$work/load.summary
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# ---- echo servers and ports --------------------------------------------------------------
"$load_bin" serve --ip "$SOAK_ECHO_IP" >"$work/echo.out" 2>"$work/echo.err" &
echo_pid=$!
pids+=("$echo_pid")
for _ in $(seq 50); do
  grep -q '^echo ' "$work/echo.out" && break
  sleep 0.1
done
echo_addr=$(sed -n 's/^echo //p' "$work/echo.out")
[ -n "$echo_addr" ] || { echo "soak: the echo servers did not start: $(cat "$work/echo.err")" >&2; exit 1; }
mapfile -t ports < <("$load_bin" ports --ip "$SOAK_PROXY_IP" 5)
admin_port=$("$load_bin" ports --ip 127.0.0.1 1)
admin=127.0.0.1:$admin_port
tcp_a=$SOAK_PROXY_IP:${ports[0]}
tcp_b=$SOAK_PROXY_IP:${ports[1]}
udp_a=$SOAK_PROXY_IP:${ports[2]}
both=$SOAK_PROXY_IP:${ports[3]}
spare=$SOAK_PROXY_IP:${ports[4]}

# write_config VERSION: version 0 is the first (no `spare`), version 1 the other.
write_config() {
  local v=$1 idle relay udp_idle sessions half_close
  if [ "$v" -eq 0 ]; then
    idle=60s relay=auto udp_idle=5s sessions=4096 half_close=30s
  else
    idle=90s relay=copy udp_idle=10s sessions=2048 half_close=60s
  fi
  cat >"$config.new" <<EOF
# scripts/soak.sh, version $v
admin = "$admin"

[defaults]
connect_timeout = "2s"
drain = "5s"

[[forward]]
name = "tcp-a"
protocol = "tcp"
listen = "$tcp_a"
target = "$echo_addr"
idle_timeout = "$idle"

[[forward]]
name = "tcp-b"
protocol = "tcp"
listen = "$tcp_b"
target = "$echo_addr"
relay = "$relay"

[[forward]]
name = "udp-a"
protocol = "udp"
listen = "$udp_a"
target = "$echo_addr"
udp_idle_timeout = "$udp_idle"
max_sessions = $sessions

[[forward]]
name = "both"
protocol = "tcp,udp"
listen = "$both"
target = "$echo_addr"
udp_idle_timeout = "10s"
half_close_timeout = "$half_close"
EOF
  if [ "$v" -eq 1 ]; then
    cat >>"$config.new" <<EOF

[[forward]]
name = "spare"
protocol = "tcp,udp"
listen = "$spare"
target = "$echo_addr"
EOF
  fi
  mv "$config.new" "$config" # whole, so a reload never reads half a file
}

# ---- the proxy ---------------------------------------------------------------------------
write_config 0
version=0
RUST_LOG=info,proxy_core::access=warn "$proxy_bin" run --config "$config" 2>"$proxy_log" &
proxy_pid=$!
pids+=("$proxy_pid")
ready=""
for _ in $(seq 100); do
  if curl -fsS "http://$admin/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$proxy_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "soak: the proxy did not get ready:" >&2; cat "$proxy_log" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status"; }
fds() { find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
metric_sum() { # NAME [LABEL-FILTER]: the sum of a metric's samples
  curl -fsS "http://$admin/metrics" | awk -v name="$1" -v filter="${2:-}" \
    'index($0, name "{") == 1 && index($0, filter) { s += $NF } END { printf "%.0f\n", s }'
}
fd_kinds() { # e.g. "8 socket 6 pipe 3 anon_inode"
  find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 -exec readlink {} + 2>/dev/null \
    | sed -E 's/:.*//; s|^/.*|file|' | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }'
}
udp_overflows() { # receive and send buffer overflows of every UDP socket in this namespace
  awk '/^Udp:/ { if (seen) print $6 + $7; seen = 1 }' /proc/net/snmp
}
reloads() { grep -c 'proxy_cli::run: reloaded' "$proxy_log" || true; }
reload_failures() { grep -cE 'reload rejected|cannot apply the new settings' "$proxy_log" || true; }

sleep 1
fd_start=$(fds)
fd_start_kinds=$(fd_kinds)
rss_idle=$(rss_kib)
echo "==> proxy pid $proxy_pid on $SOAK_PROXY_IP (tcp-a ${ports[0]}, tcp-b ${ports[1]}, udp-a ${ports[2]}, both ${ports[3]}, spare ${ports[4]}), admin $admin; echo servers $echo_addr"
echo "==> idle: RSS $rss_idle KiB, $fd_start descriptors; load for ${SOAK_SECS}s, reload every ${RELOAD_SECS}s, warm-up ${WARMUP_SECS}s, seed $SEED; files in $work"

# ---- the load, samples and reloads -------------------------------------------------------
"$load_bin" load --tcp "$tcp_a,$tcp_b,$both" --udp "$udp_a,$both" --secs "$SOAK_SECS" \
  --tcp-clients "$TCP_CLIENTS" --udp-clients "$UDP_CLIENTS" --udp-rate "$UDP_RATE" \
  --seed "$SEED" --summary "$summary" >"$work/load.out" 2>"$work/load.err" &
load_pid=$!
pids+=("$load_pid")
t0=$(date +%s)
udp_overflows_start=$(udp_overflows)
printf '%6s %10s %6s %6s %9s\n' secs rss_kib fds tcp udp_sess >"$samples"
sample() {
  local t=$1
  printf '%6d %10d %6d %6d %9d\n' "$t" "$(rss_kib)" "$(fds)" \
    "$(metric_sum proxy_connections_open)" "$(metric_sum proxy_udp_sessions_open)" >>"$samples"
  tail -1 "$samples"
}
echo "==> samples every ${SAMPLE_SECS}s (RSS, descriptors, open TCP connections, open UDP sessions)"
head -1 "$samples"
next_sample=$SAMPLE_SECS
next_reload=$RELOAD_SECS
reload_count=0
reload_missing=0
spare_missing=0
rss_start="" rss_start_at=""
proxy_died=""
while kill -0 "$load_pid" 2>/dev/null; do
  sleep 1
  t=$(($(date +%s) - t0))
  if ! kill -0 "$proxy_pid" 2>/dev/null; then proxy_died=1; break; fi
  if [ "$t" -gt $((SOAK_SECS + 120)) ]; then
    echo "soak: the load did not end in time; stopping it" >&2
    kill "$load_pid" 2>/dev/null || true
    break
  fi
  # Reloads only while the load runs, none in its last seconds, so the end is steady.
  if [ "$t" -ge "$next_reload" ] && [ "$t" -lt $((SOAK_SECS - 5)) ]; then
    next_reload=$((next_reload + RELOAD_SECS))
    version=$((1 - version))
    write_config "$version"
    before=$(reloads)
    kill -HUP "$proxy_pid"
    reload_count=$((reload_count + 1))
    ok=""
    for _ in $(seq 100); do
      [ "$(reloads)" -gt "$before" ] && { ok=1; break; }
      sleep 0.1
    done
    if [ -z "$ok" ]; then
      reload_missing=$((reload_missing + 1))
      echo "  reload $reload_count at ${t}s (version $version): NO 'reloaded' line within 10 s"
    elif [ "$version" -eq 1 ] && [[ "$(curl -fsS "http://$admin/metrics")" != *'forward="spare"'* ]]; then
      spare_missing=$((spare_missing + 1))
      echo "  reload $reload_count at ${t}s (version $version): reloaded, but /metrics has no forward=\"spare\""
    else
      echo "  reload $reload_count at ${t}s: version $version applied ($([ "$version" -eq 1 ] && echo "spare added" || echo "spare removed"))"
    fi
  fi
  if [ "$t" -ge "$next_sample" ]; then
    next_sample=$((next_sample + SAMPLE_SECS))
    sample "$t"
    if [ -z "$rss_start" ] && [ "$t" -ge "$WARMUP_SECS" ]; then
      rss_start=$(tail -1 "$samples" | awk '{print $2}')
      rss_start_at=$t
    fi
  fi
done
load_status=0
wait "$load_pid" || load_status=$?
udp_overflows_end=$(udp_overflows)
t_end=$(($(date +%s) - t0))
if [ -z "$proxy_died" ] && kill -0 "$proxy_pid" 2>/dev/null; then
  # The last sample under load is the end of the run.
  rss_end_line=$(tail -1 "$samples")
  rss_end=$(echo "$rss_end_line" | awk '{print $2}')
  rss_end_at=$(echo "$rss_end_line" | awk '{print $1}')
else
  proxy_died=1
fi

# ---- after the load ----------------------------------------------------------------------
fail=()
if [ -n "$proxy_died" ]; then
  echo "soak: the proxy exited during the load:" >&2
  tail -20 "$proxy_log" >&2
  exit 1
fi
# Connections end with the load; UDP sessions after their idle timeout (10 s at most).
settle_start=$(date +%s)
while [ "$(metric_sum proxy_connections_open)" -gt 0 ] || [ "$(metric_sum proxy_udp_sessions_open)" -gt 0 ]; do
  [ $(($(date +%s) - settle_start)) -lt "$FD_SETTLE_SECS" ] || break
  sleep 1
done
quiet_in=$(($(date +%s) - settle_start))
# With nothing open, what is left is the listeners, the runtime's and the pools: each TCP
# forward keeps up to 128 idle pipes (2 descriptors each) for its next splices.
fd_quiet=$(fds)
fd_quiet_kinds=$(fd_kinds)
# A reload (to the first version, always) gives every forward fresh pools; the old ones
# close with the last connection that used them, so the count must fall to the start.
write_config 0
version=0
before=$(reloads)
kill -HUP "$proxy_pid"
for _ in $(seq 100); do [ "$(reloads)" -gt "$before" ] && break; sleep 0.1; done
[ "$(reloads)" -gt "$before" ] || reload_missing=$((reload_missing + 1))
echo "==> load over at ${t_end}s; nothing open ${quiet_in}s later; the first version of the file reloaded"
settle_start=$(date +%s)
fd_end=$(fds)
while [ "$fd_end" -gt "$fd_start" ] && [ $(($(date +%s) - settle_start)) -lt "$FD_SETTLE_SECS" ]; do
  sleep 1
  fd_end=$(fds)
done
settled_in=$(($(date +%s) - settle_start))
fd_end_kinds=$(fd_kinds)
open_tcp=$(metric_sum proxy_connections_open)
open_udp=$(metric_sum proxy_udp_sessions_open)
proxy_conns=$(metric_sum proxy_connections_total)
proxy_up=$(metric_sum proxy_bytes_total 'direction="upstream"')
proxy_down=$(metric_sum proxy_bytes_total 'direction="downstream"')
proxy_dgrams_up=$(metric_sum proxy_udp_datagrams_total 'direction="upstream"')
proxy_dgrams_down=$(metric_sum proxy_udp_datagrams_total 'direction="downstream"')
proxy_udp_sessions=$(metric_sum proxy_udp_sessions_total)
proxy_udp_dropped=$(metric_sum proxy_udp_dropped_total)
proxy_splice_fallbacks=$(metric_sum proxy_splice_fallbacks_total)
proxy_spliced=$(metric_sum proxy_bytes_spliced_total)
proxy_accept_errors=$(metric_sum proxy_accept_errors_total)
rss_after=$(rss_kib)
kill -TERM "$proxy_pid"
proxy_status=0
wait "$proxy_pid" || proxy_status=$?

if [ ! -s "$summary" ]; then
  echo "soak: the load ended without a summary (exit $load_status):" >&2
  tail -20 "$work/load.err" >&2
  exit 1
fi
declare -A load
while IFS='=' read -r key value; do
  [ -n "$key" ] && load[$key]=$value
done <"${summary}"

warnings=$(grep -cE ' (WARN|ERROR) ' "$proxy_log" || true)
echo
echo "==> soak summary (${SOAK_SECS}s of load, seed $SEED)"
echo "load:"
echo "  TCP: ${load[tcp_connections]} connections (${load[tcp_clean_closes]} closed with a FIN, ${load[tcp_client_aborts]} reset by the client), ${load[tcp_exchanges]} exchanges, ${load[tcp_bytes_echoed]} bytes echoed and checked"
echo "  UDP: ${load[udp_sessions]} client sockets (sessions), ${load[udp_sent]} datagrams sent, ${load[udp_received]} received, ${load[udp_lost]} lost, ${load[udp_late]} late, ${load[udp_duplicates]} duplicated, ${load[udp_bytes_echoed]} bytes echoed and checked"
echo "  byte errors: ${load[byte_errors]} (TCP echoes that differed ${load[tcp_mismatches]}, cut short without a reset ${load[tcp_cut_short]}; UDP replies that differed ${load[udp_corrupt]})"
echo "  connection errors: ${load[connection_errors]} (connect failures ${load[tcp_connect_failures]}, resets ${load[tcp_resets]}, stalls ${load[tcp_timeouts]}, other ${load[tcp_other_errors]}); UDP socket errors ${load[udp_socket_errors]}"
echo "proxy (/metrics):"
echo "  $proxy_conns TCP connections, $proxy_up bytes up, $proxy_down bytes down ($proxy_spliced spliced, $proxy_splice_fallbacks splice fallbacks), $proxy_accept_errors accept errors"
echo "  $proxy_udp_sessions UDP sessions, $proxy_dgrams_up datagrams up, $proxy_dgrams_down down, $proxy_udp_dropped dropped"
echo "  UDP socket buffer overflows during the load, every process of this network namespace (/proc/net/snmp): $((udp_overflows_end - udp_overflows_start))"
echo "  after the load: $open_tcp TCP connections and $open_udp UDP sessions open"
echo "  reloads: $reload_count sent, $(reloads) 'reloaded' lines, $reload_missing missing, $(reload_failures) rejected or not applied, $spare_missing without spare in /metrics"
echo "  log: $warnings WARN/ERROR lines"
grep -E ' (WARN|ERROR) ' "$proxy_log" | head -5 | sed 's/^/    /' || true
echo "  exit on SIGTERM: $proxy_status"
slope=$(awk -v from="$WARMUP_SECS" 'NR > 1 && $1 >= from { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2 }
  END { d = n * sxx - sx * sx; if (n > 2 && d > 0) printf "%.1f", (n * sxy - sx * sy) / d * 60; else print "n/a" }' "$samples")
growth=$((rss_end - rss_start))
allowed=$((rss_start * RSS_TOLERANCE_PCT / 100))
[ "$allowed" -ge "$RSS_TOLERANCE_KIB" ] || allowed=$RSS_TOLERANCE_KIB
echo "RSS: idle $rss_idle KiB; start $rss_start KiB (at ${rss_start_at}s, after the warm-up); end $rss_end KiB (at ${rss_end_at}s); growth $growth KiB (allowed $allowed KiB); slope after warm-up $slope KiB/min; $rss_after KiB after the load"
echo "descriptors: $fd_start before the load ($fd_start_kinds); $(awk 'NR > 1 && $3 > m { m = $3 } END { print m }' "$samples") at most during it; $fd_quiet once nothing was open ($fd_quiet_kinds); $fd_end ${settled_in}s after the final reload ($fd_end_kinds)"

[ "${load[byte_errors]}" -eq 0 ] || fail+=("${load[byte_errors]} byte errors")
[ "${load[connection_errors]}" -eq 0 ] || fail+=("${load[connection_errors]} connection errors")
[ "$load_status" -eq 0 ] || [ "${load[byte_errors]}" -ne 0 ] || fail+=("the load exited with $load_status")
[ "$growth" -le "$allowed" ] || fail+=("RSS grew by $growth KiB, more than $allowed KiB")
[ "$fd_end" -le "$fd_start" ] || fail+=("$fd_end descriptors after the load and a reload, $fd_start before")
[ "$reload_missing" -eq 0 ] && [ "$(reload_failures)" -eq 0 ] && [ "$spare_missing" -eq 0 ] \
  || fail+=("reloads failed")
[ "$proxy_status" -eq 0 ] || fail+=("the proxy exited with $proxy_status on SIGTERM")
if [ ${#fail[@]} -gt 0 ]; then
  printf 'soak: FAILED: %s\n' "${fail[@]}"
  if [ "$growth" -gt "$allowed" ] && [ -z "${MALLOC_MMAP_THRESHOLD_:-}" ]; then
    echo "  (to tell a leak from glibc keeping freed memory, run again with" \
      "MALLOC_MMAP_THRESHOLD_=131072, which stops malloc from raising its mmap threshold)"
  fi
  echo "files kept in $work"
  trap - EXIT
  cleanup
  exit 1
fi
echo "soak: PASSED"
rm -rf "$work"
exit 0
}
