"""The signing key file: generation, 0600 creation without overwrite, loading, first start."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import pytest
from signedjson.key import encode_signing_key_base64, get_verify_key
from signedjson.sign import sign_json, verify_signed_json

from api.signing_key import (
    SigningKeyError,
    generate_signing_key,
    load_or_create_signing_key,
    load_signing_key,
    write_signing_key,
)


def test_generated_keys_are_fresh_ed25519_with_synapse_style_versions() -> None:
    keys = [generate_signing_key() for _ in range(20)]
    for key in keys:
        assert key.alg == "ed25519"
        assert re.fullmatch(r"a_[A-Za-z0-9]{4}", key.version)
    assert len({encode_signing_key_base64(k) for k in keys}) == 20
    assert len({k.version for k in keys}) > 1


def test_write_then_load_round_trips_in_synapse_format(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "nested" / "dir" / "signing.key"
    write_signing_key(path, key)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"ed25519 {key.version} {encode_signing_key_base64(key)}\n"
    loaded = load_signing_key(path)
    assert (loaded.alg, loaded.version) == ("ed25519", key.version)
    assert encode_signing_key_base64(loaded) == encode_signing_key_base64(key)
    # The loaded key signs what the original's verify key accepts.
    signed = sign_json({"a": 1}, "example.org", loaded)
    verify_signed_json(signed, "example.org", get_verify_key(key))


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    first = generate_signing_key()
    write_signing_key(path, first)
    before = path.read_bytes()
    with pytest.raises(SigningKeyError, match=r"signing\.key: signing key file already exists; refusing"):
        write_signing_key(path, generate_signing_key())
    assert path.read_bytes() == before


def test_write_reports_an_uncreatable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SigningKeyError, match=r"cannot create signing key file"):
        write_signing_key(blocker / "signing.key", generate_signing_key())


def test_load_reads_a_synapse_key_file(tmp_path: Path) -> None:
    # As written by Synapse's generate_signing_key script; extra keys after the
    # first (and blank lines) are ignored, as in Synapse.
    path = tmp_path / "example.org.signing.key"
    path.write_text(
        "\ned25519 a_Abcd nJwHrJJzZdyfpvArmgnVVMJnXhC9Bd8nmvEkDoI1AHU\n"
        "ed25519 old1 VGhpcyBpcyBub3QgYSByZWFsIGtleSwgc2VlIHRlc3Q\n"
    )
    key = load_signing_key(path)
    assert (key.alg, key.version) == ("ed25519", "a_Abcd")
    assert encode_signing_key_base64(key) == "nJwHrJJzZdyfpvArmgnVVMJnXhC9Bd8nmvEkDoI1AHU"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"signing key file is empty"),
        ("\n  \n", r"signing key file is empty"),
        ("ed25519 a_Abcd\n", r"malformed signing key file \(expected a line 'ed25519 <version> <base64 key>'\)"),
        ("rsa a_Abcd nJwHrJJzZdyfpvArmgnVVMJnXhC9Bd8nmvEkDoI1AHU\n", r"malformed signing key file .*Unsupported"),
        ("ed25519 a_Abcd AAAA\n", r"malformed signing key file .*32 bytes"),
        ("ed25519 a_Abcd A\n", r"malformed signing key file"),
        ("ed25519 a_Äbcd nJwHrJJzZdyfpvArmgnVVMJnXhC9Bd8nmvEkDoI1AHU\n", r"malformed signing key file"),
    ],
)
def test_load_rejects_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "signing.key"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SigningKeyError, match=r"signing\.key: " + message):
        load_signing_key(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"nope\.key: signing key file not found"):
        load_signing_key(tmp_path / "nope.key")


def test_load_or_create_creates_once_then_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "data" / "signing.key"
    with caplog.at_level(logging.INFO, logger="api.signing_key"):
        created = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"generated a new signing key ed25519:{created.version} in {path}" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="api.signing_key"):
        again = load_or_create_signing_key(path)
    assert caplog.text == ""
    assert again.version == created.version
    assert encode_signing_key_base64(again) == encode_signing_key_base64(created)


def test_load_or_create_does_not_replace_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text("garbage\n")
    with pytest.raises(SigningKeyError, match="malformed"):
        load_or_create_signing_key(path)
    assert path.read_text() == "garbage\n"
