#!/usr/bin/env bash
# Offline checks of deploy/ (scripts/test.sh runs it after `cargo test`; it needs no cluster,
# no container engine and no network beyond PyPI for its first run):
#  1. deploy/Containerfile: a cheap lint (stages, pinned base images, --locked build,
#     setcap, non-root USER, ENTRYPOINT).
#  2. every manifest in deploy/kubernetes/ against the Kubernetes OpenAPI schemas of the
#     oldest and newest versions below, strictly (unknown fields fail), with the pinned
#     kubernetes-validate from PyPI, installed into target/deploy-venv when missing;
#  3. deploy/check_manifests.py: each proxy container's args with the real binary
#     (`proxy --check ARGS`, ConfigMap files included), its ports, probes and Prometheus
#     annotations against the admin port, and the Services' targetPorts.
#
# Usage: deploy/validate.sh [PROXY_BINARY]   (default: target/debug/proxy, built first)
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
VENV=target/deploy-venv
proxy=${1:-target/debug/proxy}
manifests=(deploy/kubernetes/*.yaml)

echo "==> deploy/Containerfile (lint)"
containerfile=deploy/Containerfile
lint_errors=0
lint() { # PATTERN DESCRIPTION: the Containerfile must have a line matching PATTERN
  if grep -Eq "$1" "$containerfile"; then
    echo "  ok   $2"
  else
    echo "  FAIL $2 (no line matches /$1/)"
    lint_errors=$((lint_errors + 1))
  fi
}
lint '^FROM [^ ]*rust:[0-9]+\.[0-9]+[^ ]* AS build$' "build stage from a pinned rust image"
lint '^FROM gcr\.io/distroless/cc-debian12:nonroot' "runtime stage from distroless cc, nonroot"
lint 'cargo build --release --locked -p proxy-cli' "release build with --locked"
lint 'setcap cap_net_bind_service=\+ep /out/proxy' "setcap cap_net_bind_service on the binary"
lint '^COPY --from=build /out/proxy /usr/local/bin/proxy$' "binary at /usr/local/bin/proxy"
lint '^USER 65532(:65532)?$' "USER 65532 (numeric, non-root)"
lint '^ENTRYPOINT \["/usr/local/bin/proxy"\]$' "ENTRYPOINT [\"/usr/local/bin/proxy\"]"
if grep -Eq '^FROM [^ ]*:latest|^FROM [^ :@]+( |$)' "$containerfile"; then
  echo "  FAIL a FROM without a pinned tag"
  lint_errors=$((lint_errors + 1))
fi
if [ "$(grep -c '^USER ' "$containerfile")" -ne 1 ] \
  || [ "$(grep -n '^USER ' "$containerfile" | cut -d: -f1)" -lt "$(grep -n '^FROM ' "$containerfile" | tail -1 | cut -d: -f1)" ]; then
  echo "  FAIL USER must be set once, in the last stage"
  lint_errors=$((lint_errors + 1))
fi
if [ "$lint_errors" -ne 0 ]; then
  echo "deploy/Containerfile: $lint_errors lint error(s)" >&2
  exit 1
fi

# kubernetes-validate (and PyYAML, which it pulls in) in a venv of our own.
if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

for version in "${KUBERNETES_VERSIONS[@]}"; do
  echo "==> Kubernetes $version schemas (kubernetes-validate --strict): ${manifests[*]}"
  "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$version" "${manifests[@]}"
done

if [ $# -eq 0 ]; then
  cargo build -q --locked -p proxy-cli # a no-op when target/debug/proxy is up to date
fi
echo "==> proxy-to-service:v2's seed args, unchanged ($proxy --check)"
for args in "udp 53 kube-dns.default 1" "tcp 53 kube-dns.default"; do
  # shellcheck disable=SC2086 # the words are the args
  "$proxy" --check $args >/dev/null
  echo "  ok   proxy --check $args"
done
echo "==> container args, config files and ports ($proxy --check)"
"$VENV/bin/python" deploy/check_manifests.py "$proxy" "${manifests[@]}"
echo "==> deploy/ checks passed"
