#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian/Ubuntu machine:
# installs what the tests need (dnsmasq, dig, prlimit, unshare, ip) when missing,
# then fmt, clippy, the whole test suite (Rust and doc tests), docs, benches (smoke)
# and the fuzz targets' build.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v prlimit >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

echo "==> cargo fmt"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "==> benches (smoke: each benchmark runs once)"
cargo test --benches --locked -p proxy-benches
echo "==> fuzz targets build"
(cd fuzz && cargo check --locked --bins)
echo "==> all checks passed"
