"""What the operator writes on the status: phase and conditions, derived from the aggregator's
Job, the certificates and the aggregator's own reports. Pure functions.

Conditions follow ``metav1.Condition``: a condition's ``lastTransitionTime`` changes only when
its status does, and every condition carries the generation it was computed for, so kstatus and
Argo CD can tell a stale status from a current one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fedwarden.api.training import FederatedTrainingSpec


def rfc3339(value: dt.datetime) -> str:
    """A time as Kubernetes writes it: UTC, whole seconds, ``Z``."""
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class ConditionValue:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str


def merge_conditions(
    previous: list[dict[str, Any]], new: list[ConditionValue], generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions to write: each new value, keeping the old transition time when the status
    did not change. Conditions not in ``new`` are dropped (the operator owns the whole list)."""
    old = {c["type"]: c for c in previous}
    out = []
    for value in new:
        status = "Unknown" if value.status is None else ("True" if value.status else "False")
        before = old.get(value.type)
        since = before["lastTransitionTime"] if before and before["status"] == status else now
        out.append(
            {
                "type": value.type,
                "status": status,
                "reason": value.reason,
                "message": value.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def _job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    if job is None:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


@dataclass(frozen=True)
class TrainingState:
    """Everything the training's status is computed from."""

    spec: FederatedTrainingSpec
    generation: int
    job: dict[str, Any] | None
    certificates_ready: bool
    certificates_message: str
    enrolled_clients: int
    reported: dict[str, Any]
    """The status as it stands (the aggregator's fields: round, epsilonSpent, ...)."""


def training_status(state: TrainingState, now: str) -> dict[str, Any]:
    """The fields the operator owns on a FederatedTraining's status."""
    spec, reported = state.spec, state.reported
    rounds_done = int(reported.get("round") or 0)
    epsilon = reported.get("epsilonSpent")
    complete = _job_condition(state.job, "Complete")
    failed = _job_condition(state.job, "Failed")
    job_status = (state.job or {}).get("status") or {}
    running = int(job_status.get("active") or 0) > 0
    ready_pods = int(job_status.get("ready") or 0)
    privacy_state_lost = reported.get("privacyStateLost")
    budget_exhausted = (
        complete is not None
        and spec.privacy.mode != "none"
        and spec.privacy.target_epsilon is not None
        and rounds_done < spec.rounds
    )

    if privacy_state_lost:
        # the aggregator found no checkpoint though ε was spent; whatever its Job does next
        # (it is retried, and refuses again), this training must not spend the budget twice
        phase, message = "Failed", str(privacy_state_lost)
    elif complete is not None and budget_exhausted and spec.privacy.on_budget_exhausted == "Fail":
        phase, message = (
            "Failed",
            f"privacy budget spent after {rounds_done} of {spec.rounds} rounds",
        )
    elif complete is not None:
        phase = "Succeeded"
        message = (
            f"privacy budget ε={spec.privacy.target_epsilon} spent after {rounds_done} of "
            f"{spec.rounds} rounds"
            if budget_exhausted
            else f"{rounds_done} rounds completed"
        )
    elif failed is not None:
        phase = "Failed"
        message = (
            f"aggregator failed: {failed.get('reason', '')} {failed.get('message', '')}".strip()
        )
    elif spec.suspend:
        phase, message = "Suspended", "spec.suspend is true; the checkpoint is kept"
    elif running:
        phase, message = "Running", f"round {rounds_done + 1} of {spec.rounds}"
    else:
        phase, message = "Pending", "waiting for the aggregator"
    if not state.certificates_ready and phase in ("Pending", "Running"):
        message = state.certificates_message

    finished = phase in ("Succeeded", "Failed")
    if finished:
        aggregator = ConditionValue("AggregatorReady", False, "Finished", message)
    elif spec.suspend:
        aggregator = ConditionValue("AggregatorReady", False, "Suspended", message)
    elif ready_pods > 0:
        aggregator = ConditionValue("AggregatorReady", True, "Serving", "the aggregator is ready")
    elif running:
        aggregator = ConditionValue("AggregatorReady", False, "Starting", "the pod is not ready")
    else:
        aggregator = ConditionValue("AggregatorReady", False, "Pending", "no aggregator pod yet")

    if spec.privacy.mode == "none":
        budget = ConditionValue(
            "PrivacyBudgetAvailable", True, "PrivacyOff", "no differential privacy requested"
        )
    elif privacy_state_lost:
        budget = ConditionValue(
            "PrivacyBudgetAvailable", False, "PrivacyStateLost", str(privacy_state_lost)
        )
    elif budget_exhausted:
        budget = ConditionValue(
            "PrivacyBudgetAvailable",
            False,
            "BudgetExhausted",
            f"ε={epsilon} spent of {spec.privacy.target_epsilon}: another round would exceed it",
        )
    else:
        target = spec.privacy.target_epsilon
        budget = ConditionValue(
            "PrivacyBudgetAvailable",
            True,
            "WithinBudget",
            f"ε={epsilon or 0} spent" + (f" of {target}" if target is not None else ""),
        )

    certificates = ConditionValue(
        "CertificatesReady",
        state.certificates_ready,
        "Issued" if state.certificates_ready else "NotIssued",
        state.certificates_message,
    )
    if phase == "Succeeded":
        ready = ConditionValue("Ready", True, "Succeeded", message)
    elif privacy_state_lost:
        ready = ConditionValue("Ready", False, "PrivacyStateLost", message)
    elif phase == "Failed":
        ready = ConditionValue("Ready", False, "Failed", message)
    elif phase == "Suspended":
        ready = ConditionValue("Ready", False, "Suspended", message)
    elif state.certificates_ready and ready_pods > 0:
        ready = ConditionValue("Ready", True, "Running", message)
    else:
        ready = ConditionValue("Ready", False, "Progressing", message)

    previous = reported.get("conditions") or []
    status: dict[str, Any] = {
        "phase": phase,
        "message": message,
        "enrolledClients": state.enrolled_clients,
        "observedGeneration": state.generation,
        "conditions": merge_conditions(
            previous, [ready, certificates, aggregator, budget], state.generation, now
        ),
    }
    start = (state.job or {}).get("status", {}).get("startTime") if state.job else None
    if start:
        status["startTime"] = start
    if finished:
        done = (complete or failed or {}).get("lastTransitionTime")
        status["completionTime"] = reported.get("completionTime") or done or now
    return status


def client_phase(reported: dict[str, Any], *, enrolled: bool, revoked: bool) -> tuple[str, str]:
    """An FLClient's phase and a message, from what the aggregator reported about it."""
    if reported.get("banReason"):
        return "Banned", f"banned by the aggregator: {reported['banReason']}"
    if revoked:
        return "Revoked", "its certificate is revoked"
    if not enrolled:
        return "Pending", "waiting for a certificate"
    if int(reported.get("roundsParticipated") or 0) > 0:
        return "Active", f"took part in {reported['roundsParticipated']} rounds"
    return "Enrolled", "certificate issued; not yet in a round"
