"""A downloaded bundle checked before it may run: Ed25519 signature over manifest.json, every file's sha256,
expiry, target, and that it is newer than what the device runs (rollback protection).

The manifest format is kiln-artifact/1, described in the package's README.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "kiln-artifact/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"


class Rejected(Exception):
    """A bundle that must not run; the message says why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def verify(folder: Path, public_key: Any, target: str, running: dict[str, Any] | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """The bundle's manifest when every check passes; Rejected naming the first failed check otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        body = (folder / MANIFEST).read_bytes()
        signature = base64.b64decode((folder / SIGNATURE).read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise Rejected(f"manifest or signature unreadable: {exc}") from None
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise Rejected("signature does not match manifest.json (tampered, or signed by an untrusted key)") from None
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise Rejected(f"manifest format {manifest.get('format')!r}; this agent reads {FORMAT}")
    for name, want in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise Rejected(f"{name}: missing")
        if sha256_file(path) != want:
            raise Rejected(f"{name}: sha256 differs from the signed manifest")
    if manifest["target"]["name"] != target:
        raise Rejected(f"built for target {manifest['target']['name']}, this device is {target}")
    if datetime.fromisoformat(manifest["expires"]) <= (now or datetime.now(UTC)):
        raise Rejected(f"expired at {manifest['expires']}")
    if running is not None and created(manifest) <= created(running):
        raise Rejected(f"created {manifest['created']}, not newer than the running {running['id']} "
                       f"({running['created']}): rollback refused")
    return manifest


def created(manifest: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(manifest["created"])
