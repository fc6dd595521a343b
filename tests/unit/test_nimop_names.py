"""Child names and label values derived from any valid NimService name (nimop.names)."""

from __future__ import annotations

import hashlib
import re
import string

import pytest

from nimop import names
from nimop.nimservice import models

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(models.LABEL_VALUE_PATTERN)
DNS_SUBDOMAIN = re.compile(models.DNS_SUBDOMAIN_PATTERN)

# Valid NimService names (DNS-1123 subdomains) that are not valid DNS-1035 labels.
AWKWARD_NAMES = [
    "llama-3.1-8b.instruct.v2",
    "3llama",
    "8b",
    "0",
    "a" * 64,
    "a" * 253,
    "x" + "-y" * 126,
    ".".join(["a" * 61] * 4) + ".abcde",
    "nim.example.com",
    "1.2.3",
]


def is_dns1035(value: str) -> bool:
    return len(value) <= names.MAX_LABEL and bool(DNS1035.match(value))


def short_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_awkward_names_are_valid_nimservice_names(name: str) -> None:
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name)


@pytest.mark.parametrize("name", ["llama", "a", "llama-3-1-8b-instruct", "a" * 63, "x1-y2"])
def test_valid_short_name_is_kept_as_is(name: str) -> None:
    assert names.dns_label(name) == name
    assert names.deployment_name(name) == name
    assert names.service_name(name) == name


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_awkward_name_becomes_a_dns1035_label_carrying_a_hash_of_the_original(name: str) -> None:
    label = names.dns_label(name)
    assert is_dns1035(label), label
    assert short_hash(name) in label


@pytest.mark.parametrize("name", ["llama", "a" * 58, "a" * 63, *AWKWARD_NAMES])
def test_cache_claim_name_is_a_dns1035_label(name: str) -> None:
    claim = names.cache_claim_name(name)
    assert is_dns1035(claim), claim
    assert claim.endswith("-cache")
    assert claim != names.deployment_name(name)


def test_cache_claim_of_a_short_name_reads_naturally() -> None:
    assert names.cache_claim_name("llama") == "llama-cache"


def test_dotted_name_maps_to_a_fixed_label_across_processes() -> None:
    # A literal, not a recomputation: child names must never change between operator versions
    # or Python processes (hash randomisation), or every NimService would orphan its children.
    assert names.dns_label("llama-3.1-8b.instruct.v2") == "llama-3-1-8b-instruct-v2-8954654a"


@pytest.mark.parametrize("name", ["llama", *AWKWARD_NAMES])
def test_same_input_gives_same_names_on_every_call(name: str) -> None:
    first = (names.dns_label(name), names.cache_claim_name(name), names.common_labels(name))
    second = (names.dns_label(name), names.cache_claim_name(name), names.common_labels(name))
    assert first == second


def near_identical_long_names() -> list[str]:
    alnum = string.ascii_lowercase + string.digits
    batch = ["a" * 252 + c for c in alnum]  # differ only in the last character
    batch += ["a" * 100 + c + "a" * 152 for c in alnum]  # differ deep inside the truncated part
    batch += [f"{'b' * 70}.{i}" for i in range(50)]
    batch += [f"{'b' * 70}-{i}" for i in range(50)]
    batch += ["llama.3", "llama-3", "llama.3.1", "llama-3-1", "llama.3-1", "llama-3.1"]
    batch += [f"{i}llama" for i in range(10)] + [f"n-{i}llama" for i in range(10)]
    return list(dict.fromkeys(batch))


def test_near_identical_names_never_collide() -> None:
    batch = near_identical_long_names()
    assert len(batch) > 150
    labels = [names.dns_label(n) for n in batch]
    claims = [names.cache_claim_name(n) for n in batch]
    assert all(is_dns1035(v) for v in labels + claims)
    assert len(set(labels)) == len(batch)
    assert len(set(claims)) == len(batch)


@pytest.mark.parametrize("name", ["llama", *AWKWARD_NAMES])
def test_selector_and_common_label_values_are_valid_label_values(name: str) -> None:
    labels = {**names.common_labels(name), **names.selector_labels(name)}
    for value in labels.values():
        assert len(value) <= names.MAX_LABEL
        assert LABEL_VALUE.match(value), value


def test_common_labels_include_the_selector() -> None:
    common = names.common_labels("llama")
    assert names.selector_labels("llama").items() <= common.items()
    assert common[names.LABEL_MANAGED_BY] == "nimop"
    assert common[names.LABEL_INSTANCE] == "llama"


def test_selector_string_matches_selector_labels() -> None:
    assert names.selector_string("llama.v2") == ",".join(
        f"{k}={v}" for k, v in sorted(names.selector_labels("llama.v2").items())
    )


@pytest.mark.parametrize(
    ("name", "namespace", "port", "expected"),
    [
        ("llama", "default", 8000, "http://llama.default.svc.cluster.local:8000"),
        ("llama", "nim", 9000, "http://llama.nim.svc.cluster.local:9000"),
        (
            "llama-3.1-8b.instruct.v2",
            "ai",
            8000,
            "http://llama-3-1-8b-instruct-v2-8954654a.ai.svc.cluster.local:8000",
        ),
    ],
)
def test_endpoint_is_the_in_cluster_service_url(
    name: str, namespace: str, port: int, expected: str
) -> None:
    assert names.endpoint(name, namespace, port) == expected
