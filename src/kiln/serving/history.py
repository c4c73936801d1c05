"""An endpoint's history: what was deployed, rolled out and let in by override, when, and why.

A local endpoint keeps it in its state file (endpoint.json), an endpoint on a cluster in an annotation of its spec
ConfigMap; both hold the same entries, newest last, the oldest dropped beyond ``KEEP``.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kiln.errors import InputError
from kiln.registry.versions import now
from kiln.serving.approval import Clearance
from kiln.serving.rollout import RolloutReport
from kiln.serving.spec import EndpointSpec

KEEP = 200
Event = Literal["deployed", "deployed as shadow", "rollout started", "rollout promoted", "rollout rolled back",
                "rollout paused", "rollout resumed", "override"]


class HistoryEntry(BaseModel):
    """One change of the endpoint: ``model`` is the models:/NAME/VERSION it concerns."""

    model_config = ConfigDict(extra="forbid")

    at: str
    event: Event
    variant: str
    model: str
    reason: str = ""
    by: str = ""


def entry(event: Event, variant: str, model: str, reason: str = "", by: str = "") -> HistoryEntry:
    return HistoryEntry(at=now(), event=event, variant=variant, model=model, reason=reason, by=by)


def deployed(spec: EndpointSpec, pinned: dict[str, str], clearances: list[Clearance]) -> list[HistoryEntry]:
    """The entries of a deploy of ``spec``: each variant with the version pinned for it, then the overrides used."""
    shadow = [entry("deployed as shadow", spec.shadow.name, pinned[spec.shadow.name])] if spec.shadow else []
    return [*(entry("deployed", v.name, pinned[v.name]) for v in spec.variants), *shadow, *overrides(clearances)]


def overrides(clearances: list[Clearance]) -> list[HistoryEntry]:
    """An entry per production variant that serves by override: its version's approval and gate, who and why."""
    return [entry("override", c.variant, c.model, f"{c.approval}, gate {c.gate}: {c.override.reason}", c.override.by)
            for c in clearances if c.override is not None]


def ended(variant: str, candidate_model: str, rollout: RolloutReport, by: str = "") -> HistoryEntry:
    """The entry of a rollout that ended (promoted or rolled back) on ``variant``; ``by`` who ended it, when a
    person did rather than the guardrails."""
    event: Event = "rollout promoted" if rollout.phase == "promoted" else "rollout rolled back"
    return entry(event, variant, candidate_model, rollout.reason, by)


def extend(history: list[HistoryEntry], new: list[HistoryEntry]) -> list[HistoryEntry]:
    """``history`` with ``new`` after it, the oldest dropped beyond KEEP."""
    return [*history, *new][-KEEP:]


def dump_history(history: list[HistoryEntry]) -> str:
    return json.dumps([h.model_dump() for h in history])


def load_history(text: str | None, where: str) -> list[HistoryEntry]:
    """The entries ``text`` (JSON, as ``dump_history`` writes it) holds; an InputError naming ``where`` when unreadable."""
    if not text:
        return []
    try:
        data = json.loads(text)
        return [HistoryEntry.model_validate(h) for h in data]
    except (ValueError, TypeError, ValidationError):
        raise InputError(f"{where}: not an endpoint history this Kiln reads") from None
