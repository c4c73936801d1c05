"""An artifact bundle: the libraries, the encoder, a manifest naming everything with its sha256, a signature.

The manifest's format (kiln-artifact/1) is the one thing the platform and the edge agent share; edge/README.md
describes it. The signature is Ed25519 over the exact bytes of manifest.json.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "kiln-artifact/1"
MANIFEST, SIGNATURE, ENCODER = "manifest.json", "manifest.sig", "encoder.json"
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@dataclass
class ManifestDraft:
    """What the compiler knows about a bundle before its files are hashed and it is signed."""

    model: dict[str, Any]  # name, version, family, threshold
    target: dict[str, Any]  # name, machine, cpu, gpu_arch
    runtime: dict[str, str]  # tvm version
    input: dict[str, Any]
    output: dict[str, Any]
    libraries: dict[str, str]  # batch size -> library file
    expires_days: float
    details: dict[str, Any] = field(default_factory=dict)  # parity, tuning, compile time: informative only


def artifact_id(model: dict[str, Any], target: str, created: datetime) -> str:
    stamp = created.strftime("%Y%m%dT%H%M%S%f")
    return f"{model['name']}-v{model['version']}-{target}-{stamp}"


def write_bundle(folder: Path, draft: ManifestDraft, key: "Ed25519PrivateKey", key_id: str,
                 created: datetime | None = None) -> dict[str, Any]:
    """Hash every file already in ``folder``, then write manifest.json and its signature there."""
    created = created or utc_now()
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name not in (MANIFEST, SIGNATURE)}
    missing = [name for name in draft.libraries.values() if name not in files]
    if missing:
        raise InputError(f"bundle {folder} lacks its libraries: {', '.join(missing)}")
    manifest = {
        "format": FORMAT,
        "id": artifact_id(draft.model, draft.target["name"], created),
        "model": draft.model, "target": draft.target, "runtime": draft.runtime,
        "input": draft.input, "output": draft.output, "libraries": draft.libraries,
        "files": files,
        "created": iso(created), "expires": iso(created + timedelta(days=draft.expires_days)),
        "signing_key": key_id,
        "details": draft.details,
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / MANIFEST).write_bytes(body)
    (folder / SIGNATURE).write_text(base64.b64encode(key.sign(body)).decode() + "\n")
    return manifest


@dataclass
class Verdict:
    id: str
    ok: bool
    problems: list[str]
    manifest: dict[str, Any] | None

    def to_dict(self) -> dict[str, object]:
        """The verdict without the manifest it read."""
        return {"id": self.id, "ok": self.ok, "problems": self.problems}


def verify_bundle(folder: Path, public: "Ed25519PublicKey", now: datetime | None = None) -> Verdict:
    """Signature, then every file's sha256, then the expiry: every problem found is listed."""
    from cryptography.exceptions import InvalidSignature

    problems: list[str] = []
    try:
        body = (folder / MANIFEST).read_bytes()
        signature = base64.b64decode((folder / SIGNATURE).read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        return Verdict(folder.name, False, [f"unreadable manifest or signature: {exc}"], None)
    try:
        public.verify(signature, body)
    except InvalidSignature:
        problems.append("signature does not match manifest.json (tampered, or signed by another key)")
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        return Verdict(folder.name, False, [*problems, f"manifest.json is not JSON: {exc}"], None)
    for name, want in sorted(manifest.get("files", {}).items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != want:
            problems.append(f"{name}: sha256 differs from the manifest")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in (MANIFEST, SIGNATURE)
                   and p.name not in manifest.get("files", {}))
    problems += [f"{name}: not listed in the manifest" for name in extra]
    expires = manifest.get("expires")
    if expires and datetime.fromisoformat(expires) <= (now or utc_now()):
        problems.append(f"expired at {expires}")
    return Verdict(manifest.get("id", folder.name), not problems, problems, manifest)
