#!/usr/bin/env bash
# Make the base image the Dockerfiles start FROM (python:3.11-slim) out of Debian packages, for a
# machine that reaches Debian's archive but no container registry.
#
# Prints the path of the image's OCI archive on stdout, and nothing else, so callers can do
#   archive=$(hack/image/base.sh)
# The archive is cached outside the repo, under ~/.cache/nimop/images, keyed by a hash of every
# input: the Debian suite and mirrors, the package list, the architecture, mmdebstrap's version and
# the text of this script and ociarchive.py. A warm cache returns at once.
#
# What the image holds (about 150 MB unpacked, 50 MB compressed):
#   - Debian bookworm, mmdebstrap's minbase variant (the Essential and Priority: required packages
#     plus apt), with bookworm-updates and bookworm-security applied at build time;
#   - python3 (Debian bookworm's is 3.11; checked below), ca-certificates, netbase (/etc/services,
#     /etc/protocols) and passwd (useradd, which the Dockerfiles run);
#   - a virtual environment at /usr/local with pip and setuptools from Debian's wheels, so
#     `python`, `pip` and the console scripts pip installs live in /usr/local/bin as in the official
#     image, and `pip install` works without touching Debian's own Python packages (PEP 668);
#   - no man pages, info pages, locales or documentation except copyright files (dpkg path
#     excludes, kept in /etc/dpkg/dpkg.cfg.d so later apt installs stay slim too), no apt lists or
#     caches, no /dev nodes, and no host files (/etc/hostname, /etc/resolv.conf).
# Its config: PATH with /usr/local/bin first, LANG=C.UTF-8, PYTHON_VERSION, CMD ["python3"].
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

suite=${NIMOP_DEBIAN_SUITE:-bookworm}
mirror=${NIMOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${NIMOP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages=(ca-certificates netbase passwd python3 python3-venv)
sources=(
  "deb $mirror $suite main"
  "deb $mirror $suite-updates main"
  "deb $security $suite-security main"
)
arch=$(dpkg --print-architecture)

for tool in mmdebstrap mmtarfilter python3; do
  command -v "$tool" >/dev/null || {
    echo "base.sh: $tool is missing; hack/image/tools.sh installs it" >&2
    exit 1
  }
done

key=$(
  {
    printf '%s\n' "$suite" "$arch" "${sources[@]}" "${packages[@]}"
    mmdebstrap --version
    cat "$here/base.sh" "$here/ociarchive.py"
  } | sha256sum | cut -c1-12
)
cache=${NIMOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimop}/images
archive="$cache/python-3.11-slim-$suite-$key.tar"
mkdir -p "$cache"

# One build at a time: a second caller waits, then finds the archive made.
exec 9>"$cache/.base.lock"
flock 9
if [ -s "$archive" ]; then
  echo "$archive"
  exit 0
fi

start=$(date +%s)
work=$(mktemp -d "$cache/.base-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "base.sh: building the Python base image from Debian $suite packages (about a minute)" >&2

# PYTHON_VERSION is read from the chroot into $work for the image config (the official image sets
# it). The tarball is streamed through mmtarfilter to drop /dev's nodes: a runtime mounts its own /dev.
hosts='127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
# The hooks' "$1" is the chroot, expanded by mmdebstrap's shell, not this one.
# shellcheck disable=SC2016
if ! mmdebstrap --variant=minbase --format=tar --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='chroot "$1" python3 -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"' \
  --customize-hook='chroot "$1" python3 -m venv /usr/local' \
  --customize-hook="chroot \"\$1\" python3 -c 'import platform; print(platform.python_version())' > '$work/python-version'" \
  --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/resolv.conf "$1"/var/cache/apt/*.bin' \
  --customize-hook="printf '$hosts' > \"\$1/etc/hosts\"" \
  "$suite" - "${sources[@]}" 2>"$work/mmdebstrap.log" \
  | mmtarfilter --path-exclude='/dev/*' >"$work/rootfs.tar"; then
  tail -n 40 "$work/mmdebstrap.log" >&2
  echo "base.sh: mmdebstrap failed (the lines above are the end of its log)" >&2
  exit 1
fi

python_version=$(cat "$work/python-version")

python3 "$here/ociarchive.py" from-rootfs "$work/rootfs.tar" "$work/base.tar" \
  --ref 3.11-slim --architecture "$arch" \
  --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --env "PYTHON_VERSION=$python_version" \
  --cmd '["python3"]' \
  --label "org.opencontainers.image.title=python:3.11-slim (Debian $suite packages)" \
  --label "org.opencontainers.image.description=Python $python_version from Debian $suite, built by hack/image/base.sh" \
  --label "dev.nimop.base.key=$key" \
  --created-by "hack/image/base.sh: mmdebstrap --variant=minbase $suite + ${packages[*]}" >/dev/null
mv "$work/base.tar" "$archive"
# Archives of other keys are from older inputs: nothing reads them any more.
find "$cache" -maxdepth 1 -name 'python-3.11-slim-*.tar' ! -name "$(basename "$archive")" -delete
echo "base.sh: built $(basename "$archive") ($(du -m "$archive" | cut -f1) MB) in $(( $(date +%s) - start ))s" >&2
echo "$archive"
