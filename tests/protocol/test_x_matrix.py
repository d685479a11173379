"""X-Matrix request signing (s2s "Request Authentication"): vectors and header grammar."""

from __future__ import annotations

import copy

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key
from signedjson.sign import sign_json as signedjson_sign_json

from roomactors.protocol.errors import SignatureError
from roomactors.protocol.x_matrix import (
    XMatrixHeader,
    parse_authorization,
    request_json,
    sign_request,
    verify_request,
)

# The appendices' example key ("Signing JSON": ed25519:1, seed YJDBA9...).
SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = decode_signing_key_base64("ed25519", "1", SEED)
VERIFY = get_verify_key(KEY)
OTHER = decode_signing_key_base64("ed25519", "1", "A" * 43)

REQ = dict(
    method="PUT",
    uri="/_matrix/federation/v1/send/txn1?a=%21b",
    origin="origin.example",
    destination="dest.example:8448",
    content={"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"x": 1}}]},
)


def signed_header() -> str:
    return sign_request(**REQ, signing_key=KEY)


def test_header_matches_an_independent_signer() -> None:
    # signedjson (the reference implementation) signs the same object; the header
    # must carry exactly that signature, in the spec's sender-compatible layout.
    expected = signedjson_sign_json(copy.deepcopy(request_json(**REQ)), "origin.example", KEY)
    sig = expected["signatures"]["origin.example"]["ed25519:1"]
    assert signed_header() == (
        f'X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:1",sig="{sig}"'
    )


def test_no_content_key_when_there_is_no_body() -> None:
    assert "content" not in request_json(method="GET", uri="/x", origin="a", destination="b", content=None)
    header = sign_request(method="GET", uri="/x", origin="a.example", destination="b.example", content=None, signing_key=KEY)
    parsed = parse_authorization(header)
    verify_request(header=parsed, method="GET", uri="/x", destination="b.example", content=None, verify_key=VERIFY)
    with pytest.raises(SignatureError):  # a body the signer did not sign
        verify_request(header=parsed, method="GET", uri="/x", destination="b.example", content={}, verify_key=VERIFY)


def test_round_trip() -> None:
    parsed = parse_authorization(signed_header())
    assert parsed.origin == "origin.example"
    assert parsed.destination == "dest.example:8448"
    assert parsed.key_id == "ed25519:1"
    verify_request(
        header=parsed,
        method="PUT",
        uri=REQ["uri"],
        destination="dest.example:8448",
        content=copy.deepcopy(REQ["content"]),
        verify_key=VERIFY,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"method": "POST"},
        {"uri": "/_matrix/federation/v1/send/txn2?a=%21b"},
        {"uri": "/_matrix/federation/v1/send/txn1?a=!b"},  # encoding matters: the target is signed as sent
        {"content": {"pdus": [], "edus": []}},
        {"content": None},
        {"destination": "other.example"},
    ],
    ids=["method", "uri", "uri-encoding", "content", "no-content", "destination"],
)
def test_tampering_fails(change: dict) -> None:
    parsed = parse_authorization(signed_header())
    seen = {k: v for k, v in REQ.items() if k != "origin"} | change
    with pytest.raises(SignatureError):
        verify_request(header=parsed, verify_key=VERIFY, **seen)


def test_wrong_origin_or_key_fails() -> None:
    parsed = parse_authorization(signed_header())
    seen = {k: v for k, v in REQ.items() if k != "origin"}
    forged = XMatrixHeader("evil.example", parsed.destination, parsed.key_id, parsed.signature)
    with pytest.raises(SignatureError):
        verify_request(header=forged, verify_key=VERIFY, **seen)
    with pytest.raises(SignatureError):
        verify_request(header=parsed, verify_key=get_verify_key(OTHER), **seen)
    other_version = decode_signing_key_base64("ed25519", "2", SEED)
    with pytest.raises(SignatureError):  # key ID must match the header's
        verify_request(header=parsed, verify_key=get_verify_key(other_version), **seen)


def test_missing_destination_is_accepted_by_the_parser_and_verifies_against_ours() -> None:
    # Servers before v1.3 sent no destination parameter but signed it all along.
    sig = parse_authorization(signed_header()).signature
    parsed = parse_authorization(f'X-Matrix origin=origin.example,key="ed25519:1",sig="{sig}"')
    assert parsed.destination is None
    seen = {k: v for k, v in REQ.items() if k != "origin"}
    verify_request(header=parsed, verify_key=VERIFY, **seen)


@pytest.mark.parametrize(
    "header",
    [
        'X-Matrix origin="o.example",destination="d.example",key="ed25519:1",sig="abc"',
        'x-matrix origin=o.example,destination=d.example,key=ed25519:1,sig=abc',  # colon unquoted (old servers)
        'X-MATRIX   ORIGIN="o.example" ,\tDestination = "d.example"'.replace(" = ", "=") + ' , KEY="ed25519:1",Sig=abc',
        'X-Matrix sig="abc",key="ed25519:1",destination="d.example",origin="o.example"',
        'X-Matrix origin="o.\\example",destination="d.example",key="ed25519:1",sig="a\\bc"',  # backslash escapes
        'X-Matrix origin="o.example",destination="d.example",key="ed25519:1",sig="abc",unknown="x, y=\\"z\\""',
        'X-Matrix origin="o.example",,destination="d.example",key="ed25519:1",sig="abc",',  # empty list elements
    ],
)
def test_header_grammar_accepts(header: str) -> None:
    assert parse_authorization(header) == XMatrixHeader("o.example", "d.example", "ed25519:1", "abc")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "X-Matrix",
        "X-Matrix ",
        'Bearer origin="o.example",key="ed25519:1",sig="abc"',
        'X-Matrixorigin="o.example",key="ed25519:1",sig="abc"',
        'X-Matrix key="ed25519:1",sig="abc"',  # no origin
        'X-Matrix origin="o.example",sig="abc"',  # no key
        'X-Matrix origin="o.example",key="ed25519:1"',  # no sig
        'X-Matrix origin="o.example",key="ed25519:1",sig=""',
        'X-Matrix origin="o.example",key="ed25519",sig="abc"',  # key ID without version
        'X-Matrix origin="not a name",key="ed25519:1",sig="abc"',
        'X-Matrix origin="o.example",destination="bad name",key="ed25519:1",sig="abc"',
        'X-Matrix origin="o.example,key="ed25519:1",sig="abc"',  # unterminated quote
        'X-Matrix origin="o.example",key="ed25519:1",sig="abc\\',
        'X-Matrix origin="o.example" key="ed25519:1",sig="abc"',  # missing comma
        'X-Matrix origin=,key="ed25519:1",sig="abc"',
        'X-Matrix origin,key="ed25519:1",sig="abc"',
        'X-Matrix origin="o.example",origin="p.example",key="ed25519:1",sig="abc"',  # repeated
    ],
)
def test_header_grammar_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization(header)


def test_quoting_escapes_what_it_must() -> None:
    from roomactors.protocol.x_matrix import _quote

    tricky = 'a\\"b'  # a, backslash, quote, b
    header = "X-Matrix origin=o.example,key=ed25519:1,sig=" + _quote(tricky)
    assert parse_authorization(header).signature == tricky
