"""What a person does from Studio: the same library calls as the CLI's, each recorded where the CLI records it (the
version's approval history, the endpoint's history)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import InputError
from kiln.registry.versions import APPROVED, REJECTED, promote, set_approval
from kiln.serving.endpoints import decide
from kiln.workspace import Workspace

VERSION_ACTIONS = ("approve", "reject", "promote")
ROLLOUT_ACTIONS = ("promote", "rollback", "pause", "resume")
BY = "studio"  # who the histories name for actions taken here


@dataclass(frozen=True)
class Done:
    """An action taken: what, on what, and what it left (the version's approval or aliases, the rollout's phase)."""

    action: str
    target: str
    outcome: str


def version_action(ws: Workspace, name: str, version: str, action: str, reason: str) -> Done:
    """Approve, reject or promote (to champion) ``name``/``version``."""
    ref = f"{name}/{version}"
    if action not in VERSION_ACTIONS:
        raise InputError(f"action '{action}': a version can be {', '.join(VERSION_ACTIONS)}")
    if action == "promote":
        promoted = promote(ws, ref, BY)
        return Done(action, ref, f"champion (replaces {promoted.previous_champion or 'none'})")
    if not reason.strip():
        raise InputError(f"reason: give a reason to {action} {ref}; it joins the version's approval history")
    info = set_approval(ws, ref, APPROVED if action == "approve" else REJECTED, reason, BY)
    return Done(action, ref, info.approval)


def rollout_action(ws: Workspace, endpoint: str, action: str, reason: str) -> Done:
    """Promote the endpoint's rollout under way now, roll it back, pause or resume it."""
    if action not in ROLLOUT_ACTIONS:
        raise InputError(f"action '{action}': a rollout takes {', '.join(ROLLOUT_ACTIONS)}")
    report = decide(ws, endpoint, action, reason.strip() or f"{action} from Studio", BY)
    return Done(action, endpoint, f"{report.phase}{' (paused)' if report.paused else ''}: {report.reason}")
