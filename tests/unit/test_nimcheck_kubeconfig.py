"""Reading credentials from kubeconfig files the way kubectl does (flag, KUBECONFIG list, file)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimcheck.errors import EXIT_USAGE, FatalError
from nimcheck.kubeconfig import kubeconfig_location, load_access


def write(
    path: Path, contexts: list[dict[str, Any]], users: list[dict[str, Any]], current: str | None
) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lab",
                "cluster": {"server": "https://127.0.0.1:6443/", "insecure-skip-tls-verify": True},
            }
        ],
        "users": users,
        "contexts": contexts,
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def ctx(name: str, user: str, namespace: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"cluster": "lab", "user": user}
    if namespace:
        body["namespace"] = namespace
    return {"name": name, "context": body}


def test_token_user_and_context_namespace(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        [ctx("team", "alice", "team-a")],
        [{"name": "alice", "user": {"token": "s3cret"}}],
        "team",
    )
    access = load_access(str(path))
    assert access.server == "https://127.0.0.1:6443"
    assert access.headers == {"Authorization": "Bearer s3cret"}
    assert (access.context, access.user, access.namespace) == ("team", "alice", "team-a")
    assert isinstance(access.verify, ssl.SSLContext)
    assert access.verify.verify_mode == ssl.CERT_NONE


def test_context_flag_picks_another_context_and_namespace_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        [ctx("a", "alice", "team-a"), ctx("b", "bob")],
        [{"name": "alice", "user": {"token": "1"}}, {"name": "bob", "user": {"token": "2"}}],
        "a",
    )
    access = load_access(str(path), "b")
    assert access.headers == {"Authorization": "Bearer 2"}
    assert access.namespace == "default"


def test_basic_auth_users_get_a_basic_header(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        [ctx("c", "u")],
        [{"name": "u", "user": {"username": "admin", "password": "pw"}}],
        "c",
    )
    assert load_access(str(path)).headers["Authorization"].startswith("Basic ")


def test_kubeconfig_list_merges_files(tmp_path: Path) -> None:
    first = write(
        tmp_path / "one", [ctx("a", "alice")], [{"name": "alice", "user": {"token": "1"}}], "a"
    )
    second = write(
        tmp_path / "two", [ctx("b", "bob")], [{"name": "bob", "user": {"token": "2"}}], None
    )
    access = load_access(f"{first}:{second}", "b")
    assert access.headers == {"Authorization": "Bearer 2"}


@pytest.mark.parametrize(
    ("setup", "context", "message"),
    [
        ("missing", None, "no kubeconfig at"),
        ("garbage", None, "cannot use kubeconfig"),
        ("valid", "nope", "context 'nope' is not in"),
        ("no-current", None, "sets no current-context; give --context (contexts: a)"),
    ],
)
def test_bad_kubeconfigs_are_one_usage_error(
    tmp_path: Path, setup: str, context: str | None, message: str
) -> None:
    path = tmp_path / "config"
    if setup == "garbage":
        path.write_text("clusters: [unclosed\n")
    elif setup == "valid":
        write(path, [ctx("a", "alice")], [{"name": "alice", "user": {"token": "1"}}], "a")
    elif setup == "no-current":
        write(path, [ctx("a", "alice")], [{"name": "alice", "user": {"token": "1"}}], None)
    with pytest.raises(FatalError) as err:
        load_access(str(path), context)
    assert message in err.value.message
    assert err.value.exit_code == EXIT_USAGE
    assert "\n" not in err.value.message


def test_location_is_flag_then_env_then_home() -> None:
    assert kubeconfig_location("/x", {"KUBECONFIG": "/y"}) == "/x"
    assert kubeconfig_location(None, {"KUBECONFIG": "/y:/z"}) == "/y:/z"
    assert kubeconfig_location(None, {}) == str(Path("~/.kube/config").expanduser())
