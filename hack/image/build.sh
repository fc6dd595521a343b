#!/usr/bin/env bash
# `make image`: build the operator and simulator images from docker/*.Dockerfile with whatever the
# machine has, and write each as an OCI archive for `skopeo copy` or `docker load`.
#
#   builder  docker, or podman, where `docker info` / `podman info` answers; otherwise buildah
#            with chroot isolation, which needs no daemon. NIMOP_IMAGE_BUILDER=docker|podman|buildah
#            chooses.
#   base     the Dockerfiles say FROM python:3.11-slim. NIMOP_IMAGE_BASE picks where it comes from:
#              auto      (default) a python:3.11-slim already in the builder's store that was not
#                        made here (pulled by you) is used as it is; otherwise as `debian`
#              debian    hack/image/base.sh makes it from Debian packages (cached), and it is
#                        tagged docker.io/library/python:3.11-slim in the builder's store, so FROM
#                        resolves without a registry
#              registry  the builder pulls it, as a plain `docker build` would
#            No registry is dialled to find out whether one is reachable: this machine reaches none.
#   output   nimop:<version> and nimsim:<version> (version from pyproject.toml) in the builder's
#            store, and $NIMOP_IMAGE_DIR (default build/images)/<name>-<version>.tar, an OCI archive
#            with docker load's manifest.json added. Build logs go beside them.
# At the end it prints each build's time and each image's size.
#
# pip inside the build downloads from PyPI (the Dockerfiles stay plain `pip install`). When the
# host's pip trusts a CA of its own (PIP_CERT or `pip config` global.cert, as behind a TLS-
# intercepting proxy), buildah and podman mount that bundle read-only over the image's CA files
# for the RUN steps only; nothing of it stays in the image.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

out=${NIMOP_IMAGE_DIR:-$repo/build/images}
base_mode=${NIMOP_IMAGE_BASE:-auto}
builder=${NIMOP_IMAGE_BUILDER:-auto}
base_name=docker.io/library/python:3.11-slim
images=("nimop|docker/operator.Dockerfile" "nimsim|docker/nimsim.Dockerfile")

case "$base_mode" in auto|debian|registry) ;; *)
  echo "build.sh: NIMOP_IMAGE_BASE=$base_mode: expected auto, debian or registry" >&2; exit 2 ;;
esac
case "$builder" in auto|docker|podman|buildah) ;; *)
  echo "build.sh: NIMOP_IMAGE_BUILDER=$builder: expected docker, podman or buildah" >&2; exit 2 ;;
esac

now() { date +%s%N; }
secs() { local ns=$(( $2 - $1 )); printf '%d.%ds' $(( ns / 1000000000 )) $(( ns % 1000000000 / 100000000 )); }

total_start=$(now)
"$here/tools.sh"

if [ "$builder" = auto ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    builder=docker
  elif command -v podman >/dev/null && timeout 10 podman info >/dev/null 2>&1; then
    builder=podman
  else
    builder=buildah
  fi
fi

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
mkdir -p "$out"
cache=${NIMOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nimop}/images
mkdir -p "$cache"
# One `make image` at a time per machine (a test session and a user may both start one).
exec 8>"$cache/.build.lock"
flock 8

# The label that base.sh puts on its image; empty for a python:3.11-slim from a registry, and an
# error (so "absent") when there is none.
base_key() {
  case "$builder" in
    docker) docker image inspect -f '{{index .Config.Labels "dev.nimop.base.key"}}' "$base_name" 2>/dev/null ;;
    podman) podman image inspect -f '{{index .Labels "dev.nimop.base.key"}}' "$base_name" 2>/dev/null ;;
    buildah) buildah inspect --type image \
         --format '{{index .OCIv1.Config.Labels "dev.nimop.base.key"}}' "$base_name" 2>/dev/null ;;
  esac
}

# The full id of image $1 in the builder's store, or nothing.
image_id() {
  case "$builder" in
    docker) docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true ;;
    *) { "$builder" images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null || true; } | head -1 ;;
  esac
}

base_start=$(now)
base_note=""
pull=never
if [ "$base_mode" = registry ]; then
  pull=missing
  base_note="pulled by $builder if missing"
else
  present=1
  current=$(base_key) || present=0
  if [ "$base_mode" = auto ] && [ "$present" = 1 ] && [ -z "$current" ]; then
    base_note="the python:3.11-slim already in $builder's store"
  else
    archive=$("$here/base.sh")
    key=$(basename "$archive" .tar); key=${key##*-}
    if [ "$current" = "$key" ]; then
      base_note="Debian packages, cached ($(basename "$archive"))"
    else
      [ "$present" = 1 ] && [ -z "$current" ] && \
        echo "build.sh: replacing the registry's python:3.11-slim in $builder's store with the Debian-built one" >&2
      old_base=$(image_id "$base_name")
      case "$builder" in
        docker) skopeo copy -q "oci-archive:$archive" "docker-daemon:$base_name" ;;
        *) skopeo copy -q "oci-archive:$archive" "containers-storage:$base_name" ;;
      esac 2> >(grep -v 'level=info' >&2)
      [ -n "$old_base" ] && { "$builder" rmi "$old_base" >/dev/null 2>&1 || true; }
      base_note="Debian packages ($(basename "$archive")), loaded into $builder"
    fi
  fi
fi
base_time=$(secs "$base_start" "$(now)")

build_args=()
if [ "$builder" != docker ]; then
  # buildah 1.28 knows true|false|always|never; "false" pulls only what is missing.
  [ "$pull" = missing ] && pull=false
  build_args+=(--isolation chroot --layers "--pull=$pull")
  host_ca=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  if [ -n "$host_ca" ] && [ -f "$host_ca" ]; then
    # Both files exist in the base (Debian's pip reads the first, upstream's pip the second), so
    # mounting over them leaves no mount point behind in a layer.
    build_args+=(-v "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro")
    build_args+=(-v "$host_ca:/usr/local/lib/python3.11/site-packages/pip/_vendor/certifi/cacert.pem:ro")
  fi
fi

human() { numfmt --to=si --suffix=B "$1"; }

rows=()
for entry in "${images[@]}"; do
  IFS='|' read -r name dockerfile <<<"$entry"
  tag="$name:$version"
  ref=$([ "$builder" = docker ] && echo "$tag" || echo "localhost/$tag")
  log="$out/$name.log"
  tar="$out/$name-$version.tar"
  echo "build.sh: building $tag from $dockerfile with $builder (log: ${log#"$repo"/})" >&2
  previous=$(image_id "$ref")
  start=$(now)
  status=0
  case "$builder" in
    docker) docker build -f "$dockerfile" -t "$tag" . >"$log" 2>&1 || status=$? ;;
    podman) podman build "${build_args[@]}" -f "$dockerfile" -t "$ref" . >"$log" 2>&1 || status=$? ;;
    buildah) buildah bud "${build_args[@]}" -f "$dockerfile" -t "$ref" . >"$log" 2>&1 || status=$? ;;
  esac
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "build.sh: building $tag failed (exit $status); the whole log is $log" >&2
    exit 1
  fi
  built=$(now)
  image_id=$(image_id "$ref")
  # The image this build replaced: removed unless something still uses it (then rmi refuses).
  if [ -n "$previous" ] && [ "$previous" != "$image_id" ]; then
    "$builder" rmi "$previous" >/dev/null 2>&1 || true
  fi
  # The archive (and its sizes) from the last run still fit when the image is the same one.
  meta="$out/.$name-$version.meta"
  read -r last_id compressed uncompressed 2>/dev/null <"$meta" || last_id=""
  if [ ! -s "$tar" ] || [ "$last_id" != "$image_id" ]; then
    rm -f "$tar" "$meta"
    case "$builder" in
      docker) skopeo copy -q "docker-daemon:$ref" "oci-archive:$tar:$version" ;;
      *) skopeo copy -q "containers-storage:$ref" "oci-archive:$tar:$version" ;;
    esac 2> >(grep -v 'level=info' >&2)
    python3 "$here/ociarchive.py" docker-manifest "$tar" --tag "$tag"
    read -r compressed uncompressed < <(python3 "$here/ociarchive.py" sizes "$tar")
    echo "$image_id $compressed $uncompressed" >"$meta"
  fi
  archived=$(now)
  rows+=("$tag|$(secs "$start" "$built")|$(secs "$built" "$archived")|$uncompressed|$compressed|${tar#"$repo"/}")
done

echo
echo "== images built with $builder in $(secs "$total_start" "$(now)"); base python:3.11-slim: $base_note ($base_time)"
printf '%-14s %8s %8s %10s %11s  %s\n' image build archive unpacked compressed file
for row in "${rows[@]}"; do
  IFS='|' read -r tag build_t archive_t uncompressed compressed file <<<"$row"
  printf '%-14s %8s %8s %10s %11s  %s\n' "$tag" "$build_t" "$archive_t" \
    "$(human "$uncompressed")" "$(human "$compressed")" "$file"
done
