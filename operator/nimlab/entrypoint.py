"""What a simulated container runs, decided from its spec as a container runtime would.

A real container runs its image's entrypoint, or `command` and `args` when the pod says so
(`command` replaces the ENTRYPOINT, `args` the CMD; both after $(VAR) expansion,
https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/).
The lab has only the images it builds itself (nimlab.labimages), so:

- a lab-built image (`nimop:<version>`, `nimsim:<version>`) runs for real, under runc
  (nimlab.imageruntime);
- a NIM utility (`download-to-cache`, `list-model-profiles`, ... as `nimsim.utilities` knows
  them) named by `command`, or by `args` under a NIM image whose entrypoint runs its arguments,
  runs that utility in process;
- any other command under a NIM image (a `sh -c` script, `sleep`, ...) runs for real in the
  simulator image, where /bin/sh, coreutils, grep and sed are real and the NIM utilities are on
  PATH, so a Job can chain a utility with writing its termination message as in a NIM image
  (with a TCP port, only a shell script around a utility: other commands there start the NIM
  server);
- otherwise a container with a TCP port is the NIM server itself (the in-process simulator,
  which is what lets the lab hold a thousand NIM pods);
- anything else just runs: it completes at once in a run-to-completion pod and keeps running
  under `restartPolicy: Always`.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nimlab.containerenv import expand
from nimlab.labimages import lab_image

SHELLS = frozenset({"sh", "bash", "ash", "dash"})

Kind = Literal["utility", "image", "server", "process"]


@dataclass(frozen=True)
class Plan:
    """`argv` is the utility's, or for an image the command line that replaces its entrypoint
    (empty: the image's own entrypoint with the container's command and args)."""

    kind: Kind
    argv: tuple[str, ...] = ()
    port: int | None = None
    image: str = ""

    def describe(self) -> str:
        """What runs, for logs: names only, since expanded arguments may carry secret values."""
        if self.kind == "utility":
            return self.argv[0]
        if self.kind == "image":
            if self.image:
                return f"image {self.image}"
            return f"{posixpath.basename(self.argv[0])} in the simulator image"
        return self.kind


def serving_port(spec: Mapping[str, Any], env: Mapping[str, str]) -> int | None:
    """The TCP port the simulator listens on: NIM_SERVER_PORT if declared, else the first."""
    ports = [
        int(p["containerPort"])
        for p in spec.get("ports") or []
        if p.get("protocol", "TCP") == "TCP" and p.get("containerPort")
    ]
    wanted = env.get("NIM_SERVER_PORT", "")
    if wanted.isdigit() and int(wanted) in ports:
        return int(wanted)
    return ports[0] if ports else None


def is_nim_image(image: str) -> bool:
    """NIM images (nvcr.io/nim/...) and the simulator's own image run their arguments."""
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    parts = repository.split("/")
    return "nim" in parts[:-1] or parts[-1].startswith("nimsim")


def container_argv(spec: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args after $(VAR) expansion; args alone only where the image runs them."""
    values = dict(env)
    command = [expand(str(part), values) for part in spec.get("command") or []]
    args = [expand(str(part), values) for part in spec.get("args") or []]
    if command:
        return command + args
    return args if is_nim_image(str(spec.get("image", ""))) else []


def _shell_script(argv: list[str]) -> str | None:
    """SCRIPT of `sh -c SCRIPT` (with -e/-x style flags), else None."""
    if len(argv) < 3 or posixpath.basename(argv[0]) not in SHELLS:
        return None
    flags = argv[1]
    if not flags.startswith("-") or "c" not in flags or not set(flags[1:]) <= set("cex"):
        return None
    return argv[2]


def _mentions_utility(script: str, utilities: Collection[str]) -> bool:
    try:
        words = shlex.split(script, comments=True)
    except ValueError:
        return False
    return any(posixpath.basename(word) in utilities for word in words)


def plan(spec: Mapping[str, Any], env: Mapping[str, str], utilities: Collection[str]) -> Plan:
    image = str(spec.get("image", ""))
    port = serving_port(spec, env)
    built = lab_image(image)
    if built is not None:
        return Plan("image", port=port, image=built.reference)
    argv = container_argv(spec, env)
    if argv:
        name = posixpath.basename(argv[0])
        if name in utilities:
            return Plan("utility", (name, *argv[1:]))
        script = _shell_script(argv)
        around_utility = script is not None and _mentions_utility(script, utilities)
        if is_nim_image(image) and (port is None or around_utility):
            return Plan("image", tuple(argv), port=port)
    if port is not None:
        return Plan("server", port=port)
    return Plan("process")
