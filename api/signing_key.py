"""The server's ed25519 signing key file (``[server] signing_key_path``).

Theory of operation
-------------------
The file uses Synapse's format (``signedjson.key.write_signing_keys``): one line
``ed25519 <version> <unpadded base64 seed>``, so a key can move between roomactors
and Synapse unchanged. The key ID other servers see is ``ed25519:<version>``; a
fresh key gets the version ``a_`` plus four random letters or digits, as Synapse's
``generate_signing_key`` does.

* ``generate_signing_key()`` makes a new key in memory.
* ``write_signing_key(path, key)`` creates the parent directory, then the file with
  ``O_CREAT | O_EXCL`` and mode 0600, and never replaces an existing file: losing
  a signing key changes the server's identity to every remote server, so replacing
  one is an operator's deliberate act, never a side effect.
* ``load_signing_key(path)`` reads the file with ``signedjson.key.read_signing_keys``
  and returns its first key (Synapse uses the first line too); blank lines are
  ignored. A missing, unreadable, empty or malformed file raises
  ``SigningKeyError`` naming the path.
* ``load_or_create_signing_key(path)`` is what startup calls: it loads the key,
  or on the very first start generates, writes and logs one.
* ``rotate_signing_key(path, now_ms=...)`` (``roomactors rotate-key``) retires the
  current key and writes a new one with a new key ID. The retired verify key is
  appended to a sidecar file ``<path>.old`` first (one JSON object a line:
  ``{"key_id", "key", "expired_ts"}``; public keys only), then the key file is
  replaced atomically (temp file, fsync, rename). A crash between the two leaves
  the still-current key listed as old, which readers skip (an old key with the
  current key's ID is ignored). ``load_old_verify_keys(path)`` reads the sidecar;
  the key service publishes those keys under ``old_verify_keys`` (s2s "Publishing
  Keys") so events signed with them still verify.
"""

from __future__ import annotations

import json
import io
import logging
import os
import secrets
import string
import tempfile
from pathlib import Path

from signedjson.key import (
    decode_verify_key_bytes,
    generate_signing_key as _generate,
    get_verify_key,
    read_signing_keys,
    write_signing_keys,
)
from signedjson.types import SigningKey

from api.files import write_new_file

from roomactors.protocol.b64 import decode_base64, encode_base64
from roomactors.protocol.server_keys import OldVerifyKey, key_id_of

__all__ = [
    "SigningKeyError",
    "generate_signing_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "write_signing_key",
    "old_keys_path",
    "load_old_verify_keys",
    "rotate_signing_key",
]

log = logging.getLogger(__name__)

_VERSION_ALPHABET = string.ascii_letters + string.digits


class SigningKeyError(Exception):
    """The signing key file is missing, unreadable, malformed, or already exists."""


def generate_signing_key() -> SigningKey:
    """A new ed25519 key with version ``a_`` + 4 random letters/digits."""
    version = "a_" + "".join(secrets.choice(_VERSION_ALPHABET) for _ in range(4))
    return _generate(version)


def write_signing_key(path: str | Path, key: SigningKey) -> None:
    """Write ``key`` to a new file at ``path`` (mode 0600); refuse to overwrite."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot create signing key file: {e.strerror}") from None
    stream = io.StringIO()
    write_signing_keys(stream, [key])
    try:
        write_new_file(path, stream.getvalue().encode("ascii"), 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path}: signing key file already exists; refusing to overwrite it") from None
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot create signing key file: {e.strerror}") from None


def load_signing_key(path: str | Path) -> SigningKey:
    """The (first) signing key in the file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: signing key file not found") from None
    except UnicodeDecodeError:
        raise SigningKeyError(f"{path}: {_MALFORMED}") from None
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot read signing key file: {e.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SigningKeyError(f"{path}: signing key file is empty")
    try:
        keys = read_signing_keys(lines)
    except ValueError as e:
        # Wrong field count, unsupported algorithm, bad base64 and a seed of the
        # wrong length (nacl's error subclasses ValueError) all land here.
        raise SigningKeyError(f"{path}: {_MALFORMED} ({e})") from None
    return keys[0]


def load_or_create_signing_key(path: str | Path) -> SigningKey:
    """Load the key at ``path``; if there is no file yet, generate and write one."""
    path = Path(path)
    if not path.exists():
        key = generate_signing_key()
        try:
            write_signing_key(path, key)
        except SigningKeyError:
            if not path.exists():
                raise
            # Lost a creation race: whoever won wrote a key, so use theirs.
        else:
            log.info("generated a new signing key ed25519:%s in %s", key.version, path)
            return key
    return load_signing_key(path)


def old_keys_path(path: str | Path) -> Path:
    """The sidecar file of retired verify keys: ``<path>.old``."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def load_old_verify_keys(path: str | Path) -> list[OldVerifyKey]:
    """The keys retired from the key file at ``path`` (``[]`` if none ever were)."""
    old_path = old_keys_path(path)
    try:
        text = old_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise SigningKeyError(f"{old_path}: cannot read old verify keys: {e}") from None
    keys: dict[str, OldVerifyKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key_id, key_b64, expired_ts = entry["key_id"], entry["key"], entry["expired_ts"]
            if not isinstance(key_id, str) or not isinstance(expired_ts, int) or isinstance(expired_ts, bool):
                raise TypeError("wrong field types")
            verify_key = decode_verify_key_bytes(key_id, decode_base64(key_b64))
        except (ValueError, KeyError, TypeError) as e:
            raise SigningKeyError(
                f"{old_path}: line {number}: malformed old verify key "
                f"(expected {{\"key_id\": ..., \"key\": ..., \"expired_ts\": ...}}): {e}"
            ) from None
        keys[key_id] = OldVerifyKey(key_id, verify_key, expired_ts)  # a later line wins
    return list(keys.values())


def rotate_signing_key(path: str | Path, *, now_ms: int) -> tuple[SigningKey, OldVerifyKey]:
    """Retire the key at ``path`` (expired at ``now_ms``) and write a new one with an
    unused key ID; return ``(new key, retired key)``. See the module docstring."""
    path = Path(path)
    current = load_signing_key(path)
    used = {key_id_of(current), *(k.key_id for k in load_old_verify_keys(path))}
    new = generate_signing_key()
    while key_id_of(new) in used:
        new = generate_signing_key()
    retired = OldVerifyKey(key_id_of(current), get_verify_key(current), now_ms)
    line = json.dumps(
        {"key_id": retired.key_id, "key": encode_base64(retired.verify_key.encode()), "expired_ts": now_ms}
    )
    old_path = old_keys_path(path)
    try:
        fd = os.open(old_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as e:
        raise SigningKeyError(f"{old_path}: cannot record the retired key: {e.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot write the new signing key: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            write_signing_keys(stream, [new])
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SigningKeyError(f"{path}: cannot write the new signing key: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("rotated signing key %s -> %s in %s", retired.key_id, key_id_of(new), path)
    return new, retired


_MALFORMED = "malformed signing key file (expected a line 'ed25519 <version> <base64 key>')"
