"""X-Matrix request authentication (server-server API "Request Authentication").

Theory of operation
-------------------
Every federation request is signed by its origin. The signed object is a JSON
object holding the request, never sent as such::

    {"method": "PUT", "uri": "/_matrix/federation/v1/send/1?x=y",
     "origin": "a.example", "destination": "b.example", "content": {...}}

``uri`` is the request target exactly as it goes on the wire (path plus ``?`` and
the query, already percent-encoded), ``content`` is present only when the request
has a JSON body. The signature (appendices "Signing JSON") travels in the
``Authorization`` header::

    X-Matrix origin="a.example",destination="b.example",key="ed25519:1",sig="..."

* :func:`sign_request` builds that header value. Per the spec's advice for older
  servers it writes one space after ``X-Matrix``, lower-case names, no whitespace
  around commas, and always sends ``destination`` (required since v1.3).
* :func:`parse_authorization` reads one (RFC 9110 §11.4 auth-param grammar as the
  spec summarises it): the scheme is case-insensitive, parameters are
  comma-separated ``name=value`` pairs with optional spaces/tabs around commas,
  names are case-insensitive, values are a token or a quoted string whose
  backslash pairs are unescaped, and (for older servers) unquoted values may hold
  colons. Unknown parameters are ignored; a repeated known one is an error.
  ``destination`` may be missing (older servers), so callers decide what to do
  then; ``origin``, ``key`` and ``sig`` are required.
* :func:`verify_request` rebuilds the signed object from what the receiver saw
  and checks the signature with a key the caller already fetched (no I/O here).
  A ``destination`` that is present and differs from ours fails (the spec's
  401).

Everything is pure: the caller owns keys, clocks and HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SignatureError
from .ids import is_valid_server_name
from .signing import sign_json, verify_json

__all__ = [
    "XMatrixHeader",
    "parse_authorization",
    "request_json",
    "sign_request",
    "verify_request",
]

_RULE = "s2s: Request Authentication"
_SCHEME = "x-matrix"
#: RFC 9110 §5.6.2 tchar
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_OWS = " \t"
_KNOWN = ("origin", "destination", "key", "sig")


@dataclass(frozen=True, slots=True)
class XMatrixHeader:
    """The parameters of one ``Authorization: X-Matrix ...`` header."""

    origin: str
    #: ``None`` when the sender omitted it (servers before spec v1.3).
    destination: str | None
    #: ``"ed25519:abc"``: algorithm and version of the origin's key.
    key_id: str
    #: unpadded base64 ed25519 signature
    signature: str


def request_json(*, method: str, uri: str, origin: str, destination: str, content: Any | None) -> dict[str, Any]:
    """The object that is signed for one request (step 1 of "Request Authentication")."""
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(
    *, method: str, uri: str, origin: str, destination: str, content: Any | None, signing_key: Any
) -> str:
    """The full ``Authorization`` header value for a request from ``origin`` to ``destination``.

    ``uri`` is the exact request target (path and query) that will be sent;
    ``content`` the parsed JSON body, or ``None`` when there is no body.
    """
    signed = sign_json(
        request_json(method=method, uri=uri, origin=origin, destination=destination, content=content),
        origin,
        signing_key,
    )
    key_id = f"{signing_key.alg}:{signing_key.version}"
    sig = signed["signatures"][origin][key_id]
    return (
        f"X-Matrix origin={_quote(origin)},destination={_quote(destination)},"
        f"key={_quote(key_id)},sig={_quote(sig)}"
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_authorization(header: str) -> XMatrixHeader:
    """Parse an ``Authorization`` header value; ``ValueError`` if it is not a valid X-Matrix one."""
    if not isinstance(header, str):
        raise ValueError("Authorization header is not a string")
    scheme_end = 0
    while scheme_end < len(header) and header[scheme_end] not in _OWS:
        scheme_end += 1
    if header[:scheme_end].lower() != _SCHEME:
        raise ValueError("Authorization scheme is not X-Matrix")
    if scheme_end == len(header):
        raise ValueError("X-Matrix header has no parameters")
    params = _parse_params(header, scheme_end)

    for name in ("origin", "key", "sig"):
        if not params.get(name):
            raise ValueError(f"X-Matrix header lacks {name!r}")
    origin = params["origin"]
    destination = params.get("destination")
    if not is_valid_server_name(origin):
        raise ValueError(f"X-Matrix origin {origin!r} is not a server name")
    if destination is not None and not is_valid_server_name(destination):
        raise ValueError(f"X-Matrix destination {destination!r} is not a server name")
    alg, sep, version = params["key"].partition(":")
    if not sep or not alg or not version:
        raise ValueError(f"X-Matrix key {params['key']!r} is not an algorithm:version key ID")
    return XMatrixHeader(origin=origin, destination=destination, key_id=params["key"], signature=params["sig"])


def _parse_params(header: str, pos: int) -> dict[str, str]:
    """The comma-separated ``name=value`` list starting at ``pos`` (after the scheme)."""
    params: dict[str, str] = {}
    n = len(header)
    while True:
        while pos < n and (header[pos] in _OWS or header[pos] == ","):
            pos += 1  # OWS and empty list elements
        if pos == n:
            break
        start = pos
        while pos < n and header[pos] in _TCHAR:
            pos += 1
        name = header[start:pos].lower()
        if not name:
            raise ValueError(f"X-Matrix header: expected a parameter name at offset {start}")
        if pos == n or header[pos] != "=":
            raise ValueError(f"X-Matrix header: expected '=' after {name!r}")
        pos += 1
        if pos < n and header[pos] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos == n:
                    raise ValueError(f"X-Matrix header: unterminated quoted value for {name!r}")
                char = header[pos]
                if char == '"':
                    pos += 1
                    break
                if char == "\\":
                    if pos + 1 == n:
                        raise ValueError(f"X-Matrix header: dangling backslash in {name!r}")
                    char = header[pos + 1]
                    pos += 1
                chars.append(char)
                pos += 1
            value = "".join(chars)
        else:
            start = pos
            # A token, plus ':' which older servers send unquoted.
            while pos < n and (header[pos] in _TCHAR or header[pos] == ":"):
                pos += 1
            value = header[start:pos]
            if not value:
                raise ValueError(f"X-Matrix header: empty value for {name!r}")
        while pos < n and header[pos] in _OWS:
            pos += 1
        if pos < n and header[pos] != ",":
            raise ValueError(f"X-Matrix header: unexpected {header[pos]!r} after {name!r}")
        if name in _KNOWN:
            if name in params:
                raise ValueError(f"X-Matrix header: {name!r} given twice")
            params[name] = value
        # Unknown parameters are ignored (spec).
    return params


def verify_request(
    *,
    header: XMatrixHeader,
    method: str,
    uri: str,
    destination: str,
    content: Any | None,
    verify_key: Any,
) -> None:
    """Check ``header``'s signature over the request as received.

    ``destination`` is our own server name; ``verify_key`` the origin's key for
    ``header.key_id`` (fetched by the caller). Raises :class:`SignatureError`.
    """
    if header.destination is not None and header.destination != destination:
        raise SignatureError(
            f"request is for {header.destination}, not {destination}", rule=f"{_RULE}: destination"
        )
    key_id = f"{verify_key.alg}:{verify_key.version}"
    if key_id != header.key_id:
        raise SignatureError(f"request signed with {header.key_id}, verify key is {key_id}", rule=_RULE)
    obj = request_json(method=method, uri=uri, origin=header.origin, destination=destination, content=content)
    obj["signatures"] = {header.origin: {header.key_id: header.signature}}
    verify_json(obj, header.origin, verify_key)
