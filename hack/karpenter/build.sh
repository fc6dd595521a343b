#!/usr/bin/env bash
# Build Karpenter's controller with its kwok cloud provider (sigs.k8s.io/karpenter/kwok) and lay
# out its CRDs, from the module version pinned here, into a cache outside the repo.
#
# Prints the cache directory on stdout (and nothing else): DIR/bin/karpenter and DIR/crds/*.yaml.
#   KARPENTER=$(hack/karpenter/build.sh)
# A warm cache returns at once. The key is a hash of go.mod, go.sum, upstream.sum and the Go
# version, so a bump builds into a fresh directory.
#
# Why a copy of the upstream module: sigs.k8s.io/karpenter v1.15.0 declares `go 1.26.9`, this
# machine's Go is 1.26.8, and GOTOOLCHAIN=local (toolchains cannot be downloaded here) makes
# the go command refuse any module that declares a newer Go. Patch releases add no language
# features or APIs (they carry security and bug fixes to the toolchain and standard library),
# so the build extracts the module's verified zip (its h1: hash pinned in upstream.sum), lowers
# only its `go` line to the local version when the local one is older, and builds through the
# `replace ... => ./upstream` in go.mod. Nothing else in the module is changed.
#
#   build.sh          build (or reuse) and print the cache directory
#   build.sh --tidy   after editing the version in go.mod: re-resolve go.mod/go.sum and re-pin
#                     upstream.sum (GOSUMDB is unreachable here, so hashes are taken on first
#                     use, as hack/k8s did)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export GONOSUMDB="*" GONOSUMCHECK=1 GOSUMDB=off

mode=build
case "${1:-}" in
  "") ;;
  --tidy) mode=tidy ;;
  *) echo "build.sh: unknown argument '$1' (expected nothing or --tidy)" >&2; exit 2 ;;
esac

module=sigs.k8s.io/karpenter
version=$(awk -v m="$module" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' go.mod | head -1)
[ -n "$version" ] || { echo "build.sh: $module not required in go.mod" >&2; exit 1; }
local_go=$(go env GOVERSION | sed 's/^go//')

key=$( { cat go.mod go.sum upstream.sum; go env GOVERSION; } | sha256sum | cut -c1-10)
cache_root=${NIMOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimop}
dir="$cache_root/karpenter-$version-$key"
if [ "$mode" = build ] && [ -x "$dir/bin/karpenter" ] && [ -f "$dir/crds/.complete" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$cache_root"
# One build per cache directory at a time; a second caller waits, then finds it done.
exec 9>"$dir.lock"
flock 9
if [ "$mode" = build ] && [ -x "$dir/bin/karpenter" ] && [ -f "$dir/crds/.complete" ]; then
  echo "$dir"
  exit 0
fi

start=$(date +%s)
src="$dir/src"
rm -rf "$src"
mkdir -p "$src" "$dir/bin"

# Fetch the module zip through the go command. Outside a module it verifies nothing (no go.sum,
# no checksum database), so compare its hash with the pin ourselves. The go command reports the
# Go-version refusal as an error after it has downloaded the zip: tolerate that, check the rest.
fetch=$(mktemp -d)
trap 'rm -rf "$fetch"' EXIT
info=$(cd "$fetch" && GOFLAGS= go mod download -json "$module@$version" || true)
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get(sys.argv[1], ""))' "$1" <<<"$info"; }
zip=$(field Zip)
sum=$(field Sum)
gomodsum=$(field GoModSum)
if [ -z "$zip" ] || [ ! -f "$zip" ]; then
  echo "build.sh: could not download $module@$version: $(field Error)" >&2
  exit 1
fi
if [ "$mode" = tidy ]; then
  printf '%s %s %s\n%s %s/go.mod %s\n' "$module" "$version" "$sum" "$module" "$version" "$gomodsum" >upstream.sum
fi
pinned=$(awk -v m="$module" -v v="$version" '$1 == m && $2 == v {print $3}' upstream.sum)
if [ "$sum" != "$pinned" ]; then
  echo "build.sh: $module@$version hash $sum does not match upstream.sum ($pinned)" >&2
  exit 1
fi

python3 - "$zip" "$module@$version/" "$src/upstream" <<'EOF'
import sys, zipfile
from pathlib import Path

archive, prefix, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with zipfile.ZipFile(archive) as zf:
    for entry in zf.infolist():
        if entry.is_dir() or not entry.filename.startswith(prefix):
            continue
        target = dest / entry.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(entry))
EOF
wanted_go=$(cd "$src/upstream" && go mod edit -json | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')
if [ "$(printf '%s\n%s\n' "$wanted_go" "$local_go" | sort -V | head -1)" != "$wanted_go" ]; then
  echo "build.sh: $module@$version declares go $wanted_go; building with the local go $local_go" >&2
  (cd "$src/upstream" && go mod edit -go="$local_go" -toolchain=none)
fi
cp go.mod go.sum tools.go "$src/"

if [ "$mode" = tidy ]; then
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy)
  cp "$src/go.mod" "$src/go.sum" "$here/"
  echo "build.sh: go.mod, go.sum and upstream.sum updated for $module@$version" >&2
  exit 0
fi

echo "build.sh: building karpenter $version (kwok provider)" >&2
# Build to a temporary name so an interrupted build never leaves a half-written binary.
(cd "$src" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=$version" \
  -o "$dir/bin/.karpenter.tmp" "$module/kwok")
mv "$dir/bin/.karpenter.tmp" "$dir/bin/karpenter"

# The CRDs the kwok provider's own chart installs (NodePool, NodeClaim, NodeOverlay and
# CapacityBuffer, with the kwok label-domain rules) plus its KWOKNodeClass, from this version.
rm -rf "$dir/crds"
mkdir -p "$dir/crds"
cp "$src/upstream/kwok/charts/crds/"*.yaml "$src/upstream/kwok/apis/crds/"*.yaml "$dir/crds/"
touch "$dir/crds/.complete"
echo "build.sh: built karpenter in $(( $(date +%s) - start ))s" >&2
echo "$dir"
