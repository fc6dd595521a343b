#!/usr/bin/env bash
# Build the local control plane's binaries from this Go module into a cache outside the repo.
#
# Prints the cache's bin directory on stdout (and nothing else), so callers can do
#   BIN=$(hack/k8s/build.sh)
# Only missing binaries are built; a warm cache returns at once. The cache key carries the
# Kubernetes version plus a hash of go.mod, go.sum and the Go version, so a dependency bump
# builds into a fresh directory instead of mixing binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
# go.sum is committed and complete; nothing should need the checksum database.
export GONOSUMDB="*" GONOSUMCHECK=1 GOSUMDB=off

k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)
helm_version=$(awk '$1 == "helm.sh/helm/v3" {print $2}' go.mod)
[ -n "$k8s_version" ] || { echo "build.sh: k8s.io/kubernetes not found in go.mod" >&2; exit 1; }

key=$( { cat go.mod go.sum; go env GOVERSION; } | sha256sum | cut -c1-10)
cache_root=${NIMOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimop}
bin="$cache_root/k8s-$k8s_version-$key/bin"
mkdir -p "$bin"

minor=$(echo "$k8s_version" | cut -d. -f2)
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

# name|package|ldflags
targets=(
  "etcd|go.etcd.io/etcd/server/v3|-s -w"
  "kube-apiserver|k8s.io/kubernetes/cmd/kube-apiserver|$k8s_ldflags"
  "kube-controller-manager|k8s.io/kubernetes/cmd/kube-controller-manager|$k8s_ldflags"
  "kube-scheduler|k8s.io/kubernetes/cmd/kube-scheduler|$k8s_ldflags"
  "kubectl|k8s.io/kubernetes/cmd/kubectl|$k8s_ldflags"
  "kwok|sigs.k8s.io/kwok/cmd/kwok|-s -w"
  "helm|helm.sh/helm/v3/cmd/helm|-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
)

for t in "${targets[@]}"; do
  IFS='|' read -r name pkg ldflags <<<"$t"
  [ -x "$bin/$name" ] && continue
  echo "build.sh: building $name ($pkg)" >&2
  start=$(date +%s)
  # Build to a temporary name so an interrupted build never leaves a half-written binary.
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg"
  mv "$bin/.$name.tmp" "$bin/$name"
  echo "build.sh: built $name in $(( $(date +%s) - start ))s" >&2
done

echo "$bin"
