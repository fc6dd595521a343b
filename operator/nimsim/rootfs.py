"""A container's own writable filesystem, for paths no volume covers.

When ``NIMSIM_PATH_MAP`` is set (even to ``{}``) the simulator stands in for a container
whose volumes are the mapped directories. Everything else a real container
writes (``/opt/nim/.cache`` without a cache volume, say) lands in its writable
layer, which the container runtime discards with the container. The simulator
does the same: unmapped paths go to a scratch directory that lives exactly as
long as the simulated process, so a NIM without a cache volume downloads on
every start, and nothing is ever written to the host's own ``/opt`` or ``/dev``.

Without a path map, paths are used as they are: the simulator then is the
container's process itself (the simulator image) or a developer's tool.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from nimsim.config import SimConfig


class Rootfs:
    """The scratch directory behind a config's unmapped paths (none when not needed)."""

    def __init__(self, config: SimConfig) -> None:
        self.path: Path | None = None
        if config.in_container and not any(c.rstrip("/") == "" for c, _ in config.path_map):
            self.path = Path(tempfile.mkdtemp(prefix="nimsim-rootfs-"))
            config = dataclasses.replace(config, path_map=(*config.path_map, ("/", str(self.path))))
        self.config = config

    def remove(self) -> None:
        """Discard the writable layer, as removing a container does; idempotent."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
