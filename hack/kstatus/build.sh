#!/usr/bin/env bash
# Build hack/kstatus (kstatus as Flux reads objects) into a cache outside the repo.
#
# Prints the binary's path on stdout (and nothing else), so callers can do
#   KSTATUS=$(hack/kstatus/build.sh)
# The cache key is a hash of go.mod, go.sum, main.go and the Go version: a warm cache returns
# at once, and any change builds into a fresh directory. A cold build needs only the Go module
# proxy (go.sum is committed, so the checksum database is never asked).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

export GOTOOLCHAIN=local GOSUMDB=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

key=$( { cat go.mod go.sum main.go; go env GOVERSION; } | sha256sum | cut -c1-12)
cache_root=${NIMOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimop}
bin="$cache_root/kstatus-$key/kstatus"

if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "build.sh: building $bin" >&2
  start=$(date +%s)
  # A per-process temporary name: concurrent builds never see a half-written binary.
  go build -trimpath -ldflags "-s -w" -o "$bin.$$.tmp" .
  mv -f "$bin.$$.tmp" "$bin"
  echo "build.sh: built kstatus in $(( $(date +%s) - start ))s" >&2
fi

echo "$bin"
