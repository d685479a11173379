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
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from pathlib import Path

from signedjson.key import generate_signing_key as _generate, read_signing_keys, write_signing_keys
from signedjson.types import SigningKey

__all__ = [
    "SigningKeyError",
    "generate_signing_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "write_signing_key",
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
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path}: signing key file already exists; refusing to overwrite it") from None
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot create signing key file: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            write_signing_keys(stream, [key])
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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


_MALFORMED = "malformed signing key file (expected a line 'ed25519 <version> <base64 key>')"
