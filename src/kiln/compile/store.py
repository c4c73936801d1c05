"""The workspace's compiled bundles, and the distribution point devices pull them from.

Layout (plain files, served over HTTP by `kiln up`; no registry needed on the device side):
  artifacts/compiled/ID/                   bundles as `kiln compile` wrote them
  artifacts/published/bundles/ID/          published copies, never changed once there
  artifacts/published/targets/T/latest.json  the newest published bundle for target T (replaced atomically)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kiln.compile.bundle import MANIFEST, Verdict, copy_bundle, verify_bundle
from kiln.compile.keys import load_public_key, public_key_path
from kiln.errors import InputError
from kiln.files import write_json_atomic
from kiln.workspace import Workspace


@dataclass
class ArtifactInfo:
    id: str
    model: str
    target: str
    created: str
    expires: str
    files: int
    bytes: int
    published: bool
    latest: bool
    path: Path


@dataclass(frozen=True)
class Published:
    """A bundle copied to the distribution point; ``latest`` unless ``newer_latest`` was published for its target."""

    id: str
    target: str
    latest: bool
    newer_latest: str | None
    path: Path

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "target": self.target, "latest": self.latest, "newer_latest": self.newer_latest,
                "path": str(self.path)}


def compiled_root(ws: Workspace) -> Path:
    return ws.folder("artifacts") / "compiled"


def published_root(ws: Workspace) -> Path:
    return ws.folder("artifacts") / "published"


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest


def latest_published(ws: Workspace, target: str) -> dict[str, Any] | None:
    path = published_root(ws) / "targets" / target / "latest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def list_artifacts(ws: Workspace) -> list[ArtifactInfo]:
    """Every compiled bundle, newest first, with whether it is published and the latest for its target."""
    root = compiled_root(ws)
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or (m := _manifest(folder)) is None:
            continue
        latest = latest_published(ws, m["target"]["name"]) or {}
        files = [p for p in folder.iterdir() if p.is_file()]
        out.append(ArtifactInfo(
            id=m["id"], model=f"{m['model']['name']}/{m['model']['version']}", target=m["target"]["name"],
            created=m["created"], expires=m["expires"], files=len(files), bytes=sum(p.stat().st_size for p in files),
            published=(published_root(ws) / "bundles" / m["id"]).is_dir(), latest=latest.get("id") == m["id"],
            path=folder))
    return sorted(out, key=lambda a: a.created, reverse=True)


def find_artifact(ws: Workspace, artifact_id: str) -> Path:
    folder = compiled_root(ws) / artifact_id
    if "/" in artifact_id or artifact_id.startswith(".") or not (folder / MANIFEST).is_file():
        known = [a.id for a in list_artifacts(ws)][:10]
        raise InputError(f"no compiled artifact '{artifact_id}'",
                         hint=f"known: {', '.join(known)}" if known else "compile one with `kiln compile`")
    return folder


def verify_artifacts(ws: Workspace, ids: list[str] | None = None) -> list[Verdict]:
    """Each bundle (default: every compiled one) checked against the workspace's public key: signature, every
    file's sha256, expiry."""

    public = load_public_key(public_key_path(ws))
    if ids is None:
        ids = [a.id for a in list_artifacts(ws)]
    return [verify_bundle(find_artifact(ws, i), public) for i in ids]


def publish_artifacts(ws: Workspace, ids: list[str]) -> list[Published]:
    """Publish each bundle in turn (see publish_artifact)."""
    return [publish_artifact(ws, i) for i in ids]


def publish_artifact(ws: Workspace, artifact_id: str) -> Published:
    """Verify, copy into the distribution point, and make it its target's latest unless a newer one is there."""
    folder = find_artifact(ws, artifact_id)
    verdict = verify_artifacts(ws, [artifact_id])[0]
    if not verdict.ok:
        raise InputError(f"artifact {artifact_id} fails verification: {'; '.join(verdict.problems)}",
                         hint="nothing was published; compile it again")
    manifest = verdict.manifest or {}
    target = manifest["target"]["name"]
    dest = published_root(ws) / "bundles" / artifact_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_dir():
        copy_bundle(folder, dest)
    current = latest_published(ws, target)
    newer_there = current is not None and _created(current["created"]) > _created(manifest["created"])
    if not newer_there:
        # every file a device fetches, with its size (so downloads resume); hashes are the signed manifest's
        files = {p.name: {"size": p.stat().st_size, "sha256": manifest["files"].get(p.name)}
                 for p in sorted(dest.iterdir())}
        write_json_atomic(published_root(ws) / "targets" / target / "latest.json", {
            "id": artifact_id, "target": target, "model": manifest["model"], "created": manifest["created"],
            "expires": manifest["expires"], "files": files})
    return Published(id=artifact_id, target=target, latest=not newer_there,
                     newer_latest=current["id"] if current is not None and newer_there else None, path=dest)


def _created(text: str) -> datetime:
    return datetime.fromisoformat(text)
