#!/usr/bin/env bash
# Regenerates proxy-ffi/include/proxy.h from the crate's source with the pinned cbindgen.
#   proxy-ffi/gen-header.sh            rewrite the header
#   proxy-ffi/gen-header.sh --verify   fail when the checked-in header is out of date
# Install the pinned version with: cargo install cbindgen --version 0.29.4 --locked
set -euo pipefail
CBINDGEN_VERSION=0.29.4
cd "$(dirname "$0")"

have=$(cbindgen --version 2>/dev/null || true)
if [ "$have" != "cbindgen $CBINDGEN_VERSION" ]; then
  echo "need cbindgen $CBINDGEN_VERSION (found: ${have:-none}); run" >&2
  echo "  cargo install cbindgen --version $CBINDGEN_VERSION --locked" >&2
  exit 1
fi

if [ "${1:-}" = "--verify" ]; then
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  cbindgen --quiet --config cbindgen.toml --output "$tmp" .
  if ! diff -u include/proxy.h "$tmp"; then
    echo "include/proxy.h is out of date: run proxy-ffi/gen-header.sh" >&2
    exit 1
  fi
else
  cbindgen --quiet --config cbindgen.toml --output include/proxy.h .
fi
