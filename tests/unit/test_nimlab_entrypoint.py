"""What a simulated container runs, and what the device plugin adds to its environment."""

from __future__ import annotations

from typing import Any

from nimlab.devices import device_env, gpu_product
from nimlab.entrypoint import container_argv, is_nim_image, plan

NIM = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
UTILITIES = frozenset({"download-to-cache", "list-model-profiles"})
PORTS = [{"name": "http", "containerPort": 8000}]


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "image": NIM, **fields}


def test_a_utility_command_runs_the_utility() -> None:
    chosen = plan(
        spec(command=["download-to-cache"], args=["--profiles", "$(P)"]), {"P": "x"}, UTILITIES
    )
    assert (chosen.kind, chosen.argv) == ("utility", ("download-to-cache", "--profiles", "x"))
    by_path = plan(spec(command=["/usr/bin/list-model-profiles"]), {}, UTILITIES)
    assert by_path.argv == ("list-model-profiles",)


def test_args_alone_run_only_under_a_nim_image() -> None:
    assert plan(spec(args=["download-to-cache", "--all"]), {}, UTILITIES).kind == "utility"
    busybox = {"name": "c", "image": "busybox:1.36", "args": ["download-to-cache"]}
    assert plan(busybox, {}, UTILITIES).kind == "process"
    assert is_nim_image("nvcr.io/nim/nvidia/llama-3.1-nemotron-70b-instruct:latest")
    assert is_nim_image("localhost:5000/nimsim:0.1")
    assert not is_nim_image("docker.io/library/busybox:1.36")
    assert not is_nim_image("registry.example.com:5000/nim-tools:1")


def test_a_port_without_a_utility_is_the_server() -> None:
    assert plan(spec(ports=PORTS), {}, UTILITIES).port == 8000
    served = plan(spec(ports=PORTS, command=["/opt/nim/start_server.sh"]), {}, UTILITIES)
    assert served.kind == "server"
    script = plan(spec(ports=PORTS, command=["sh", "-c", "start_server.sh"]), {}, UTILITIES)
    assert script.kind == "server"


def test_other_commands_of_a_nim_image_run_in_the_simulator_image() -> None:
    script = ["/bin/sh", "-ec", "download-to-cache && echo ok > /dev/termination-log"]
    chosen = plan(spec(command=script, args=["x"]), {}, UTILITIES)
    assert (chosen.kind, chosen.argv, chosen.image) == ("image", (*script, "x"), "")
    assert chosen.describe() == "sh in the simulator image"
    assert plan(spec(command=["sh", "script.sh"]), {}, UTILITIES).kind == "image"
    assert plan(spec(command=["sleep", "30"]), {}, UTILITIES).argv == ("sleep", "30")
    # A shell script around a utility, even with a port: not the server.
    around = ["sh", "-c", "list-model-profiles > /tmp/p; download-to-cache"]
    assert plan(spec(ports=PORTS, command=around), {}, UTILITIES).kind == "image"
    # Other images have no stand-in: their commands just run.
    busybox = {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]}
    assert plan(busybox, {}, UTILITIES).kind == "process"


def test_lab_built_images_run_their_own_entrypoint() -> None:
    for image in ("nimop:0.1.0", "localhost/nimop:0.1.0", "docker.io/library/nimsim:0.1.0"):
        chosen = plan({"name": "c", "image": image, "args": ["run"]}, {}, UTILITIES)
        assert (chosen.kind, chosen.argv) == ("image", ())
        assert chosen.image == image.rsplit("/", 1)[-1]
        assert chosen.describe() == f"image {chosen.image}"
    served = plan({"name": "c", "image": "nimsim:0.1.0", "ports": PORTS}, {}, UTILITIES)
    assert (served.kind, served.port) == ("image", 8000)
    # A registry's nimsim is a NIM-like image, served by the in-process simulator.
    assert plan(
        spec(image="registry.example.com/nimsim:0.1.0", ports=PORTS), {}, UTILITIES
    ).kind == ("server")


def test_command_and_args_expand_like_kubernetes() -> None:
    fields = spec(command=["echo", "$(A)", "$$(A)", "$(MISSING)"])
    assert container_argv(fields, {"A": "1"}) == ["echo", "1", "$(A)", "$(MISSING)"]
    assert container_argv({"name": "c", "image": "busybox", "args": ["x"]}, {}) == []


def test_the_device_plugin_exposes_the_allocated_gpus() -> None:
    container = {"name": "nim", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    env = device_env(container, labels, "uid-1")
    devices = env["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(devices) == 2
    assert all(d.startswith("GPU-") for d in devices)
    assert env["NIMSIM_GPU_PRODUCT"] == "H100"
    assert device_env(container, labels, "uid-1") == env  # stable per container
    assert device_env({"name": "cpu"}, labels, "uid-1") == {}
    assert gpu_product({"nvidia.com/gpu.product": "NVIDIA-L40S"}) == "L40S"
    assert gpu_product({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}) == "A100"
    assert gpu_product({}) is None
