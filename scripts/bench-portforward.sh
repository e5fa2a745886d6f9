#!/usr/bin/env bash
# bench-portforward.sh - port-forward clients (`kubectl port-forward`, `proxy forward`)
# through `proxy port-forward-server`, against direct loopback, in one run: iperf3 TCP
# (1 stream), netperf TCP_RR and TCP_CRR, as ratios to direct, with the CPU seconds per GB
# moved of the client and of the server.
#
# Usage:
#   scripts/bench-portforward.sh [--rounds N] [--secs S] [--kubectl PATH] [--modes LIST]
#   scripts/bench-portforward.sh --clients [--rounds N] [--secs S] [--kubectl PATH]
#
#   --rounds N      rounds, each running every mode after a direct run (default 3); cells are
#                   medians over rounds, ratios against the direct run of the same round
#   --secs S        seconds per iperf3 and netperf run (default 5)
#   --kubectl PATH  the kubectl (default: the newest kubectl.1.NN beside `kubectl`, else kubectl)
#   --modes LIST    comma list of clients (default spdy,tunnel):
#                     spdy, tunnel    kubectl with SPDY/3.1, or SPDY over WebSocket (1.31+)
#                     kubectl         kubectl with its default protocol (tunnel for 1.31+)
#                     proxy           `proxy forward` with --protocol auto
#                     proxy-spdy, proxy-tunnel, proxy-websocket
#                                     `proxy forward` with --protocol spdy, spdy-websocket,
#                                     websocket
#   --clients       kubectl against `proxy forward`: --modes kubectl,proxy,proxy-spdy
#
# The "pod" is a network namespace the script makes, with iperf3 and netserver on its
# loopback; the server reaches it as `netns:/run/netns/NAME`, as a kubelet's runtime enters a
# pod. "direct" runs the clients inside that namespace, on the same loopback. Every client
# gets the same server, the same ports and the same load, one after the other in each round;
# TCP_CRR opens a connection per transaction (one new stream of the client's session). Needs root
# (namespaces), iperf3, netperf and netserver (installed with apt-get when missing). Every
# client run is wrapped in `timeout`.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
SECS=5
KUBECTL=""
MODES="spdy,tunnel"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --kubectl) KUBECTL="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    --clients) MODES="kubectl,proxy,proxy-spdy"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-portforward.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

need() {
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    case "$1" in
      netperf|netserver)
        # netperf lives in Debian's non-free component.
        if ! apt-cache policy netperf 2>/dev/null | grep -q Candidate:.*[0-9]; then
          sed -i 's/^Components: main$/Components: main non-free/' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
          apt-get update -qq
        fi
        apt-get install -y -qq netperf >/dev/null ;;
      *) apt-get install -y -qq "$1" >/dev/null ;;
    esac
  fi
  command -v "$1" >/dev/null || { echo "bench-portforward.sh: $1 is missing" >&2; exit 2; }
}
for t in iperf3 netperf netserver python3; do need "$t"; done

if [ -z "$KUBECTL" ]; then
  dir="$(dirname "$(readlink -f "$(command -v kubectl || echo /usr/bin/kubectl)")")"
  for d in "$dir" /usr/lib/google-cloud-sdk/bin; do
    KUBECTL="$(ls "$d"/kubectl.1.* 2>/dev/null | sort -V | tail -1 || true)"
    [ -n "$KUBECTL" ] && break
  done
  KUBECTL="${KUBECTL:-$(command -v kubectl)}"
fi
[ -x "$KUBECTL" ] || { echo "bench-portforward.sh: no kubectl found (--kubectl)" >&2; exit 2; }

cargo build --release --locked -p proxy-cli
BIN="$PWD/target/release/proxy"
WORK="$(mktemp -d /tmp/pf-bench.XXXXXX)"
PIDS=()
NS=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$NS" ]; then sleep 0.2; ip netns del "$NS" 2>/dev/null || true; fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-portforward.sh: needs root for a network namespace" >&2; exit 2; }
NS="pfbench-$$"
ip netns add "$NS"
ip -n "$NS" link set lo up
# netperf resolves 127.0.0.1 with AI_ADDRCONFIG, which finds no IPv4 in a namespace with
# only 127.0.0.1: give the loopback a documentation address too (nothing is sent to it).
ip -n "$NS" addr add 192.0.2.1/32 dev lo
IN_POD=(ip netns exec "$NS")
IPERF_PORT=25301 NETSERVER_PORT=25302 NETDATA_PORT=25303
"${IN_POD[@]}" iperf3 -s -p "$IPERF_PORT" >/dev/null 2>&1 & PIDS+=($!)
"${IN_POD[@]}" netserver -4 -p "$NETSERVER_PORT" -D >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5

# The server: one pod, the network namespace.
"$BIN" port-forward-server --listen 127.0.0.1:0 --pod "bench=netns:/run/netns/$NS" --log-level warn \
  >"$WORK/server.out" 2>"$WORK/server.err" & SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 50); do grep -q "Starting to serve" "$WORK/server.out" && break; sleep 0.1; done
ADDR="$(sed -n 's/^Starting to serve on //p' "$WORK/server.out")"
[ -n "$ADDR" ] || { cat "$WORK/server.err" >&2; exit 1; }
cat >"$WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: "http://$ADDR"}}]
contexts: [{name: bench, context: {cluster: bench, user: bench}}]
current-context: bench
users: [{name: bench, user: {}}]
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

# One measurement: iperf3 to PORT_I, netperf TCP_RR and TCP_CRR with control PORT_C, data
# PORT_D, the load run with the command prefix in RUN; CPU ticks of the server and of the
# client process CLIENT (none for direct) over the iperf3 run.
measure() { # NAME PORT_I PORT_C PORT_D
  # -> appends "NAME gbps server_ticks bytes rr crr client_ticks" to $WORK/results
  local name="$1" pi="$2" pc="$3" pd="$4" before after cbefore=0 cafter=0 json gbps bytes rr crr
  before="$(cpu_ticks "$SERVER")"
  [ -z "$CLIENT" ] || cbefore="$(cpu_ticks "$CLIENT")"
  json="$(timeout $((SECS + 20)) "${RUN[@]}" iperf3 -c 127.0.0.1 -p "$pi" -t "$SECS" -J)"
  after="$(cpu_ticks "$SERVER")"
  [ -z "$CLIENT" ] || cafter="$(cpu_ticks "$CLIENT")"
  gbps="$(python3 -c 'import json,sys; d=json.load(sys.stdin)["end"]["sum_received"]; print(d["bits_per_second"]/1e9)' <<<"$json")"
  bytes="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bytes"])' <<<"$json")"
  rr="$(timeout $((SECS + 20)) "${RUN[@]}" netperf -H 127.0.0.1 -p "$pc" -t TCP_RR -l "$SECS" -P 0 -- -P ",$pd" -o THROUGHPUT | tail -1)"
  crr="$(timeout $((SECS + 20)) "${RUN[@]}" netperf -H 127.0.0.1 -p "$pc" -t TCP_CRR -l "$SECS" -P 0 -- -P ",$pd" -o THROUGHPUT | tail -1)"
  echo "$name $gbps $(( after - before )) $bytes $rr $crr $(( cafter - cbefore ))" >>"$WORK/results"
}

# Starts the client of MODE forwarding 26301 and 26302 to iperf3 and netserver, and
# NETDATA_PORT to itself (netserver's data port); sets CLIENT to its process.
start_client() { # MODE
  local mode="$1" out="$WORK/client.$1.out" ws="" protocol=""
  case "$mode" in
    spdy) ws=false ;;
    tunnel) ws=true ;;
    kubectl) ;;
    proxy) protocol=auto ;;
    proxy-spdy) protocol=spdy ;;
    proxy-tunnel) protocol=spdy-websocket ;;
    proxy-websocket) protocol=websocket ;;
    *) echo "bench-portforward.sh: unknown mode $mode" >&2; exit 2 ;;
  esac
  local ports=(pod/bench 26301:"$IPERF_PORT" 26302:"$NETSERVER_PORT" "$NETDATA_PORT:$NETDATA_PORT")
  if [ -n "$protocol" ]; then
    "$BIN" forward "${ports[@]}" --kubeconfig "$WORK/kubeconfig" --protocol "$protocol" \
      --log-level warn >"$out" 2>&1 & CLIENT=$!
  elif [ -n "$ws" ]; then
    KUBECONFIG="$WORK/kubeconfig" KUBECTL_PORT_FORWARD_WEBSOCKETS=$ws \
      "$KUBECTL" --cache-dir "$WORK/cache" port-forward "${ports[@]}" >"$out" 2>&1 & CLIENT=$!
  else
    # kubectl's own default: no KUBECTL_PORT_FORWARD_WEBSOCKETS.
    env -u KUBECTL_PORT_FORWARD_WEBSOCKETS KUBECONFIG="$WORK/kubeconfig" \
      "$KUBECTL" --cache-dir "$WORK/cache" port-forward "${ports[@]}" >"$out" 2>&1 & CLIENT=$!
  fi
  PIDS+=("$CLIENT")
  for _ in $(seq 100); do [ "$(grep -c '^Forwarding from 127' "$out")" = 3 ] && return; sleep 0.1; done
  echo "bench-portforward.sh: $mode did not start:" >&2; cat "$out" >&2; exit 1
}

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  RUN=("${IN_POD[@]}")
  CLIENT=""
  measure "direct@$round" "$IPERF_PORT" "$NETSERVER_PORT" "$NETDATA_PORT"
  for mode in ${MODES//,/ }; do
    start_client "$mode"
    # netperf's data connections go to NETDATA_PORT on 127.0.0.1, which the client holds
    # (forwarded to the same port in the pod, netserver's data port), so TCP_RR and
    # TCP_CRR run through the forward too.
    RUN=(env)
    measure "$mode@$round" 26301 26302 "$NETDATA_PORT"
    kill "$CLIENT" 2>/dev/null || true; wait "$CLIENT" 2>/dev/null || true
  done
done

python3 - "$WORK/results" "$TICK" "$KUBECTL" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tick = float(sys.argv[2])
by = {}
for name, gbps, ticks, nbytes, rr, crr, cticks in rows:
    mode, rnd = name.split("@")
    by.setdefault(rnd, {})[mode] = (float(gbps), int(ticks) / tick, int(nbytes), float(rr),
                                    float(crr), int(cticks) / tick)
modes = [m for m in dict.fromkeys(n.split("@")[0] for n, *_ in rows) if m != "direct"]
print(f"kubectl: {sys.argv[3]}; {len(by)} rounds; medians; ratios to the direct run of the same round\n")
print("| mode | iperf3 Gbit/s | ratio | TCP_RR trans/s | ratio | TCP_CRR trans/s | ratio "
      "| client CPU s/GB | server CPU s/GB |")
print("|---|---|---|---|---|---|---|---|---|")
d = [r["direct"] for r in by.values()]
med = lambda xs: statistics.median(list(xs))
print(f"| direct | {med(x[0] for x in d):.2f} | 1.00× | {med(x[3] for x in d):.0f} | 1.00× "
      f"| {med(x[4] for x in d):.0f} | 1.00× | – | – |")
for m in modes:
    rs = [(r[m], r["direct"]) for r in by.values() if m in r]
    cells = []
    for i in (0, 3, 4):
        cells.append(f"{med(x[i] for x, _ in rs):{'.2f' if i == 0 else '.0f'}}")
        cells.append(f"{med(x[i] / y[i] for x, y in rs):.2f}×")
    ccpu = med(x[5] / (x[2] / 1e9) for x, _ in rs)
    cpu = med(x[1] / (x[2] / 1e9) for x, _ in rs)
    print(f"| {m} | {' | '.join(cells)} | {ccpu:.3f} | {cpu:.3f} |")
EOF
echo "raw: $WORK/results"
