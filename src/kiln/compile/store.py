"""The workspace's compiled bundles, and the distribution point devices pull them from.

Layout in the artifacts store (settings' `artifacts`: the workspace's artifacts folder, or an S3 prefix), served
over HTTP by the distribution point (`kiln up`, the chart's server); no registry needed on the device side:
  compiled/ID/                   bundles as `kiln compile` wrote them (always also built in the workspace's folder)
  published/bundles/ID/          published copies, never changed once there
  published/targets/T/latest.json  the newest published bundle for target T (replaced whole)

Every bundle is written manifest last, and a pointer only after its bundle: a reader that finds a manifest finds
the files it names, and a device that finds a pointer finds the whole bundle.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kiln.compile.bundle import MANIFEST, SIGNATURE, Verdict, verify_bundle
from kiln.compile.keys import load_public_key, public_key_path
from kiln.errors import InputError
from kiln.files import staged_folder, write_bytes_atomic
from kiln.storage import FolderStore, S3Store
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
    location: str

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "target": self.target, "latest": self.latest, "newer_latest": self.newer_latest,
                "location": self.location}


def compiled_root(ws: Workspace) -> Path:
    """Where bundles are built, and kept on this side of the artifacts store."""
    return ws.folder("artifacts") / "compiled"


def artifacts_store(ws: Workspace) -> FolderStore | S3Store:
    store = ws.settings.artifacts
    return S3Store(store.uri, store.endpoint_url) if store.type == "s3" else FolderStore(ws.folder("artifacts"))


def _bundle_order(folder: Path) -> list[Path]:
    """A bundle's files, the signature and then the manifest last."""
    last = {SIGNATURE: 1, MANIFEST: 2}
    return sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: (last.get(p.name, 0), p.name))


def store_bundle(store: FolderStore | S3Store, folder: Path, prefix: str) -> None:
    """Copy a bundle's files under ``prefix``, manifest last; a failure removes what was written."""
    try:
        for path in _bundle_order(folder):
            store.put(f"{prefix}/{path.name}", path.read_bytes())
    except BaseException:
        store.delete_prefix(f"{prefix}/")
        raise


def _fetch_bundle(store: S3Store, prefix: str, dest: Path) -> None:
    with staged_folder(dest) as stage:
        for key in store.list_keys(f"{prefix}/"):
            (stage / key.rsplit("/", 1)[1]).write_bytes(store.get(key))


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest


def latest_published(ws: Workspace, target: str) -> dict[str, Any] | None:
    store, key = artifacts_store(ws), f"published/targets/{target}/latest.json"
    if not store.exists(key):
        return None
    found: dict[str, Any] = json.loads(store.get(key))
    return found


def published_file(ws: Workspace, artifact_id: str, name: str) -> Path | None:
    """One file of a published bundle as a local file (S3: downloaded once; published bundles never change)."""
    store, key = artifacts_store(ws), f"published/bundles/{artifact_id}/{name}"
    if isinstance(store, FolderStore):
        path = store.root / key
        return path if path.is_file() else None
    digest = hashlib.sha256(store.location.encode()).hexdigest()[:12]
    cached = Path(tempfile.gettempdir()) / "kiln-published" / digest / artifact_id / name
    if cached.is_file():
        return cached
    if not store.exists(key):
        return None
    write_bytes_atomic(cached, store.get(key))
    return cached


def _sync_from_store(ws: Workspace, only: str | None = None) -> None:
    """Bring bundles (or the one ``only`` names) the S3 artifacts store holds and this workspace's folder lacks
    (compiled elsewhere)."""
    store = artifacts_store(ws)
    if not isinstance(store, S3Store):
        return
    for key in store.list_keys(f"compiled/{only}/" if only else "compiled/"):
        artifact_id, _, name = key.removeprefix("compiled/").partition("/")
        if name == MANIFEST and not (compiled_root(ws) / artifact_id / MANIFEST).is_file():
            _fetch_bundle(store, f"compiled/{artifact_id}", compiled_root(ws) / artifact_id)


def list_artifacts(ws: Workspace) -> list[ArtifactInfo]:
    """Every compiled bundle, newest first, with whether it is published and the latest for its target."""
    _sync_from_store(ws)
    root = compiled_root(ws)
    store = artifacts_store(ws)
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or (m := _manifest(folder)) is None:
            continue
        latest = latest_published(ws, m["target"]["name"]) or {}
        files = [p for p in folder.iterdir() if p.is_file()]
        out.append(ArtifactInfo(
            id=m["id"], model=f"{m['model']['name']}/{m['model']['version']}", target=m["target"]["name"],
            created=m["created"], expires=m["expires"], files=len(files), bytes=sum(p.stat().st_size for p in files),
            published=store.exists(f"published/bundles/{m['id']}/{MANIFEST}"), latest=latest.get("id") == m["id"],
            path=folder))
    return sorted(out, key=lambda a: a.created, reverse=True)


def find_artifact(ws: Workspace, artifact_id: str) -> Path:
    folder = compiled_root(ws) / artifact_id
    if not (folder / MANIFEST).is_file() and "/" not in artifact_id and not artifact_id.startswith("."):
        _sync_from_store(ws, artifact_id)
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
    store, dest = artifacts_store(ws), f"published/bundles/{artifact_id}"
    if not store.exists(f"{dest}/{MANIFEST}"):  # an earlier publish that stopped half-way is completed
        store_bundle(store, folder, dest)
    current = latest_published(ws, target)
    newer_there = current is not None and _created(current["created"]) > _created(manifest["created"])
    if not newer_there:
        # every file a device fetches, with its size (so downloads resume); hashes are the signed manifest's
        files = {p.name: {"size": p.stat().st_size, "sha256": manifest["files"].get(p.name)}
                 for p in sorted(folder.iterdir()) if p.is_file()}
        pointer = {"id": artifact_id, "target": target, "model": manifest["model"], "created": manifest["created"],
                   "expires": manifest["expires"], "files": files}
        store.put(f"published/targets/{target}/latest.json", (json.dumps(pointer, indent=2) + "\n").encode())
    return Published(id=artifact_id, target=target, latest=not newer_there,
                     newer_latest=current["id"] if current is not None and newer_there else None,
                     location=f"{store.location}/{dest}")


def _created(text: str) -> datetime:
    return datetime.fromisoformat(text)
