#!/usr/bin/env bash
# bench.sh - the loopback comparison of `proxy` against its peers, in one run.
#
# Builds the release binary and runs ../shared/bench/l4bench.sh (or $L4BENCH) with `proxy`
# as the custom proxy next to direct loopback, socat, HAProxy (with and without splice) and
# nginx, which the script installs when missing; realm too when a binary is given with
# --realm-bin or $REALM_BIN. Every ratio is against the direct run of the same round, and
# cells are medians over rounds. The table lands in OUT/summary.md and on stdout.
#
# Usage:
#   scripts/bench.sh [--out DIR] [--proxy-args 'ARGS'] [L4BENCH OPTIONS...] [-- PROXY...]
#
#   --out DIR           results directory (default: a new /tmp/proxy-bench.XXXXXX)
#   --proxy-args ARGS   extra flags for every `proxy` command, e.g. '--pipe-size 1M'
#   L4BENCH OPTIONS     passed through, e.g. --rounds 3 --quick --tests tcp_rr,udp_rr
#   -- PROXY...         which peers to run (default: direct socat haproxy haproxy-splice
#                       nginx, plus realm when a binary is known)
#
# The README's table came from:
#   scripts/bench.sh --rounds 3 --bulk-secs 5 --rr-secs 3 --udp-secs 3 --idle-conns 1000
#
# Needs root for apt-get when a peer or a client (iperf3, netperf) is missing. Takes about
# 6 minutes a round with those settings on 2 cores; nothing else should run meanwhile.

set -euo pipefail
cd "$(dirname "$0")/.."

L4BENCH="${L4BENCH:-../shared/bench/l4bench.sh}"
OUT=""
PROXY_ARGS=""
PASS=()
PEERS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --proxy-args) PROXY_ARGS="$2"; shift 2 ;;
    --) shift; PEERS=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done

[ -f "$L4BENCH" ] || { echo "bench.sh: $L4BENCH not found (set L4BENCH)" >&2; exit 2; }
if [ ${#PEERS[@]} -eq 0 ]; then
  PEERS=(direct socat haproxy haproxy-splice nginx)
  if [ -n "${REALM_BIN:-}" ] || command -v realm >/dev/null; then
    PEERS+=(realm)
  fi
fi
OUT="${OUT:-$(mktemp -d /tmp/proxy-bench.XXXXXX)}"

# nginx installed without its stream module (scripts/bench-http.sh needs only HTTP) cannot
# be an L4 peer, and l4bench.sh installs the module only with nginx itself.
if [[ " ${PEERS[*]} " == *" nginx "* ]] && command -v nginx >/dev/null \
  && [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "==> installing libnginx-mod-stream" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libnginx-mod-stream >/dev/null
fi

cargo build --release --locked -p proxy-cli
BIN="$PWD/target/release/proxy"
FLAGS="--listen {LHOST} --log-level warn $PROXY_ARGS"

bash "$L4BENCH" "${PASS[@]}" --out "$OUT" --name proxy \
  --tcp-cmd "$BIN tcp {LPORT} {TARGET} $FLAGS" \
  --udp-cmd "$BIN udp {LPORT} {TARGET} $FLAGS" \
  "${PEERS[@]}" custom

echo
echo "machine: $(nproc) x$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(uname -r)"
echo "proxy: $("$BIN" --version)"
cat "$OUT/summary.md"
