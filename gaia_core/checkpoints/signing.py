"""ed25519 signatures of manifests, in the shape of Nix binary caches.

A key pair is ``NAME.secret`` (mode 0600) and ``NAME.public``; the public file's one line
``NAME:<base64 of 32 bytes>`` is what users paste into ``trusted_public_keys``. The
signature covers the canonical JSON of every manifest field but ``signature`` itself, so
the fingerprint, the payload's sha256 and sizes, the inputs and the relocation data are
all covered. The crypto is ``cryptography``'s; nothing here is home-made.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gaia_core.checkpoints.fingerprint import canonical_json
from gaia_core.errors import CheckpointError, ConfigError

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class SigningKey:
    name: str
    key: Ed25519PrivateKey

    def public_line(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"{self.name}:{base64.b64encode(raw).decode()}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Who signed a manifest, and whether that counts here."""

    #: ``trusted``, ``unsigned`` (no keys configured: accepted after the hash check),
    #: ``untrusted`` (keys configured, not signed by one of them), ``invalid`` (a signature
    #: that does not verify: tampered or corrupt)
    state: str
    signer: str
    why: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("trusted", "unsigned")

    def reason(self) -> str:
        return f"untrusted:{self.why}" if not self.usable else self.state


def generate(name: str) -> SigningKey:
    if not KEY_NAME.match(name):
        raise ConfigError(f"key name '{name}' must be letters, digits, '.', '_', '-' (at most 128)")
    return SigningKey(name, Ed25519PrivateKey.generate())


def write_key_pair(key: SigningKey, directory: Path) -> tuple[Path, Path]:
    """Write ``NAME.secret`` (0600, never readable by others) and ``NAME.public``; never overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = directory / f"{key.name}.secret", directory / f"{key.name}.public"
    for path in (secret_path, public_path):
        if path.exists():
            raise CheckpointError(f"{path} exists; refusing to overwrite a key")
    seed = key.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{key.name}:{base64.b64encode(seed).decode()}\n")
    public_path.write_text(key.public_line() + "\n")
    return secret_path, public_path


def load_signing_key(path: Path, origin: str) -> SigningKey:
    """The secret key in ``path``; ``origin`` names where the path came from, for errors."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise CheckpointError(f"signing key {path} ({origin}) cannot be read: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise CheckpointError(f"signing key {path} ({origin}) is readable by group or others (mode "
                              f"{mode & 0o777:04o}); chmod 600 it")
    name, raw = _split(text, f"signing key {path} ({origin})", 32)
    return SigningKey(name, Ed25519PrivateKey.from_private_bytes(raw))


def parse_public_key(line: str, where: str) -> tuple[str, Ed25519PublicKey]:
    name, raw = _split(line.strip(), where, 32)
    return name, Ed25519PublicKey.from_public_bytes(raw)


def _split(text: str, where: str, size: int) -> tuple[str, bytes]:
    name, sep, encoded = text.partition(":")
    if not sep or not KEY_NAME.match(name):
        raise ConfigError(f"{where}: expected NAME:BASE64 (as written by `gaia checkpoints keygen`)")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the part after '{name}:' is not base64") from None
    if len(raw) != size:
        raise ConfigError(f"{where}: expected a {size}-byte ed25519 key, got {len(raw)} bytes")
    return name, raw


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def sign(manifest: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    signature = key.key.sign(signed_bytes(manifest))
    return {**manifest, "signature": {"key": key.name, "sig": base64.b64encode(signature).decode()}}


def verify(manifest: dict[str, Any], trusted: dict[str, Ed25519PublicKey]) -> Verdict:
    """Judge a manifest from a backend against the configured ``trusted_public_keys``."""
    signature = manifest.get("signature")
    if not isinstance(signature, dict):
        if trusted:
            return Verdict("untrusted", "unsigned", "unsigned")
        return Verdict("unsigned", "unsigned")
    name = str(signature.get("key"))
    key = trusted.get(name)
    if key is None:
        if trusted:
            return Verdict("untrusted", name, f"key_not_trusted:{name}")
        return Verdict("unsigned", f"{name} (not verified: no trusted_public_keys)")
    try:
        key.verify(base64.b64decode(str(signature.get("sig")), validate=True), signed_bytes(manifest))
    except (InvalidSignature, binascii.Error, ValueError):
        return Verdict("invalid", name, f"bad_signature:{name}")
    return Verdict("trusted", name)
