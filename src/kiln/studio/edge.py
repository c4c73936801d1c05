"""The Edge page: the devices that report to the distribution point, and the compiled artifacts they pull.

Devices come from the fleet's table (kiln.fleet.devices: one row per device, replaced by each heartbeat), with
"offline" for a device silent for three of its heartbeat intervals. Artifacts are the bundles `kiln compile` built in
the workspace (WS/artifacts/compiled/ID), each with whether it is published to devices, the latest for its target,
expired, and whether its signature matches its manifest under the workspace's public key. The files' sha256 are not
checked here (that reads every library; `kiln artifacts verify` does it).

Bounded: the devices seen most recently, at most ``devices_shown`` (all are counted by status); the newest artifacts,
at most ``artifacts_shown`` (found by the time in their ids, so older manifests are not read). Bundles that only an
S3 artifacts store holds (compiled on another machine) are not listed until `kiln artifacts list` brings them here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.bundle import MANIFEST, SIGNATURE
from kiln.compile.keys import load_public_key, public_key_path
from kiln.compile.store import artifacts_store, compiled_root, latest_published
from kiln.errors import KilnError
from kiln.fleet.devices import Device, fleet_db, list_devices
from kiln.storage import FolderStore
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEVICES_SHOWN = 500
ARTIFACTS_SHOWN = 200
# An artifact's id ends with the time it was made (kiln.compile.bundle.artifact_id): 20261122T100000123456.
ID_TIME = re.compile(r"-(\d{8}T\d{12})$")


@dataclass(frozen=True)
class DeviceRow:
    """A device as its last heartbeat left it."""

    device_id: str
    target: str
    active: str | None  # the artifact it serves
    model: str | None  # NAME/VERSION of that artifact
    health: str  # ok | degraded | failing, as the device reported it
    status: str  # its health, or offline when it stopped beating
    last_seen: datetime  # UTC
    interval_seconds: float
    last_error: str | None  # the agent's last error, when it reported one
    rejected: int  # artifacts the agent refused (bad signature, wrong target, failed smoke test)


@dataclass(frozen=True)
class ArtifactRow:
    """A compiled bundle: what it serves, for which target, until when, and whether devices may take it."""

    id: str
    model: str  # NAME/VERSION
    target: str
    created: datetime
    expires: datetime
    expired: bool
    signed: bool  # a signature file is there
    signature_ok: bool | None  # it matches the manifest under the workspace's key; None: no public key to check
    published: bool  # copied to the distribution point
    latest: bool  # the one devices of its target pull now
    devices: int  # devices serving it
    path: str


@dataclass(frozen=True)
class EdgePage:
    """Devices, most recently seen first, and artifacts, newest first."""

    devices: tuple[DeviceRow, ...]
    devices_total: int
    device_statuses: dict[str, int]  # devices by status (ok, degraded, failing, offline), over all of them
    artifacts: tuple[ArtifactRow, ...]
    artifacts_total: int
    distribution_point: str  # the URL devices pull from (`kiln up` serves it)
    unreadable: int  # the fleet's table when it does not read, and artifacts whose manifest does not


def edge_page(ws: Workspace, now: datetime | None = None, devices_shown: int = DEVICES_SHOWN,
              artifacts_shown: int = ARTIFACTS_SHOWN) -> EdgePage:
    """The Edge page of ``ws`` at ``now`` (default: now); empty for a workspace that compiled nothing and has no
    devices.

    Bounded: the ``devices_shown`` devices seen most recently (all counted by status) and the newest
    ``artifacts_shown`` artifacts (one manifest read and one signature check each; older ones only counted).
    """
    now = _aware(now) if now else datetime.now(UTC)
    unreadable = 0
    try:
        devices = list_devices(fleet_db(ws), now)
    except (sqlite3.Error, ValueError, TypeError):  # a damaged fleet table: counted, the page stays
        devices, unreadable = [], 1
    serving: Counter[str] = Counter(d.active for d in devices if d.active)
    artifacts, total, bad = _artifacts(ws, now, serving, artifacts_shown)
    s = ws.settings.services.artifacts
    return EdgePage(
        devices=tuple(_device(d) for d in devices[:devices_shown]), devices_total=len(devices),
        device_statuses=dict(Counter(d.status for d in devices)), artifacts=artifacts, artifacts_total=total,
        distribution_point=f"http://{s.host}:{s.port}", unreadable=unreadable + bad)


def _device(device: Device) -> DeviceRow:
    seen = datetime.fromisoformat(device.last_seen)
    details = device.details if isinstance(device.details, dict) else {}
    error, rejected = details.get("last_error"), details.get("rejected")
    return DeviceRow(
        device_id=device.device_id, target=device.target, active=device.active, model=device.model,
        health=device.health, status=device.status, last_seen=seen if seen.tzinfo else seen.replace(tzinfo=UTC),
        interval_seconds=float(device.interval_seconds), last_error=error if isinstance(error, str) else None,
        rejected=len(rejected) if isinstance(rejected, (dict, list)) else 0)


def _artifacts(ws: Workspace, now: datetime, serving: Counter[str],
               shown: int) -> tuple[tuple[ArtifactRow, ...], int, int]:
    """The newest ``shown`` artifacts, the count of all, and the count of those whose manifest did not read."""
    root = compiled_root(ws)
    try:
        with os.scandir(root) as entries:
            folders = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:  # nothing compiled yet
        return (), 0, 0
    folders.sort(key=_made, reverse=True)
    public = _public_key(ws)
    published = _Published(ws)
    rows, unreadable = [], 0
    for folder in folders[:shown]:
        try:
            rows.append(_artifact(folder, now, public, published, serving))
        except (OSError, ValueError, KeyError, TypeError):
            unreadable += 1
    rows.sort(key=lambda a: a.created, reverse=True)
    return tuple(rows), len(folders), unreadable


def _made(folder: Path) -> str:
    """The time in the artifact's id (sortable as text), else its folder's modification time in the same form."""
    m = ID_TIME.search(folder.name)
    if m:
        return m.group(1)
    try:
        return datetime.fromtimestamp(folder.stat().st_mtime, UTC).strftime("%Y%m%dT%H%M%S%f")
    except OSError:  # removed since it was listed: last, and counted unreadable when read
        return ""


def _artifact(folder: Path, now: datetime, public: "Ed25519PublicKey | None", published: _Published,
              serving: Counter[str]) -> ArtifactRow:
    body = (folder / MANIFEST).read_bytes()  # the exact bytes: the signature is over them
    manifest: dict[str, Any] = json.loads(body)
    artifact_id, target = str(manifest["id"]), str(manifest["target"]["name"])
    expires = _aware(datetime.fromisoformat(manifest["expires"]))
    signature = folder / SIGNATURE
    signed = signature.is_file()
    return ArtifactRow(
        id=artifact_id, model=f"{manifest['model']['name']}/{manifest['model']['version']}", target=target,
        created=_aware(datetime.fromisoformat(manifest["created"])), expires=expires, expired=expires <= now,
        signed=signed, signature_ok=_signature_ok(body, signature, public) if signed else False,
        published=published.has(artifact_id), latest=published.latest(target) == artifact_id,
        devices=serving[artifact_id], path=str(folder))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _public_key(ws: Workspace) -> "Ed25519PublicKey | None":
    try:
        return load_public_key(public_key_path(ws))
    except KilnError:  # no key yet, or not an Ed25519 one: signatures are shown as unchecked
        return None


def _signature_ok(body: bytes, signature: Path, public: "Ed25519PublicKey | None") -> bool | None:
    """Whether the signature matches the manifest's bytes: the first of kiln.compile.bundle.verify_bundle's checks,
    without the sha256 of every file that follows it."""
    if public is None:
        return None
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(base64.b64decode(signature.read_text().strip(), validate=True), body)
    except (InvalidSignature, ValueError, OSError):
        return False
    return True


class _Published:
    """Which bundles are published and the latest per target, asked of the artifacts store once per bundle (a file's
    existence) or per target, and for an S3 store from one listing."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = artifacts_store(ws)
        self.latest_ids: dict[str, str | None] = {}
        self.listed: set[str] | None = None

    def has(self, artifact_id: str) -> bool:
        if isinstance(self.store, FolderStore):
            return self.store.exists(f"published/bundles/{artifact_id}/{MANIFEST}")
        if self.listed is None:
            try:
                keys = self.store.list_keys("published/bundles/")
            except KilnError:  # the store does not answer: nothing is shown as published
                keys = []
            self.listed = {k.split("/")[2] for k in keys if k.endswith(f"/{MANIFEST}")}
        return artifact_id in self.listed

    def latest(self, target: str) -> str | None:
        if target not in self.latest_ids:
            try:
                found = latest_published(self.ws, target)
            except (KilnError, ValueError):  # the store does not answer, or the pointer is torn
                found = None
            self.latest_ids[target] = str(found.get("id")) if isinstance(found, dict) else None
        return self.latest_ids[target]
