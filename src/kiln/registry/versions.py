"""Registered model versions: register a challenger, approve or reject it, promote it to champion, roll back.

Approval is a version tag changed only here; aliases (never the deprecated stages) mark champion and challenger.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.registry.tables import StoredVersion, read_versions
from kiln.tracking import client
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
APPROVAL, HISTORY = "kiln.approval_status", "kiln.approval_history"
GATE, GATE_REASONS = "kiln.gate", "kiln.gate_reasons"
TAG_LIMIT = 5000  # MLflow's longest tag value
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str]
    approval: str
    gate: str
    run_id: str | None
    source: str
    created: str
    tags: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Promotion:
    """A version made champion, and the version it replaced (now previous-champion), if any."""

    champion: VersionInfo
    previous_champion: str | None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS``, ``NAME/VERSION`` or ``models:/`` either way -> (name, version, alias)."""
    text = ref.removeprefix("models:/")
    if "@" in text:
        name, _, alias = text.partition("@")
        version = None
    elif "/" in text:
        name, _, version = text.partition("/")
        alias = None
        if not version.isdigit():
            raise InputError(f"model '{ref}': the version after '/' must be a number")
    else:
        raise InputError(f"model '{ref}': give NAME@ALIAS (e.g. churn@champion) or NAME/VERSION (e.g. churn/3)")
    if not NAME_RE.match(name) or (alias is not None and not alias):
        raise InputError(f"model '{ref}': not a registered model name and version or alias")
    return name, version, alias


def _client(ws: Workspace) -> "MlflowClient":
    return client(ws)


def get_version(ws: Workspace, ref: str) -> VersionInfo:
    """The version ``ref`` names; an InputError lists what exists when it does not."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_ref(ref)
    c = _client(ws)
    try:
        if alias:
            mv = c.get_model_version_by_alias(name, alias)
        else:
            assert version is not None  # parse_ref gives a version wherever it gives no alias
            mv = c.get_model_version(name, version)
    except MlflowException:
        known = [m.name for m in c.search_registered_models()]
        if name not in known:
            raise InputError(f"no registered model '{name}'",
                             hint=f"registered models: {', '.join(known) or 'none yet (run `kiln tune`)'}") from None
        aliases = c.get_registered_model(name).aliases
        raise InputError(f"model {name} has no {'alias ' + alias if alias else 'version ' + str(version)}",
                         hint=f"aliases: {', '.join(f'{a}->v{v}' for a, v in aliases.items()) or 'none'}") from None
    return _info(c, mv)


def _stored(c: "MlflowClient", mv: Any) -> StoredVersion:
    # Version searches leave aliases out: the registered model's alias map is the one source.
    aliases = [a for a, v in c.get_registered_model(mv.name).aliases.items() if str(v) == str(mv.version)]
    return StoredVersion(name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source,
                         creation_timestamp=mv.creation_timestamp, tags=dict(mv.tags), aliases=sorted(aliases))


def _version_info(v: StoredVersion) -> VersionInfo:
    return VersionInfo(name=v.name, version=v.version, aliases=list(v.aliases), approval=v.tags.get(APPROVAL, PENDING),
                       gate=v.tags.get(GATE, "unknown"), run_id=v.run_id, source=v.source,
                       created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
                       tags=dict(v.tags), history=json.loads(v.tags.get(HISTORY, "[]")))


def _info(c: "MlflowClient", mv: Any) -> VersionInfo:
    return _version_info(_stored(c, mv))


def stored_versions(ws: Workspace, name: str | None = None) -> list[StoredVersion]:
    """Every version of ``name`` (or of every registered model) through MLflow's client, by name then newest first."""
    c = _client(ws)
    names = [name] if name else sorted(m.name for m in c.search_registered_models())
    out = []
    for n in names:
        versions = c.search_model_versions(f"name='{n}'")
        if name and not versions:
            get_version(ws, f"{n}@{CHAMPION}")  # raises the "no registered model" error with the known names
        out += [_stored(c, mv) for mv in sorted(versions, key=lambda v: -int(v.version))]
    return out


def list_versions(ws: Workspace, name: str | None = None) -> list[VersionInfo]:
    """Every version of ``name`` (or of every registered model), newest first."""
    stored = read_versions(ws.settings.mlflow.tracking_uri, name)
    if stored is None or (name and not stored):
        stored = stored_versions(ws, name)
    return [_version_info(v) for v in stored]


def champion_uri(ws: Workspace, name: str) -> str | None:
    """``models:/NAME@champion`` when the model has a champion, else None."""
    c = _client(ws)
    if name not in {m.name for m in c.search_registered_models()}:
        return None
    return f"models:/{name}@{CHAMPION}" if CHAMPION in c.get_registered_model(name).aliases else None


def register(ws: Workspace, name: str, model_uri: str, run_id: str, tags: dict[str, str],
             gate: dict[str, Any]) -> VersionInfo:
    """A new version of ``name`` with alias challenger, pending approval, with its lineage and gate result as tags."""
    import mlflow

    if not NAME_RE.match(name):
        raise InputError(f"model name '{name}': use letters, digits, '.', '_' and '-'")
    c = _client(ws)
    champion = champion_uri(ws, name)
    parent = c.get_model_version_by_alias(name, CHAMPION).version if champion else ""
    history = [{"event": "registered", "status": PENDING, "at": now(),
                "gate": "passed" if gate["passed"] else "failed"}]
    all_tags = {**tags, "kiln.parent_version": str(parent), APPROVAL: PENDING, GATE: "passed" if gate["passed"]
                else "failed", GATE_REASONS: json.dumps(gate["reasons"])[:TAG_LIMIT], HISTORY: json.dumps(history)}
    mv = mlflow.register_model(model_uri, name, tags=all_tags)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return get_version(ws, f"{name}/{mv.version}")


def _record(c: "MlflowClient", info: VersionInfo, entry: dict[str, Any]) -> None:
    history = [*info.history, {**entry, "at": now()}]
    while len(json.dumps(history)) > TAG_LIMIT and len(history) > 1:
        history.pop(1)  # keep the registration entry and the newest ones
    c.set_model_version_tag(info.name, info.version, HISTORY, json.dumps(history))


def gate_reasons(info: VersionInfo) -> list[str]:
    """Why the version's gate failed, one line per failed check (empty when it passed or none was recorded)."""
    raw = info.tags.get(GATE_REASONS, "[]")
    try:
        reasons = json.loads(raw)
    except ValueError:  # cut at MLflow's tag limit
        return [raw]
    return [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]


def record_override(ws: Workspace, ref: str, reason: str, by: str, where: str) -> VersionInfo:
    """Note in the version's approval history that it serves in production by an explicit override (``where``:
    the endpoint and variant), with who decided and why; its approval stays as it is."""
    info = get_version(ws, ref)
    _record(_client(ws), info, {"event": "production override", "status": info.approval, "gate": info.gate,
                                "by": by, "reason": reason, "where": where})
    return get_version(ws, f"{info.name}/{info.version}")


def set_approval(ws: Workspace, ref: str, status: str, reason: str, by: str) -> VersionInfo:
    """Approve or reject a version; the change and its reason join the version's approval history."""
    if status not in (APPROVED, REJECTED):
        raise InputError(f"approval status '{status}': choose {APPROVED} or {REJECTED}")
    info = get_version(ws, ref)
    if info.approval == status:
        raise InputError(f"{info.name} version {info.version} is already {status}")
    if status == REJECTED and CHAMPION in info.aliases:
        raise InputError(f"{info.name} version {info.version} is the champion; promote another version or roll back "
                         "first, then reject it")
    c = _client(ws)
    _record(c, info, {"event": status.lower(), "status": status, "by": by, "reason": reason})
    c.set_model_version_tag(info.name, info.version, APPROVAL, status)
    return get_version(ws, f"{info.name}/{info.version}")


def promote(ws: Workspace, ref: str, by: str) -> Promotion:
    """Move alias champion to an approved, gate-passing version; the old champion becomes previous-champion."""
    info = get_version(ws, ref)
    if CHAMPION in info.aliases:
        raise InputError(f"{info.name} version {info.version} is already the champion")
    if info.approval != APPROVED:
        raise InputError(f"{info.name} version {info.version} is {info.approval}; only an Approved version can be "
                         "promoted", hint=f"`kiln models approve {info.name}/{info.version} --reason ...`")
    if info.gate != "passed":
        reasons = "; ".join(gate_reasons(info)) or "no gate result recorded"
        raise InputError(f"{info.name} version {info.version} failed the promotion gate: {reasons}",
                         hint="a version that fails the gate cannot be champion; train a better one")
    c = _client(ws)
    previous = c.get_model_version_by_alias(info.name, CHAMPION).version if champion_uri(ws, info.name) else None
    c.set_registered_model_alias(info.name, CHAMPION, info.version)
    if previous is not None:
        c.set_registered_model_alias(info.name, PREVIOUS, previous)
        _record(c, get_version(ws, f"{info.name}/{previous}"),
                {"event": "replaced as champion", "by": by, "reason": f"version {info.version} promoted"})
    if CHALLENGER in info.aliases:
        c.delete_registered_model_alias(info.name, CHALLENGER)
    _record(c, info, {"event": "promoted to champion", "by": by, "reason": f"replaces version {previous or '-'}"})
    return Promotion(get_version(ws, f"{info.name}/{info.version}"), previous)


def rollback(ws: Workspace, name: str, by: str) -> VersionInfo:
    """Champion back to previous-champion (which must still be Approved)."""
    c = _client(ws)
    prev = get_version(ws, f"{name}@{PREVIOUS}")
    if prev.approval != APPROVED:
        raise InputError(f"{name} version {prev.version} (previous-champion) is {prev.approval}; "
                         "cannot roll back to it")
    current = c.get_model_version_by_alias(name, CHAMPION).version
    c.set_registered_model_alias(name, CHAMPION, prev.version)
    c.set_registered_model_alias(name, PREVIOUS, current)
    _record(c, prev, {"event": "champion again (rollback)", "by": by, "reason": f"rolled back from {current}"})
    return get_version(ws, f"{name}/{prev.version}")
