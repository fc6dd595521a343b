#!/usr/bin/env bash
# Install, from Debian's packages, the tools that build and run the images without a Docker engine,
# where any is missing. Idempotent and quiet when everything is there; `apt-get update` runs once,
# and only when something must be installed. Needs root (CI and the lab machines run as root).
#
#   buildah, skopeo        build from docker/*.Dockerfile (chroot isolation) and copy images
#   mmdebstrap             the Python base image from Debian packages (hack/image/base.sh)
#   umoci, runc, tini      unpack and run a built image (operator/nimlab/oci.py)
#   uidmap, fuse-overlayfs what buildah needs for rootless builds (newuidmap, fuse-overlayfs)
#
# podman is used when present but not installed: buildah builds the same images with less.
set -euo pipefail

# command|package
wanted=(
  "buildah|buildah"
  "skopeo|skopeo"
  "mmdebstrap|mmdebstrap"
  "umoci|umoci"
  "runc|runc"
  "tini|tini"
  "newuidmap|uidmap"
  "fuse-overlayfs|fuse-overlayfs"
  "flock|util-linux"
  "unshare|util-linux"
)

missing=()
for entry in "${wanted[@]}"; do
  IFS='|' read -r cmd pkg <<<"$entry"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "tools.sh: missing ${missing[*]}; install these Debian packages as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "tools.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine holds the lock for a while: wait for it instead of failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
apt-get "${apt_opts[@]}" update -qq >&2
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
