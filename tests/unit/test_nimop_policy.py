"""Admin guardrails for tenants (nimop.nimservice.policy) and their settings."""

from __future__ import annotations

from typing import Any

import pytest

from nimop.nimservice import models, policy
from nimop.settings import DENIED_POD_ANNOTATIONS, Settings

MINIMAL: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}
SECURE = Settings()


def violations(settings: Settings = SECURE, **fields: Any) -> list[str]:
    spec = models.NimServiceSpec.model_validate({**MINIMAL, **fields})
    return policy.violations(spec, settings)


def test_defaults_are_secure() -> None:
    assert SECURE.allow_root is False
    assert SECURE.allowed_priority_classes == ()
    assert SECURE.allowed_pod_annotations == ()
    assert SECURE.denied_pod_annotations == DENIED_POD_ANNOTATIONS


def test_a_plain_spec_breaks_no_guardrail() -> None:
    assert violations() == []
    assert violations(priorityClassName="inference-high", runtimeClassName="nvidia") == []
    assert violations(podAnnotations={"team": "ml", "karpenter.sh/do-not-disrupt": "true"}) == []


@pytest.mark.parametrize(
    ("security", "what"),
    [
        ({"runAsUser": 0, "runAsNonRoot": False}, "securityContext.runAsUser 0 is root"),
        ({"runAsGroup": 0}, "securityContext.runAsGroup 0 is root"),
        ({"fsGroup": 0}, "securityContext.fsGroup 0 is root"),
        ({"runAsNonRoot": False}, "securityContext.runAsNonRoot false"),
    ],
)
def test_root_is_refused_naming_the_setting_that_allows_it(
    security: dict[str, Any], what: str
) -> None:
    (found,) = violations(securityContext=security)
    assert what in found
    assert "NIMOP_ALLOW_ROOT=true" in found
    assert "guardrails.allowRoot" in found
    assert violations(Settings(allow_root=True), securityContext=security) == []


@pytest.mark.parametrize("name", ["system-node-critical", "system-cluster-critical", "system-x"])
def test_system_priority_classes_are_refused_by_default(name: str) -> None:
    (found,) = violations(priorityClassName=name)
    assert f"priorityClassName {name} is a system priority class" in found
    assert "NIMOP_ALLOWED_PRIORITY_CLASSES" in found


def test_a_priority_class_allowlist_allows_exactly_its_classes() -> None:
    settings = Settings(allowed_priority_classes=("inference", "system-cluster-critical"))
    assert violations(settings, priorityClassName="inference") == []
    assert violations(settings, priorityClassName="system-cluster-critical") == []
    (found,) = violations(settings, priorityClassName="batch")
    assert "priorityClassName batch is not one the operator's policy allows" in found
    assert "inference, system-cluster-critical" in found
    assert violations(settings) == [], "no class at all is always fine"


def test_a_runtime_class_allowlist() -> None:
    assert violations(runtimeClassName="anything") == []
    settings = Settings(allowed_runtime_classes=("nvidia",))
    assert violations(settings, runtimeClassName="nvidia") == []
    (found,) = violations(settings, runtimeClassName="kata")
    assert "runtimeClassName kata" in found
    assert "NIMOP_ALLOWED_RUNTIME_CLASSES" in found


@pytest.mark.parametrize(
    "key",
    [
        "container.apparmor.security.beta.kubernetes.io/nim",
        "Container.AppArmor.Security.Beta.Kubernetes.IO/nim",
        "seccomp.security.alpha.kubernetes.io/pod",
        "container.seccomp.security.alpha.kubernetes.io/nim",
        "io.kubernetes.cri-o.userns-mode",
        "io.katacontainers.config.hypervisor.kernel_params",
    ],
)
def test_security_annotations_are_refused_by_default(key: str) -> None:
    (found,) = violations(podAnnotations={key: "unconfined", "team": "ml"})
    assert f"podAnnotations {key} is a security-related annotation" in found
    assert "NIMOP_ALLOWED_POD_ANNOTATIONS" in found


def test_an_explicit_allow_wins_over_the_denylist() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/nim"
    settings = Settings(allowed_pod_annotations=("container.apparmor.*", "team"))
    assert violations(settings, podAnnotations={key: "localhost/nim", "team": "ml"}) == []


def test_an_annotation_allowlist_refuses_everything_else() -> None:
    settings = Settings(allowed_pod_annotations=("example.com/*",))
    assert violations(settings, podAnnotations={"example.com/owner": "me"}) == []
    (found,) = violations(settings, podAnnotations={"team": "ml"})
    assert "podAnnotations team matches none of the annotations" in found
    assert "example.com/*" in found


def test_every_violation_is_reported() -> None:
    found = violations(
        securityContext={"runAsUser": 0, "runAsNonRoot": False},
        priorityClassName="system-node-critical",
        podAnnotations={
            "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
            "container.apparmor.security.beta.kubernetes.io/nim": "unconfined",
        },
    )
    assert len(found) == 4


# -- settings --------------------------------------------------------------------------------------


def test_guardrails_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "NIMOP_ALLOW_ROOT": "true",
            "NIMOP_ALLOWED_PRIORITY_CLASSES": " high, low ,",
            "NIMOP_ALLOWED_RUNTIME_CLASSES": "nvidia",
            "NIMOP_ALLOWED_POD_ANNOTATIONS": "example.com/*,team",
            "NIMOP_DENIED_POD_ANNOTATIONS": "",
        }
    )
    assert settings.allow_root is True
    assert settings.allowed_priority_classes == ("high", "low")
    assert settings.allowed_runtime_classes == ("nvidia",)
    assert settings.allowed_pod_annotations == ("example.com/*", "team")
    assert settings.denied_pod_annotations == ()


def test_a_typo_in_a_guardrail_is_an_error_not_a_silent_default() -> None:
    with pytest.raises(ValueError, match="allow_root"):
        Settings.from_env({"NIMOP_ALLOW_ROOT": "yes please"})
