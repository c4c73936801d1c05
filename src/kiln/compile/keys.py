"""The workspace's Ed25519 signing key: made once, private half kept 0600 under .kiln, public half shared."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import InputError
from kiln.files import write_bytes_atomic
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_FILE = "signing-key.pub"  # in the workspace's artifacts folder; devices are given a copy


def private_key_path(ws: Workspace) -> Path:
    return ws.state_dir / "keys" / "artifact-signing.pem"


def public_key_path(ws: Workspace) -> Path:
    return ws.folder("artifacts") / PUBLIC_KEY_FILE


def signing_key(ws: Workspace) -> "Ed25519PrivateKey":
    """The workspace's key, made on first use (exclusive create, so two compiles never make two keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = private_key_path(ws)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        made = Ed25519PrivateKey.generate()
        pem = made.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} holds a key that is not Ed25519")
    _write_public(ws, key.public_key())
    return key


def _write_public(ws: Workspace, public: "Ed25519PublicKey") -> None:
    pem = public_pem(public)
    path = public_key_path(ws)
    if not path.exists() or path.read_bytes() != pem:
        write_bytes_atomic(path, pem)


def public_pem(public: "Ed25519PublicKey") -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public: "Ed25519PublicKey") -> str:
    """sha256 of the raw public key, as hex: how a manifest names the key that signed it."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(path: Path) -> "Ed25519PublicKey":
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not path.is_file():
        raise InputError(f"public key file {path} does not exist")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise InputError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return key
