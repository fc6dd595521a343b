"""The images the lab builds itself, and where `make image` leaves them.

`make image` (hack/image/build.sh) builds `nimop:<version>` (the operator) and
`nimsim:<version>` (the NIM simulator) and writes each as an OCI archive,
`<image dir>/<name>-<version>.tar`. A pod that names one of them, as a user's manifest would
(`nimop:0.1.0`, `localhost/nimop:0.1.0` as buildah and podman tag it, or
`docker.io/library/nimop:0.1.0`), runs that archive's image under runc in the lab; a pod that
names another tag of them finds no image, as on a node that never had it. The simulator image
also stands in for NIM images (`nvcr.io/nim/...`) when a container runs a command of its own (a
shell script, say): it has a real /bin/sh, coreutils, and NIM's utilities on PATH.

Pure apart from reading the environment and the package's version.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

NAMES = ("nimop", "nimsim")
SIMULATOR = "nimsim"
DEFAULT_TAG = "latest"
# Registries under which a builder stores a local image: none (docker), localhost/ (buildah,
# podman), or Docker Hub's canonical form of a short name.
LOCAL_PREFIXES = ("", "localhost/", "docker.io/", "docker.io/library/", "library/")
REPO = Path(__file__).resolve().parents[2]
MAKE_IMAGE_HINT = "run `make image`"


@dataclass(frozen=True)
class LabImage:
    """One lab-built image by name and tag, e.g. nimop 0.1.0."""

    name: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def archive(self) -> Path:
        return image_dir() / f"{self.name}-{self.tag}.tar"


def image_dir() -> Path:
    """Where build.sh writes the archives: $NIMOP_IMAGE_DIR, else build/images of the checkout."""
    override = os.environ.get("NIMOP_IMAGE_DIR")
    return Path(override) if override else REPO / "build" / "images"


def version() -> str:
    """The version `make image` tags the images with: the project's (pyproject.toml)."""
    return importlib.metadata.version("nimop")


def lab_image(reference: str) -> LabImage | None:
    """The lab-built image a pod's `image` names, or None for any other image.

    A digest (`@sha256:...`) names no lab image: the lab's builds are not addressed by digest.
    """
    if "@" in reference:
        return None
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        path, tag = reference[:colon], reference[colon + 1 :]
    else:
        path, tag = reference, DEFAULT_TAG
    for prefix in LOCAL_PREFIXES:
        name = path.removeprefix(prefix) if path.startswith(prefix) else None
        if name in NAMES and tag:
            return LabImage(name, tag)
    return None


def simulator() -> LabImage:
    """The simulator image of this checkout, which stands in for NIM images."""
    return LabImage(SIMULATOR, version())


def built_tags(name: str) -> list[str]:
    """The tags of `name` there are archives for, for a message that says what exists."""
    directory = image_dir()
    if not directory.is_dir():
        return []
    prefix = f"{name}-"
    return sorted(
        p.name.removeprefix(prefix).removesuffix(".tar")
        for p in directory.glob(f"{prefix}*.tar")
        if p.is_file()
    )


def missing_message(image: LabImage, stands_for: str | None = None) -> str:
    """Why an image cannot run, and what to do about it."""
    archive = image.archive()
    role = f" (the lab runs {stands_for} in it)" if stands_for else ""
    others = [t for t in built_tags(image.name) if t != image.tag]
    built = f"; built here: {', '.join(f'{image.name}:{t}' for t in others)}" if others else ""
    return (
        f"image {image.reference}{role} is not built in this lab: no {archive}{built}; "
        f"{MAKE_IMAGE_HINT}"
    )
