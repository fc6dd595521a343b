"""Facts the unit tests feed the pure modules, built with one set of defaults."""

from __future__ import annotations

from typing import Any

from nimop.core import pods


def pod_facts(name: str = "p", **overrides: Any) -> pods.PodFacts:
    """A running, not yet Ready replica on a GPU node; `overrides` set any other field."""
    fields: dict[str, Any] = {
        "name": name,
        "ip": "127.1.0.1",
        "revision": "r",
        "model": "m",
        "phase": "Running",
        "terminating": False,
        "running": True,
        "ready": False,
        "gate": None,
        "waiting_reason": None,
        "waiting_message": "",
        "restarts": 0,
        "unschedulable": None,
        "node": "gpu-node-0",
    }
    fields.update(overrides)
    return pods.PodFacts(**fields)
