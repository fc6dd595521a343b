"""NimCache spec -> render parameters: every default and derived value, decided in one place.

The download runs in a Job whose one container is the NIM image itself, running a small fixed
POSIX shell script (SCRIPT) around the image's own utilities, `list-model-profiles` and
`download-to-cache` (https://docs.nvidia.com/nim/large-language-models/latest/utilities.html).
The user's choice of profiles reaches the script only as positional arguments, never as script
text, and the selector's regular expression is built here from validated enum and pattern
values. After the download the script writes one JSON line, `{"profiles": [...], "count": N,
"bytes": B}`, to /dev/termination-log: the pod's termination message is then the Job's own
report of what it wrote, which status.py requires before calling the cache Ready.

A Job's pod template is immutable, so the Job is named after a hash of everything that shapes
it (`job_hash`): a spec change that changes the pod makes a new Job and the old one is pruned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nimop import names
from nimop.core import apitypes, children, render
from nimop.core.children import JobFacts
from nimop.core.meta import ObjectRef
from nimop.nimcache import models

RESOURCE = "nimcache"
CONTAINER = "nim-cache"
CACHE_PATH = "/opt/nim/.cache"
"""Where the claim is mounted in the Job; NIM_CACHE_PATH points here (the NIM images' default
cache path)."""
TMP_PATH = "/tmp"
TERMINATION_LOG = "/dev/termination-log"
DEFAULT_ACCESS_MODES = ("ReadWriteMany",)
DEFAULT_REQUESTS: dict[str, int | str] = {"cpu": 1, "memory": "2Gi"}
"""A download is network and disk bound; this keeps the Job off BestEffort (evicted first)."""
REPORT_PROFILES = 50
"""At most this many ids in the report: the kubelet keeps only the last 4096 bytes of a
termination message file, and 50 ids of 64 hex digits take about 3.3 KB."""
LABEL_JOB_HASH = children.LABEL_JOB_HASH
ANNOTATION_GENERATION = children.ANNOTATION_GENERATION

# The script runs as `/bin/sh -ec SCRIPT nimcache MODE ARGS...`. It must stay POSIX (dash,
# busybox ash) and free of "$$" and "$(NAME)": the kubelet expands $(VAR) references and turns
# "$$" into "$" in command and args before the shell sees them (Kubernetes
# third_party/forked/golang/expansion); arithmetic $((...)) names no variable and is left alone.
SCRIPT = (
    r"""
# nimop NimCache download (operator/nimop/nimcache/params.py).
# Usage: MODE [ARGS...]; MODE is default | all | profiles ID-OR-NAME... |
# selector INCLUDE-REGEX EXCLUDE-REGEX DESCRIPTION.
mode="$1"
shift
work="${TMPDIR:-/tmp}/nimop-cache"
rm -rf "$work"
mkdir -p "$work"

# A proxy's CA, trusted in addition to the image's own roots (core/apitypes.py CA_MERGE).
bundle="$work/ca-bundle.crt"
"""
    + apitypes.CA_MERGE
    + r"""
if [ -n "${NIMOP_PROXY_CA:-}" ]; then
  SSL_CERT_FILE="$bundle"
  REQUESTS_CA_BUNDLE="$bundle"
  CURL_CA_BUNDLE="$bundle"
  export SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE
fi

# "ID NAME" for every profile the image lists, compatible with this pod's GPUs or not.
list_profiles() {
  if ! list-model-profiles > "$work/list" 2>&1; then
    cat "$work/list"
    echo "Error: list-model-profiles failed"
    exit 1
  fi
  sed -n 's/^ *- \([0-9a-f]\{64\}\) (\([^()]*\))$/\1 \2/p' "$work/list" | sort -u > "$work/profiles"
  if [ ! -s "$work/profiles" ]; then
    cat "$work/list"
    echo "Error: list-model-profiles printed no profile this script can read"
    exit 1
  fi
}

: > "$work/selected"
case "$mode" in
  default)
    set --
    ;;
  all)
    list_profiles
    cut -d ' ' -f 1 "$work/profiles" > "$work/selected"
    set -- --all
    ;;
  profiles)
    for wanted in "$@"; do
      if printf '%s\n' "$wanted" | grep -Eq '^[0-9a-f]{64}$'; then
        printf '%s\n' "$wanted" >> "$work/selected"
        continue
      fi
      if [ ! -s "$work/profiles" ]; then
        list_profiles
      fi
      found=""
      while read -r id name; do
        if [ "$name" = "$wanted" ]; then
          printf '%s\n' "$id" >> "$work/selected"
          found=yes
        fi
      done < "$work/profiles"
      if [ -z "$found" ]; then
        echo "The image lists these profiles:"
        cut -d ' ' -f 2 "$work/profiles"
        printf 'Error: the image has no profile named %s\n' "$wanted"
        exit 1
      fi
    done
    sort -u "$work/selected" > "$work/unique"
    mv "$work/unique" "$work/selected"
    set -- --profiles
    while read -r id; do
      set -- "$@" "$id"
    done < "$work/selected"
    ;;
  selector)
    include="$1"
    exclude="$2"
    described="$3"
    list_profiles
    grep -E -- "$include" "$work/profiles" > "$work/matched" || true
    if [ -n "$exclude" ]; then
      grep -v -E -- "$exclude" "$work/matched" > "$work/kept" || true
      mv "$work/kept" "$work/matched"
    fi
    if [ ! -s "$work/matched" ]; then
      echo "The image lists these profiles:"
      cut -d ' ' -f 2 "$work/profiles"
      printf 'Error: no profile of this image matches the selector (%s)\n' "$described"
      exit 1
    fi
    cut -d ' ' -f 1 "$work/matched" > "$work/selected"
    set -- --profiles
    while read -r id; do
      set -- "$@" "$id"
    done < "$work/selected"
    ;;
  *)
    printf 'Error: unknown mode %s\n' "$mode"
    exit 2
    ;;
esac

echo "nimcache: download-to-cache $*"
{
  status=0
  download-to-cache "$@" 2>&1 || status=$?
  echo "$status" > "$work/status"
} | tee "$work/download.log"
read -r status < "$work/status"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

# NIM's own choice: the profile its log names.
if [ "$mode" = default ]; then
  sed -n 's/.*[Ss]elected profile:* \([0-9a-f]\{64\}\).*/\1/p' "$work/download.log" \
    | sort -u > "$work/selected"
  if [ ! -s "$work/selected" ]; then
    sed -n 's/.*[Pp]rofile[: ]*\([0-9a-f]\{64\}\).*/\1/p' "$work/download.log" \
      | sort -u > "$work/selected"
  fi
fi

if du -sb "$NIM_CACHE_PATH" > "$work/du" 2> /dev/null; then
  read -r bytes rest < "$work/du"
else
  du -sk "$NIM_CACHE_PATH" > "$work/du"
  read -r kib rest < "$work/du"
  bytes=$((kib * 1024))
fi

count=0
ids=""
while read -r id; do
  count=$((count + 1))
  if [ "$count" -le 50 ]; then
    ids="$ids${ids:+,}\"$id\""
  fi
done < "$work/selected"
printf '{"profiles":[%s],"count":%s,"bytes":%s}\n' "$ids" "$count" "$bytes" \
  > "${NIMOP_TERMINATION_LOG:-/dev/termination-log}"
printf 'nimcache: cached %s profile(s), %s bytes in %s\n' "$count" "$bytes" "$NIM_CACHE_PATH"
"""
)
SCRIPT_NAME = "nimcache"
"""The script's $0, so the shell's own error messages name it."""


# -- the profile choice ---------------------------------------------------------------------------

TOKEN = "[^ ()-]+"
"""One dash-separated part of a profile name."""
PROFILE_ID = "[0-9a-f]{64}"


def selector_patterns(selector: models.ProfileSelector) -> tuple[str, str]:
    """(include, exclude) extended regular expressions over the script's `ID NAME` lines.

    NIM names profiles with their parts in a fixed order, engine first:
    `<engine>-<gpu>-<precision>-tp<N>[-pp<M>]-<kind>[-lora]`, where GPU-independent ones leave
    out the gpu and kind. Each selected part must be one whole part of the name, in that order;
    any other parts may come between. Every value comes from an enum or a pattern without
    regex metacharacters, so it stands for itself. `lora: false` cannot be said in an ERE and
    becomes the exclude pattern."""
    head = selector.engine or TOKEN
    tp = f"tp{selector.tensor_parallelism}" if selector.tensor_parallelism else None
    parts = [selector.gpu, selector.precision, tp, selector.kind]
    if selector.lora:
        parts.append("lora")
    skip = f"(-{TOKEN})*"
    middle = "".join(f"{skip}-{part}" for part in parts if part)
    include = f"^{PROFILE_ID} {head}{middle}{skip}$"
    exclude = "-lora(-|$)" if selector.lora is False else ""
    return include, exclude


def describe_selector(selector: models.ProfileSelector) -> str:
    values = selector.model_dump(by_alias=True, exclude_none=True)
    return ", ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()
    )


def script_arguments(spec: models.NimCacheSpec) -> list[str]:
    """The script's positional arguments for the spec's choice of profiles."""
    if spec.profiles is not None:
        return ["profiles", *spec.profiles]
    if spec.all_profiles:
        return ["all"]
    if spec.selector is not None:
        include, exclude = selector_patterns(spec.selector)
        return ["selector", include, exclude, describe_selector(spec.selector)]
    return ["default"]


# -- names --------------------------------------------------------------------------------------


def claim_name(name: str) -> str:
    return names.nimcache_claim_name(name)


def job_name(name: str, job_hash: str, generation: int | None = None) -> str:
    """`<name>-<hash>`; a retry of a failed Job after an edit adds the edit's generation."""
    suffix = job_hash if generation is None else f"{job_hash}-{generation}"
    return names.dns_label(name, suffix)


def owner_labels(name: str) -> dict[str, str]:
    """What the operator's watches select the Job, its pods and the claim by."""
    return {
        names.LABEL_NAME: "nim-cache",
        names.LABEL_INSTANCE: names.dns_label(name),
        names.LABEL_MANAGED_BY: names.COMPONENT,
        names.LABEL_COMPONENT: "model-cache",
        names.LABEL_NIMCACHE: names.dns_label(name),
    }


@dataclass(frozen=True)
class JobChoice:
    """Which Job the pass wants: `name` None means none (the cache is Ready for this spec and its
    Job is gone; nothing is re-run)."""

    name: str | None
    generation: int
    """The NimCache generation the Job is created for (annotated on it)."""


def choose_job(
    name: str,
    job_hash: str,
    generation: int,
    live: Sequence[JobFacts],
    ready_hash: str | None,
) -> JobChoice:
    """Pure: the Job for this spec, decided from the live Jobs and the stored status alone, so a
    restarted operator decides the same.

    - A live Job of this pod spec is kept, running, done or failed, except that a failed one is
      retried by a fresh Job when the spec was edited after it was created (fix the Secret, then
      edit anything, e.g. backoffLimit).
    - With no live Job of this spec: none when the status says the cache is Ready for it (its Job
      was deleted; re-running would download again for nothing), else a new one.
    """
    mine = [j for j in live if j.labels.get(LABEL_JOB_HASH) == job_hash and not j.deleting]
    if mine:
        latest = max(mine, key=lambda j: (j.created_generation or 0, j.name))
        created = latest.created_generation or 0
        if latest.failed_condition is not None and generation > created:
            return JobChoice(job_name(name, job_hash, generation), generation)
        return JobChoice(latest.name, created)
    if ready_hash == job_hash:
        return JobChoice(None, generation)
    return JobChoice(job_name(name, job_hash), generation)


# -- the parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """Everything a template may use. Templates reach it as `p`."""

    name: str
    namespace: str
    owner: dict[str, Any]
    labels: dict[str, str]
    """On the claim, the Job and the Job's pods."""
    claim_name: str
    """The claim holding the cache: created or existing."""
    claim: dict[str, Any] | None
    """The spec of the claim the operator creates; None for an existing claim."""
    sub_path: str | None
    job_hash: str
    """Hash of everything that shapes the Job's pod, and of the templates."""
    job_name: str | None
    """Set by `with_job`; None renders no Job."""
    job_generation: int
    backoff_limit: int
    active_deadline_seconds: int | None
    image: str
    pull_policy: str
    image_pull_secrets: list[dict[str, str]]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    pod_security_context: dict[str, Any]
    container_security_context: dict[str, Any]
    container: str
    command: list[str]
    args: list[str]
    env: list[dict[str, Any]]
    resources: dict[str, dict[str, int | str]]
    volumes: list[dict[str, Any]]
    volume_mounts: list[dict[str, Any]]
    termination_message_path: str

    @property
    def job_labels(self) -> dict[str, str]:
        return {**self.labels, LABEL_JOB_HASH: self.job_hash}

    @property
    def job_annotations(self) -> dict[str, str]:
        return {ANNOTATION_GENERATION: str(self.job_generation)}


# The fields that end up in the Job's pod template, and so in its name.
POD_FIELDS = (
    "labels",
    "image",
    "pull_policy",
    "image_pull_secrets",
    "node_selector",
    "tolerations",
    "pod_security_context",
    "container_security_context",
    "container",
    "command",
    "args",
    "env",
    "resources",
    "volumes",
    "volume_mounts",
    "termination_message_path",
)


def tolerations(spec: models.NimCacheSpec) -> list[dict[str, Any]]:
    if spec.tolerations is None:
        return [{"key": names.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]


def resources(spec: models.NimCacheSpec) -> dict[str, dict[str, int | str]]:
    """As given, over default requests; a resource the user only limits gets no default request
    (Kubernetes then requests the limit, and a default above it would be refused)."""
    requests: dict[str, int | str] = dict(spec.resources.requests)
    limits: dict[str, int | str] = dict(spec.resources.limits)
    for name, value in DEFAULT_REQUESTS.items():
        if name not in requests and name not in limits:
            requests[name] = value
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def claim(spec: models.NimCacheSpec) -> dict[str, Any] | None:
    storage = spec.storage
    if storage.size is None:
        return None
    result: dict[str, Any] = {
        "accessModes": list(storage.access_modes or DEFAULT_ACCESS_MODES),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        result["storageClassName"] = storage.storage_class_name
    return result


def env(spec: models.NimCacheSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "NGC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": spec.auth_secret, "key": spec.auth_secret_key}},
        },
        {"name": "NIM_CACHE_PATH", "value": CACHE_PATH},
        {"name": "NIMOP_TERMINATION_LOG", "value": TERMINATION_LOG},
        *apitypes.proxy_env(spec.proxy),
    ]
    if spec.proxy is not None and spec.proxy.ca_bundle is not None:
        out.append({"name": apitypes.CA_PROXY_ENV, "value": apitypes.CA_BUNDLE_PATH})
    return out


def volumes(
    spec: models.NimCacheSpec, claim_name_: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cache_mount: dict[str, Any] = {"name": "model-cache", "mountPath": CACHE_PATH}
    if spec.storage.sub_path:
        cache_mount["subPath"] = spec.storage.sub_path
    vols: list[dict[str, Any]] = [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim_name_}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [cache_mount, {"name": "tmp", "mountPath": TMP_PATH}]
    ca_vols, ca_mounts = apitypes.ca_bundle_volume(spec.proxy)
    return vols + ca_vols, mounts + ca_mounts


def job_hash(values: dict[str, Any], template_fingerprint: str) -> str:
    return render.canonical_hash(
        {"pod": {k: values[k] for k in POD_FIELDS}, "templates": template_fingerprint}
    )


def build(spec: models.NimCacheSpec, ref: ObjectRef, template_fingerprint: str = "") -> Params:
    """Pure: the same spec, object and templates always give the same parameters. The Job to
    run is decided afterwards (`choose_job`, `with_job`)."""
    name = ref.name
    owned_claim = claim(spec)
    pvc = claim_name(name) if owned_claim else str(spec.storage.existing_claim)
    vols, mounts = volumes(spec, pvc)
    values: dict[str, Any] = {
        "name": name,
        "namespace": ref.namespace,
        "owner": ref.owner_reference(),
        "labels": owner_labels(name),
        "claim_name": pvc,
        "claim": owned_claim,
        "sub_path": spec.storage.sub_path,
        "job_name": None,
        "job_generation": ref.generation,
        "backoff_limit": spec.backoff_limit,
        "active_deadline_seconds": spec.active_deadline_seconds,
        "image": spec.image.reference,
        "pull_policy": spec.image.pull_policy,
        "image_pull_secrets": [{"name": s} for s in spec.image_pull_secrets],
        "node_selector": dict(spec.node_selector),
        "tolerations": tolerations(spec),
        "pod_security_context": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "container": CONTAINER,
        "command": ["/bin/sh", "-ec", SCRIPT, SCRIPT_NAME],
        "args": script_arguments(spec),
        "env": env(spec),
        "resources": resources(spec),
        "volumes": vols,
        "volume_mounts": mounts,
        "termination_message_path": TERMINATION_LOG,
    }
    return Params(**values, job_hash=job_hash(values, template_fingerprint))


def with_job(params: Params, choice: JobChoice) -> Params:
    return dataclasses.replace(params, job_name=choice.name, job_generation=choice.generation)
