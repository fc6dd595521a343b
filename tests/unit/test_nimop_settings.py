"""Operator settings from NIMOP_* environment variables (nimop.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from nimop.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.namespaces == ()
    assert settings.probe_interval_fast == 5.0
    assert settings.probe_interval_steady == 60.0
    assert settings.probe_timeout == 2.0
    assert settings.probe_concurrency == 64
    assert settings.probe_mode == "direct"
    assert settings.templates_dir is None
    assert settings.http_address == "0.0.0.0:8080"
    assert (settings.watch_server_timeout, settings.watch_client_timeout) == (300, 330)
    assert settings.leader_election is False
    assert (settings.lease_name, settings.lease_namespace, settings.lease_seconds) == (
        "nimop",
        "",
        15,
    )
    assert settings.log_level == "INFO"
    assert settings.log_json is False


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"HOME": "/root", "NIMOP": "x", "NIMOPX_PRIORITY": "3"}) == Settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a, b", ("a", "b")),
        ("a,b,", ("a", "b")),
        (" nim ", ("nim",)),
        ("a,,  ,b", ("a", "b")),
        (" , ", ()),
    ],
)
def test_namespaces_are_a_comma_separated_list(value: str, expected: tuple[str, ...]) -> None:
    assert Settings.from_env({"NIMOP_NAMESPACES": value}).namespaces == expected


def test_numbers_strings_and_paths_parse() -> None:
    settings = Settings.from_env(
        {
            "NIMOP_PROBE_INTERVAL_FAST": "2.5",
            "NIMOP_PROBE_INTERVAL_STEADY": "90",
            "NIMOP_PROBE_TIMEOUT": "0.5",
            "NIMOP_PROBE_CONCURRENCY": "8",
            "NIMOP_PROBE_MODE": "proxy",
            "NIMOP_TEMPLATES_DIR": "/etc/nimop/templates",
            "NIMOP_HTTP_ADDRESS": "127.0.0.1:9090",
            "NIMOP_WATCH_SERVER_TIMEOUT": "60",
            "NIMOP_WATCH_CLIENT_TIMEOUT": "90",
            "NIMOP_LEADER_ELECTION": "true",
            "NIMOP_LEASE_NAME": "nimop-ha",
            "NIMOP_LEASE_NAMESPACE": "nimop-system",
            "NIMOP_LEASE_SECONDS": "5",
            "NIMOP_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.probe_interval_fast == 2.5
    assert settings.probe_interval_steady == 90.0
    assert settings.probe_timeout == 0.5
    assert settings.probe_concurrency == 8
    assert settings.probe_mode == "proxy"
    assert settings.templates_dir == Path("/etc/nimop/templates")
    assert settings.http_address == "127.0.0.1:9090"
    assert (settings.watch_server_timeout, settings.watch_client_timeout) == (60, 90)
    assert settings.leader_election is True
    assert (settings.lease_name, settings.lease_namespace, settings.lease_seconds) == (
        "nimop-ha",
        "nimop-system",
        5,
    )
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "on"])
def test_true_booleans(value: str) -> None:
    assert Settings.from_env({"NIMOP_LOG_JSON": value}).log_json is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off"])
def test_false_booleans(value: str) -> None:
    assert Settings.from_env({"NIMOP_LOG_JSON": value}).log_json is False


def test_empty_variables_keep_the_default() -> None:
    assert Settings.from_env({"NIMOP_PROBE_TIMEOUT": "", "NIMOP_NAMESPACES": ""}) == Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NIMOP_PROBE_TIMEOUT", "soon"),
        ("NIMOP_PROBE_TIMEOUT", "0"),
        ("NIMOP_PROBE_INTERVAL_FAST", "-1"),
        ("NIMOP_PROBE_INTERVAL_STEADY", "0"),
        ("NIMOP_PROBE_CONCURRENCY", "0"),
        ("NIMOP_PROBE_CONCURRENCY", "2.5"),
        ("NIMOP_PROBE_MODE", "sideways"),
        ("NIMOP_WATCH_SERVER_TIMEOUT", "0"),
        ("NIMOP_LEASE_SECONDS", "soon"),
    ],
)
def test_invalid_values_raise(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["ture", "enabled", "2"])
def test_invalid_booleans_raise(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.from_env({"NIMOP_LOG_JSON": value})


def test_settings_are_frozen_and_closed() -> None:
    with pytest.raises(ValidationError):
        Settings(probe_timeout=1, unknown=1)  # type: ignore[call-arg]
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.lease_seconds = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        (":9090", ("0.0.0.0", 9090)),
        ("localhost:1", ("localhost", 1)),
        ("", None),
    ],
)
def test_host_port(address: str, expected: tuple[str, int] | None) -> None:
    assert Settings(http_address=address).host_port() == expected


def test_empty_http_address_from_the_environment_disables_http() -> None:
    assert Settings.from_env({"NIMOP_HTTP_ADDRESS": ""}).host_port() is None


def test_host_port_unbrackets_ipv6() -> None:
    assert Settings(http_address="[::]:8080").host_port() == ("::", 8080)


def test_lease_namespace_falls_back_to_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(lease_namespace="ops").resolved_lease_namespace() == "ops"
    monkeypatch.setenv("POD_NAMESPACE", "nimop-system")
    assert Settings().resolved_lease_namespace() == "nimop-system"


@pytest.mark.parametrize("mode", ["auto", "karpenter", "cluster-autoscaler", "none"])
def test_node_autoscaler_modes(mode: str) -> None:
    assert Settings.from_env({"NIMOP_NODE_AUTOSCALER": mode}).node_autoscaler == mode


def test_an_unknown_node_autoscaler_is_refused() -> None:
    with pytest.raises(ValueError, match="node_autoscaler"):
        Settings.from_env({"NIMOP_NODE_AUTOSCALER": "cluster-autoscalar"})
