"""NimCache status as a pure function of what the operator observed.

The rules, so the status never claims more than the Job proved:

- Ready only when the Job has the Complete condition AND its succeeded pod's termination
  message parses as the script's report; profiles and bytes come from the report. A Complete
  Job without a report is Stalled/NoReport: a Job's success alone says nothing about what the
  volume holds.
- While attempts fail and the Job's backoffLimit is not used up: Reconciling, phase Retrying,
  with the attempt count and the container's own last error.
- Stalled only when a person must act: the Job has the Failed condition (the error is
  classified: AuthenticationFailed, DiskFull, NetworkError, else JobFailed), a referenced
  object is missing (the operator learns of a missing Secret or an image it cannot pull from
  the pod), the spec cannot work, or the Job reported nothing.
- observedGeneration always moves to the generation judged; Events only on transitions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nimop.core import conditions, pods
from nimop.core.apitypes import Condition
from nimop.core.children import ClaimFacts, JobFacts
from nimop.core.conditions import Cond, Event
from nimop.nimcache import models

Obj = dict[str, Any]
merge_patch = conditions.merge_patch

ORDER = ("Ready", "Reconciling", "Stalled")
PROFILE_ID = re.compile(r"^[0-9a-f]{64}$")
SUMMARY_LIMIT = 600
PULL_FAILURES = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


# -- the Job's report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What the download Job wrote to its termination log."""

    profiles: tuple[str, ...]
    count: int
    bytes: int


def parse_report(message: str) -> Report | None:
    """The script's JSON line, or None for anything else (empty, truncated, a log tail)."""
    text = message.strip()
    if not text.startswith("{") or "\n" in text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    profiles, size = data.get("profiles"), data.get("bytes")
    if not isinstance(profiles, list) or not all(
        isinstance(p, str) and PROFILE_ID.match(p) for p in profiles
    ):
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    count = data.get("count", len(profiles))
    if isinstance(count, bool) or not isinstance(count, int) or count < len(profiles):
        return None
    return Report(tuple(profiles), count, size)


def human_size(size: int) -> str:
    """Bytes in binary units, as kubectl users read quantities (16.2Gi)."""
    value = float(size)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{int(value)}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}"  # pragma: no cover  (the loop always returns)


# -- the container's error ------------------------------------------------------------------------

_DISK = re.compile(r"ENOSPC|No space left|Disk full|Errno 28\]|disk quota exceeded", re.IGNORECASE)
_AUTH = re.compile(
    r"\b(401|403)\b|Unauthorized|Authentication|authenticat|invalid (api )?key|"
    r"NGC_API_KEY was rejected",
    re.IGNORECASE,
)
_NETWORK = re.compile(
    r"Network is unreachable|network failure|Connection refused|Connection reset|"
    r"connect(ion)? timed out|timed out|Name or service not known|"
    r"Temporary failure in name resolution|could not resolve|getaddrinfo|EAI_AGAIN|"
    r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError|SSL:|TLS|ProxyError|"
    r"cannot connect|Max retries exceeded|NewConnectionError|ConnectTimeout",
    re.IGNORECASE,
)


def summary(message: str) -> str:
    """The part of a log tail a person needs: the last line that says error, else the last."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if "error" in line.lower()]
    text = errors[-1] if errors else lines[-1]
    return text if len(text) <= SUMMARY_LIMIT else "..." + text[-SUMMARY_LIMIT:]


def classify(message: str) -> str:
    """AuthenticationFailed, DiskFull, NetworkError or JobFailed, from the container's words."""
    if _DISK.search(message):
        return "DiskFull"
    if _AUTH.search(message):
        return "AuthenticationFailed"
    if _NETWORK.search(message):
        return "NetworkError"
    return "JobFailed"


@dataclass(frozen=True)
class ContainerError:
    pod: str
    exit_code: int | None
    message: str
    """The container's own words (summary of its termination message)."""
    full: str
    """The whole termination message, for classification."""

    def describe(self) -> str:
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        words = f": {self.message}" if self.message else " (no message in its log)"
        return f"pod {self.pod} failed ({code}){words}"


def last_error(facts: list[pods.PodFacts]) -> ContainerError | None:
    """The most recent failed attempt's error."""
    failed = [f for f in facts if f.phase == "Failed" or (f.exit_code not in (None, 0))]
    if not failed:
        return None
    latest = max(failed, key=lambda f: (f.finished_at or "", f.created or "", f.name))
    return ContainerError(
        latest.name,
        latest.exit_code,
        summary(latest.termination_message),
        latest.termination_message,
    )


# -- the snapshot and the judgement -------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    name: str
    namespace: str
    generation: int
    now: datetime
    spec: models.NimCacheSpec | None
    invalid: str | None = None
    """Why the spec cannot be realised (schema, API server rejection, name conflict)."""
    invalid_reason: str = "InvalidSpec"
    missing: tuple[str, ...] = ()
    """Referenced objects that do not exist, e.g. "ConfigMap proxy-ca"."""
    claim_name: str = ""
    creates_claim: bool = False
    claim: ClaimFacts | None = None
    """The claim the operator created, as the cache sees it (None: not yet, or existing)."""
    job_hash: str = ""
    job_name: str | None = None
    """The Job this spec runs; None when the cache is Ready for this spec without one."""
    job: JobFacts | None = None
    facts: list[pods.PodFacts] = field(default_factory=list)
    """The pods of `job`."""


@dataclass(frozen=True)
class Judgement:
    ready: Cond
    stalled: Cond | None
    phase: models.Phase
    report: Report | None = None


def _owner_hint(s: Snapshot) -> str:
    spec = s.spec
    if spec is None:
        return ""
    return f"Secret {spec.auth_secret} (key {spec.auth_secret_key})"


def _failed(s: Snapshot, job: JobFacts) -> Judgement:
    cond = job.failed_condition
    assert cond is not None
    error = last_error(s.facts)
    why = f"{cond.reason}: {cond.message}".strip(": ") if cond.reason else cond.message
    attempts = f"after {job.failed} failed attempt(s)"
    if error is None:
        message = f"Job {job.name} failed {attempts} ({why}); no pod reported an error"
        return Judgement(
            _not_ready("JobFailed", message), conditions.stalled("JobFailed", message), "Failed"
        )
    reason = classify(error.full or error.message)
    if reason == "AuthenticationFailed":
        message = (
            f"the NGC key in {_owner_hint(s)} was refused {attempts}: {error.message}; fix the "
            "Secret, then edit the NimCache (any spec change, e.g. backoffLimit) to retry"
        )
    elif reason == "DiskFull":
        message = (
            f"the cache volume (claim {s.claim_name}) is full {attempts}: {error.message}; "
            "enlarge storage.size or free space in the claim"
        )
    elif reason == "NetworkError":
        message = (
            f"the download could not reach NGC {attempts}: {error.message}; check the "
            "cluster's egress and spec.proxy (httpsProxy, noProxy, caBundle)"
        )
    else:
        message = f"Job {job.name} failed {attempts} ({why}): {error.describe()}"
    return Judgement(_not_ready(reason, message), conditions.stalled(reason, message), "Failed")


def _not_ready(reason: str, message: str) -> Cond:
    return Cond("Ready", "False", reason, message)


def _complete(s: Snapshot, job: JobFacts, prev: models.NimCacheStatus) -> Judgement:
    prev_ready = prev.condition("Ready")
    if prev.job == job.name and prev_ready is not None and prev_ready.status == "True":
        kept = Report(tuple(prev.profiles), prev.profile_count, prev.size_bytes)
        return Judgement(_cached(s, kept), None, "Ready", kept)
    succeeded = [f for f in s.facts if f.phase == "Succeeded" and f.exit_code == 0]
    for fact in sorted(succeeded, key=lambda f: f.finished_at or "", reverse=True):
        report = parse_report(fact.termination_message)
        if report is not None:
            return Judgement(_cached(s, report), None, "Ready", report)
    where = f"pod {succeeded[0].name}" if succeeded else "no succeeded pod is left and it"
    message = (
        f"Job {job.name} completed, but {where} wrote no report to /dev/termination-log, so "
        "what the cache holds is unknown; delete the Job to download again"
    )
    return Judgement(
        _not_ready("NoReport", message), conditions.stalled("NoReport", message), "Failed"
    )


def _cached(s: Snapshot, report: Report) -> Cond:
    where = f"claim {s.claim_name}" + (
        f" at {s.spec.storage.sub_path}" if s.spec and s.spec.storage.sub_path else ""
    )
    return Cond(
        "Ready",
        "True",
        "Cached",
        f"{report.count} profile(s), {human_size(report.bytes)} in {where}",
    )


def _waiting_on_pod(s: Snapshot) -> Judgement | None:
    """A pod that cannot start on its own: a missing Secret or ConfigMap, an image it cannot
    pull. The Job's backoffLimit never counts these (the pod does not fail), so only a person
    can end the wait."""
    for fact in pods.live(s.facts):
        ref = fact.missing_reference
        if ref is not None:
            kind, name = ref
            message = (
                f"{kind} {name} not found in namespace {s.namespace}: pod {fact.name} waits for "
                "it (CreateContainerConfigError) and starts once it exists"
            )
            return Judgement(
                _not_ready(f"{kind}NotFound", message),
                conditions.stalled(f"{kind}NotFound", message),
                "Pending",
            )
        if fact.waiting_reason in PULL_FAILURES:
            secrets = ", ".join(s.spec.image_pull_secrets) if s.spec else ""
            hint = f" (imagePullSecrets: {secrets})" if secrets else " (no imagePullSecrets set)"
            message = (
                f"pod {fact.name} cannot pull {s.spec.image.reference if s.spec else 'the image'}"
                f"{hint}: {fact.waiting_reason}: {fact.waiting_message}"
            )
            return Judgement(
                _not_ready(fact.waiting_reason, message),
                conditions.stalled(fact.waiting_reason, message),
                "Pending",
            )
    return None


def _in_progress(s: Snapshot, job: JobFacts) -> Judgement:
    waiting = _waiting_on_pod(s)
    if waiting is not None:
        return waiting
    live = pods.live(s.facts)
    running = next((f for f in live if f.running), None)
    if job.failed > 0:
        error = last_error(s.facts)
        said = error.describe() if error else "the failed pod left no error"
        now = f"attempt {job.failed + 1} is running" if running else "the Job retries"
        message = (
            f"{job.failed} of {job.backoff_limit + 1} attempt(s) failed, {now}; last error: {said}"
        )
        return Judgement(_not_ready("Retrying", message), None, "Retrying")
    if running is not None:
        message = f"pod {running.name} downloads the model profiles into claim {s.claim_name}"
        return Judgement(_not_ready("Downloading", message), None, "Downloading")
    if s.creates_claim and (s.claim is None or s.claim.phase != "Bound"):
        phase = s.claim.phase if s.claim else "not created yet"
        message = f"waiting for PersistentVolumeClaim {s.claim_name} to bind ({phase})"
        return Judgement(_not_ready("ClaimPending", message), None, "Pending")
    pending = next(iter(live), None)
    if pending is not None:
        why = pending.unschedulable or pending.waiting_reason or pending.phase
        message = f"pod {pending.name}: {why}"
        if pending.waiting_message:
            message += f": {pending.waiting_message}"
        return Judgement(_not_ready("JobPending", message), None, "Pending")
    return Judgement(
        _not_ready("JobPending", f"waiting for Job {job.name} to start a pod"), None, "Pending"
    )


def judge(s: Snapshot, prev: models.NimCacheStatus) -> Judgement:
    if s.invalid:
        return Judgement(
            _not_ready(s.invalid_reason, s.invalid),
            conditions.stalled(s.invalid_reason, f"{s.invalid}; nothing was changed"),
            "Failed",
        )
    if s.missing:
        kind = s.missing[0].split(" ", 1)[0]
        message = (
            f"{', '.join(s.missing)} not found in namespace {s.namespace}; nothing was changed, "
            "and the download starts once it exists"
        )
        return Judgement(
            _not_ready(f"{kind}NotFound", message),
            conditions.stalled(f"{kind}NotFound", message),
            "Pending",
        )
    if s.job_name is None:
        # Ready for this spec, and its Job is gone: the report in the status still holds.
        kept = Report(tuple(prev.profiles), prev.profile_count, prev.size_bytes)
        return Judgement(_cached(s, kept), None, "Ready", kept)
    job = s.job
    if job is None or job.name != s.job_name:
        message = f"creating Job {s.job_name}"
        return Judgement(_not_ready("Creating", message), None, "Pending")
    if job.complete:
        return _complete(s, job, prev)
    if job.failed_condition is not None:
        return _failed(s, job)
    return _in_progress(s, job)


def compute(s: Snapshot, prev: models.NimCacheStatus) -> models.NimCacheStatus:
    verdict = judge(s, prev)
    merged = conditions.merge(
        prev.conditions, conditions.kstatus(verdict.ready, verdict.stalled), s.generation, s.now
    )
    report = verdict.report
    job = s.job if s.job is not None and s.job.name == s.job_name else None
    kept = s.job_name is None
    return models.NimCacheStatus(
        observed_generation=s.generation,
        conditions=[Condition.model_validate(c.as_dict()) for c in merged],
        phase=verdict.phase,
        profiles=list(report.profiles) if report else [],
        profile_count=report.count if report else 0,
        size_bytes=report.bytes if report else 0,
        size=human_size(report.bytes) if report else "",
        pvc=s.claim_name,
        sub_path=(s.spec.storage.sub_path or "") if s.spec else prev.sub_path,
        job=prev.job if kept else (s.job_name or ""),
        job_hash=s.job_hash if report else (prev.job_hash if s.invalid or s.missing else ""),
        attempts=job.attempts if job else (prev.attempts if kept else 0),
        failed_attempts=job.failed if job else (prev.failed_attempts if kept else 0),
    )


def transitions(prev: models.NimCacheStatus, new: models.NimCacheStatus) -> list[Event]:
    """Events for what changed, never for steady state."""
    events: list[Event] = []
    ready_before, ready = prev.condition("Ready"), new.condition("Ready")
    stalled_before, stalled = prev.condition("Stalled"), new.condition("Stalled")
    if (
        stalled is not None
        and stalled.status == "True"
        and conditions.changed(stalled_before, stalled)
    ):
        events.append(Event("Warning", stalled.reason, stalled.message))
    if new.phase == "Retrying" and (
        prev.phase != "Retrying" or new.failed_attempts > prev.failed_attempts
    ):
        events.append(Event("Warning", "Retrying", ready.message if ready else ""))
    if new.phase == "Downloading" and prev.phase != "Downloading":
        events.append(Event("Normal", "Downloading", ready.message if ready else ""))
    if ready is not None and ready.status == "True" and conditions.changed(ready_before, ready):
        events.append(Event("Normal", "Ready", ready.message))
    return events


def steady(new: models.NimCacheStatus) -> bool:
    """Nothing for the fast interval to catch: every change to the Job or its pods wakes the
    pass through the watches. Only a missing ConfigMap or claim is polled (no watch sees it
    appear)."""
    stalled = new.condition("Stalled")
    return not (
        stalled is not None
        and stalled.status == "True"
        and stalled.reason
        in (
            "ConfigMapNotFound",
            "PersistentVolumeClaimNotFound",
        )
    )


def to_api(status: models.NimCacheStatus) -> Obj:
    result: Obj = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return result
