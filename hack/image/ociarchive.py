#!/usr/bin/env python3
"""OCI image archives for `make image`, written with the standard library alone.

Two jobs that no tool installed by hack/image/tools.sh does in one step:

``from-rootfs``
    Turns a root filesystem tarball (mmdebstrap's output) into a one-layer image archive: an OCI
    image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) in a tar file, the format
    ``skopeo copy oci-archive:...`` and ``umoci`` read. The layer is gzip-compressed with a zero
    header timestamp, so the same rootfs tarball always gives the same digests.

``sizes``
    Prints an archive's image size as a registry and a runtime see it: the compressed layers and
    the uncompressed ones (what an unpacked root filesystem takes, before filesystem overhead).

``docker-manifest``
    Appends the ``manifest.json`` that ``docker load`` reads (what ``docker save`` writes beside
    the OCI layout since Docker 25) to an existing OCI archive, so one file serves skopeo, podman,
    umoci and Docker alike. Its layer paths point at the OCI blobs; Docker decompresses them.

Formats: the OCI image spec (image-layout.md, manifest.md, config.md in
github.com/opencontainers/image-spec) and moby's image/tarexport (``manifest.json``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


class ArchiveError(Exception):
    """A malformed argument or archive, with what is wrong in the message."""


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _gzip_layer(rootfs_tar: Path, out: Path) -> tuple[str, str, int]:
    """Compress the layer; return (diff_id, blob digest, blob size) as ``sha256:...``."""
    diff = hashlib.sha256()
    # mtime=0 and no file name in the header: identical input gives an identical blob.
    with (
        rootfs_tar.open("rb") as src,
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        while chunk := src.read(CHUNK):
            diff.update(chunk)
            gz.write(chunk)
    blob = hashlib.sha256()
    with out.open("rb") as f:
        while chunk := f.read(CHUNK):
            blob.update(chunk)
    return f"sha256:{diff.hexdigest()}", f"sha256:{blob.hexdigest()}", out.stat().st_size


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return digest, len(data)


def _key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArchiveError(f"{what} {pair!r} is not KEY=VALUE")
        result[key] = value
    return result


def from_rootfs(
    rootfs_tar: Path,
    out: Path,
    *,
    ref: str,
    env: Sequence[str],
    cmd: Sequence[str],
    labels: dict[str, str],
    created_by: str,
    architecture: str,
) -> str:
    """Write a one-layer OCI archive of ``rootfs_tar`` to ``out``; return the manifest digest."""
    if not tarfile.is_tarfile(rootfs_tar):
        raise ArchiveError(f"{rootfs_tar} is not a tar file")
    created = _rfc3339(time.time())
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmp:
        layout = Path(tmp)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_tmp = layout / "layer.tar.gz"
        diff_id, layer_digest, layer_size = _gzip_layer(rootfs_tar, layer_tmp)
        layer_tmp.rename(blobs / layer_digest.removeprefix("sha256:"))
        config: dict[str, Any] = {
            "created": created,
            "architecture": architecture,
            "os": "linux",
            "config": {"Env": list(env), "Cmd": list(cmd), "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": created_by}],
        }
        config_digest, config_size = _blob(blobs, json.dumps(config, indent=None).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {REF_NAME: ref},
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(layout / name, arcname=name, filter=_normalise)
        partial.replace(out)
    return manifest_digest


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _label(tar: tarfile.TarFile) -> str:
    return os.fsdecode(tar.name) if tar.name else "archive"


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ArchiveError(f"{_label(tar)}: no {name} inside (not an OCI image archive)")
    return member.read()


def docker_manifest(archive: Path, repo_tags: Sequence[str]) -> None:
    """Append ``manifest.json`` (with these RepoTags) to an OCI archive of one image."""
    with tarfile.open(archive, "r") as tar:
        if "manifest.json" in tar.getnames():
            raise ArchiveError(f"{archive} already has a manifest.json")
        manifest = _image_manifest(tar)
    entry = [
        {
            "Config": f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}",
            "RepoTags": list(repo_tags),
            "Layers": [
                f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}"
                for layer in manifest["layers"]
            ],
        }
    ]
    data = json.dumps(entry).encode()
    info = _normalise(tarfile.TarInfo("manifest.json"))
    info.size = len(data)
    info.mode = 0o644
    with tarfile.open(archive, "a") as tar:
        tar.addfile(info, io.BytesIO(data))


def _image_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    index = json.loads(_read_member(tar, "index.json"))
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise ArchiveError(
            f"{_label(tar)}: expected one image in index.json, found {len(manifests)}"
        )
    digest: str = manifests[0]["digest"]
    manifest: dict[str, Any] = json.loads(
        _read_member(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}")
    )
    return manifest


def sizes(archive: Path) -> tuple[int, int]:
    """(compressed, uncompressed) bytes of the image's layers."""
    compressed = uncompressed = 0
    with tarfile.open(archive, "r") as tar:
        for layer in _image_manifest(tar)["layers"]:
            compressed += int(layer["size"])
            blob = tar.extractfile(f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}")
            if blob is None:
                raise ArchiveError(f"{archive}: layer {layer['digest']} is missing")
            stream = gzip.GzipFile(fileobj=blob) if "gzip" in layer["mediaType"] else blob
            while chunk := stream.read(CHUNK):
                uncompressed += len(chunk)
    return compressed, uncompressed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ociarchive.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("from-rootfs", help="a one-layer OCI archive from a rootfs tarball")
    make.add_argument("rootfs_tar", type=Path)
    make.add_argument("out", type=Path)
    make.add_argument("--ref", required=True, help="org.opencontainers.image.ref.name")
    make.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    make.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    make.add_argument("--cmd", default="[]", help="the image's Cmd, as a JSON list")
    make.add_argument("--created-by", default="hack/image/ociarchive.py")
    make.add_argument("--architecture", default="amd64")
    size = sub.add_parser("sizes", help="print compressed and uncompressed layer bytes")
    size.add_argument("archive", type=Path)
    add = sub.add_parser("docker-manifest", help="append docker load's manifest.json")
    add.add_argument("archive", type=Path)
    add.add_argument("--tag", action="append", required=True, dest="tags")
    args = parser.parse_args(argv)
    try:
        if args.command == "from-rootfs":
            cmd = json.loads(args.cmd)
            if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
                raise ArchiveError(f"--cmd {args.cmd!r} is not a JSON list of strings")
            _key_values(args.env, "--env")
            digest = from_rootfs(
                args.rootfs_tar,
                args.out,
                ref=args.ref,
                env=args.env,
                cmd=cmd,
                labels=_key_values(args.label, "--label"),
                created_by=args.created_by,
                architecture=args.architecture,
            )
            print(digest)
        elif args.command == "sizes":
            print(*sizes(args.archive))
        else:
            docker_manifest(args.archive, args.tags)
    except (ArchiveError, OSError, json.JSONDecodeError, tarfile.TarError) as err:
        print(f"ociarchive.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
