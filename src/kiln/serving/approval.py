"""Which model versions may serve in production: an Approved version whose gate passed, or another one that an
explicit override with a reason lets in. A shadow answers no one and may serve any version.

Every place that chooses an endpoint's production model (a deploy, a rollout's new model; locally or on a cluster;
from the CLI, a pipeline's deploy step or the main job) asks ``clear_for_production`` before it starts or changes
anything, and records the overrides it used with ``record_overrides`` once the change is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import APPROVED, VersionInfo, gate_reasons, get_version, record_override
from kiln.workspace import Workspace

OVERRIDE = ("--override-reason TEXT (override_reason in a pipeline's deploy step), which is recorded on the version "
            "and in the endpoint's history")


def cleared(info: VersionInfo) -> bool:
    """Whether the version may serve in production without an override."""
    return info.approval == APPROVED and info.gate == "passed"


def _gate(info: VersionInfo) -> str:
    if info.gate == "passed":
        return "its gate passed"
    if info.gate == "failed":
        return f"its gate failed ({'; '.join(gate_reasons(info)) or 'no reasons recorded'})"
    return "it has no gate result"


def _hint(info: VersionInfo) -> str:
    if info.gate != "passed":
        return ("a version that did not pass the gate may serve as the endpoint's shadow, which answers no one; in "
                f"production only with {OVERRIDE}")
    return (f"approve it with `kiln models approve {info.name}/{info.version} --reason ...`, or serve it anyway with "
            f"{OVERRIDE}")


class NotCleared(InputError):
    """A production variant asked to serve a version that is not Approved or did not pass the gate, with no
    override."""

    def __init__(self, variant: str, info: VersionInfo) -> None:
        super().__init__(f"production variant {variant}: {info.name}/{info.version} is {info.approval} and "
                         f"{_gate(info)}; only an Approved version that passed the gate serves in production",
                         hint=_hint(info))
        self.variant, self.version = variant, f"{info.name}/{info.version}"
        self.approval, self.gate = info.approval, info.gate


@dataclass(frozen=True)
class Override:
    """Who lets a version into production that is not cleared for it, and why."""

    reason: str
    by: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise InputError("--override-reason is empty: an override must say why the version may serve in "
                             "production", hint='e.g. --override-reason "hotfix for incident 42, review to follow"')


@dataclass(frozen=True)
class Clearance:
    """A production variant's version, and the override it serves by (None: it is Approved and passed the gate)."""

    variant: str
    model: str  # models:/NAME/VERSION
    approval: str
    gate: str
    override: Override | None = None

    @property
    def version(self) -> str:
        """NAME/VERSION."""
        return self.model.removeprefix("models:/")


def clear_for_production(ws: Workspace, variant: str, model: str, override: Override | None = None,
                         progress: Progress = no_progress) -> Clearance:
    """The version ``model`` names, cleared to serve production variant ``variant``; an InputError naming the
    variant, the version, its approval and its gate (with the gate's reasons) when it is not and no override is
    given (NotCleared)."""
    info = get_version(ws, model)
    uri = f"models:/{info.name}/{info.version}"
    if cleared(info):
        return Clearance(variant, uri, info.approval, info.gate)
    if override is None:
        raise NotCleared(variant, info)
    progress(f"variant {variant}: {info.name}/{info.version} ({info.approval}, gate {info.gate}) serves by "
             f"override: {override.reason}")
    return Clearance(variant, uri, info.approval, info.gate, override)


def record_overrides(ws: Workspace, endpoint: str, clearances: list[Clearance]) -> None:
    """Note each override used in its version's approval history."""
    for c in clearances:
        if c.override is not None:
            record_override(ws, c.version, c.override.reason, c.override.by,
                            f"endpoint {endpoint}, variant {c.variant}")
