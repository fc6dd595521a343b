"""`make image` builds both images without a Docker engine, and nimlab.oci runs them with runc.

The module builds the images once (hack/image/build.sh: cached base image and build layers, so a
warm run takes seconds) and unpacks each once per digest. It never skips: build.sh installs any
missing tool from Debian's packages (CI runs as root on a fresh machine). Everything the
containers serve listens on a 127.3.x.y address of this session's own.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimlab.oci import ImageStore, RunSpec, Runtime, Tmpfs, UnpackedImage

from .helpers import REPO, wait_for

# A cold build (the base image from Debian packages, then both images) takes minutes on 2 cores.
pytestmark = pytest.mark.timeout(1800)

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SUBNET = f"127.3.{random.randint(1, 254)}"  # this session's own /24 of 127.3.0.0/16
SIM_PORT = 8000


@dataclass(frozen=True)
class Built:
    archives: dict[str, Path]
    output: str


@pytest.fixture(scope="module")
def built() -> Built:
    """Both images, as `make image` builds them (build.sh is what the target runs)."""
    out = subprocess.run(
        [str(REPO / "hack" / "image" / "build.sh")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"hack/image/build.sh failed:\n{out.stdout[-6000:]}"
    archives = {
        name: REPO / "build" / "images" / f"{name}-{VERSION}.tar" for name in ("nimop", "nimsim")
    }
    return Built(archives, out.stdout)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oci-state")


async def unpacked(built: Built, name: str) -> UnpackedImage:
    return await ImageStore().unpack(built.archives[name])


def read_member(archive: Path, name: str) -> Any:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None, f"{archive} has no {name}"
        return json.loads(member.read())


def image_config(archive: Path) -> dict[str, Any]:
    index = read_member(archive, "index.json")
    (entry,) = index["manifests"]
    manifest = read_member(archive, f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}")
    config: dict[str, Any] = read_member(
        archive, f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"
    )
    return config


class Lines:
    """A container's output, collected by the log callback."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def text(self, stream: str | None = None) -> str:
        return "\n".join(line for s, line in self.lines if stream in (None, s))


async def live(url: str, within: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 within {within:.0f}s")
            await asyncio.sleep(0.2)


def test_make_image_writes_both_images_as_oci_and_docker_archives(built: Built) -> None:
    assert "== images built with" in built.output, built.output
    for name, user, entrypoint in (
        ("nimop", "65532:65532", ["nimop"]),
        ("nimsim", "1000:1000", ["nimsim"]),
    ):
        archive = built.archives[name]
        assert archive.is_file(), f"{archive} missing; build.sh said:\n{built.output}"
        assert f"{name}:{VERSION}" in built.output
        config = image_config(archive)
        assert config["config"]["User"] == user
        assert config["config"]["Entrypoint"] == entrypoint
        # `docker load` reads manifest.json; skopeo reads both layouts from the same file.
        (docker,) = read_member(archive, "manifest.json")
        assert docker["RepoTags"] == [f"{name}:{VERSION}"]
        for transport in ("oci-archive", "docker-archive"):
            inspect = subprocess.run(
                ["skopeo", "inspect", "--config", f"{transport}:{archive}"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert json.loads(inspect.stdout)["config"]["User"] == user
    assert image_config(built.archives["nimop"])["config"]["Cmd"] == ["run"]


async def test_simulator_image_serves_its_api_on_a_loopback_address(
    built: Built, state_dir: Path
) -> None:
    image = await unpacked(built, "nimsim")
    ip = f"{SUBNET}.10"
    lines = Lines()
    run = RunSpec(env={"NIMSIM_HOST": ip, "NIM_SERVER_PORT": str(SIM_PORT)}, hostname="sim-0")
    async with await Runtime(state_dir).start(image, run, name="nimsim", log=lines) as container:
        response = await live(f"http://{ip}:{SIM_PORT}/v1/health/live")
        assert response.json()["object"] == "health.response"
        inside = await container.exec(["sh", "-c", "id -u; hostname"])
        assert inside.stdout.split() == ["1000", "sim-0"], inside
        assert await container.stop(grace=20) == 0
    assert "nimsim" in lines.text(), lines.text()


async def test_operator_image_entrypoint_prints_help(built: Built, state_dir: Path) -> None:
    image = await unpacked(built, "nimop")
    lines = Lines()
    run = RunSpec(args=("--help",), read_only_root=True, tmpfs=(Tmpfs("/tmp"),))
    async with await Runtime(state_dir).start(
        image, run, name="nimop-help", log=lines
    ) as container:
        assert await container.wait() == 0, lines.text()
    assert "usage" in lines.text("stdout").lower(), lines.text()
    assert "run" in lines.text("stdout")


CHECK = textwrap.dedent(
    """
    import errno, json, os, pathlib
    def status(pid):
        fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        keys = ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs")
        return {k: fields[k].split() for k in keys}
    def write(path):
        try:
            pathlib.Path(path).write_text("x")
            return "ok"
        except OSError as err:
            return errno.errorcode[err.errno]
    main = next(
        int(p.name) for p in pathlib.Path("/proc").iterdir()
        if p.name.isdigit() and p.joinpath("cmdline").read_bytes() == b"sleep\\x003600\\x00"
    )
    print(json.dumps({
        "self": status("self"), "main": status(main),
        "root": write("/probe"), "usr": write("/usr/local/probe"), "tmp": write("/tmp/probe"),
    }))
    """
)


async def test_operator_image_runs_as_65532_read_only_without_capabilities(
    built: Built, state_dir: Path
) -> None:
    """The chart's settings (read-only root, a writable /tmp, no capabilities), seen from inside."""
    image = await unpacked(built, "nimop")
    run = RunSpec(command=("sleep", "3600"), read_only_root=True, tmpfs=(Tmpfs("/tmp"),))
    async with await Runtime(state_dir).start(image, run, name="nimop-sec") as container:
        inside = await container.exec(["python", "-c", CHECK])
        assert inside.exit_code == 0, inside
        seen = json.loads(inside.stdout)
        for process in (seen["self"], seen["main"]):
            assert process["Uid"] == ["65532"] * 4
            assert process["Gid"] == ["65532"] * 4
            assert process["Groups"] == ["65532"]
            assert (
                process["CapEff"] == process["CapPrm"] == process["CapBnd"] == ["0000000000000000"]
            )
            assert process["NoNewPrivs"] == ["1"]
        assert seen["root"] == "EROFS"
        assert seen["usr"] == "EROFS"
        assert seen["tmp"] == "ok"
        await container.kill(signal.SIGKILL)
        assert await container.wait() == 128 + signal.SIGKILL


async def test_nothing_a_container_started_outlives_its_main_process(
    built: Built, state_dir: Path
) -> None:
    image = await unpacked(built, "nimsim")
    lines = Lines()
    # The background sleep keeps the output pipe open, and would keep running on its own.
    run = RunSpec(command=("sh", "-c", "sleep 3600 & echo started; sleep 2; exit 4"))
    async with await Runtime(state_dir).start(image, run, name="bg", log=lines) as container:
        members = processes_in(container.pid or 0)
        assert len(members) >= 4, members  # tini, the holder's sleep, sh, the background sleep
        assert await asyncio.wait_for(container.wait(), 30) == 4
    assert "started" in lines.text("stdout")
    assert all_gone(members)


async def test_many_simulators_at_once(built: Built, state_dir: Path) -> None:
    image = await unpacked(built, "nimsim")
    runtime = Runtime(state_dir)
    ips = [f"{SUBNET}.{20 + i}" for i in range(6)]
    containers = await asyncio.gather(
        *(
            runtime.start(image, RunSpec(env={"NIMSIM_HOST": ip}), name=f"sim-{i}")
            for i, ip in enumerate(ips)
        )
    )
    try:
        await asyncio.gather(*(live(f"http://{ip}:{SIM_PORT}/v1/health/live") for ip in ips))
        codes = await asyncio.gather(*(c.stop(grace=20) for c in containers))
        assert codes == [0] * len(ips)
    finally:
        await asyncio.gather(*(c.remove() for c in containers))
    assert list((state_dir / "bundles").iterdir()) == []


OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from nimlab.oci import ImageStore, Runtime, RunSpec
    async def main():
        image = await ImageStore().unpack(Path(sys.argv[1]))
        runtime = Runtime(Path(sys.argv[2]))
        run = RunSpec(command=("sh", "-c", "sleep 3600 & sleep 3601"))
        container = await runtime.start(image, run)
        print(container.id, container.pid, flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
    """
)


def processes_in(root_pid: int) -> set[int]:
    """Every process whose PID namespace is the one of root_pid (the container's)."""
    try:
        ns = Path(f"/proc/{root_pid}/ns/pid").readlink()
    except OSError:
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns" / "pid").readlink() == ns:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def all_gone(pids: set[int]) -> bool:
    """None of these processes runs any more (a zombie waiting for its parent counts as gone)."""
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[0] != "Z":
            return False
    return True


@pytest.fixture
def owner_process(built: Built, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(built.archives["nimsim"]), str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc, state
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_container_dies_with_its_caller_and_the_next_sweep_removes_it(
    owner_process: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, state = owner_process
    assert proc.stdout is not None
    container_id, pid = proc.stdout.readline().split()
    members = processes_in(int(pid))
    assert int(pid) in members
    assert len(members) >= 4  # tini, the holder's sleep, sh and its two sleeps
    proc.kill()  # SIGKILL: the caller gets no chance to clean up
    proc.wait()
    wait_for(
        "every process of the container to die with its caller",
        lambda: all_gone(members),
        timeout=30,
    )
    assert (state / "bundles" / container_id).is_dir()  # left behind on disk ...
    assert Runtime(state).sweep() == [container_id]  # ... until the next sweep
    assert list((state / "bundles").iterdir()) == []
    listed = subprocess.run(
        ["runc", "--root", str(state / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.strip() == ""
    assert str(state) not in Path("/proc/mounts").read_text()
