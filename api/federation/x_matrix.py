"""Inbound request authentication (s2s "Request Authentication") and
``federation_route``, the decorator every authenticated federation view uses.

Theory of operation
-------------------
:func:`authenticate` turns an inbound request into the verified origin server
name, or refuses it before the view runs::

    deps.keys is None (federation off)  ─► 404 M_UNRECOGNIZED
    no "Authorization: X-Matrix ..."    ─► 401 M_UNAUTHORIZED
    a header that does not parse,
      headers naming different origins,
      destination present and not us    ─► 401 M_UNAUTHORIZED
    body present and not JSON           ─► 400 M_NOT_JSON
    origin's key (deps.keys) unknown,
      not valid now, or signature bad   ─► 401 M_UNAUTHORIZED

The signed object is rebuilt from what we received (step 1 of "Request
Authentication"): ``method``; ``uri``, the request target exactly as received
(``scope["raw_path"]`` plus ``?`` and ``scope["query_string"]``, never re-encoded);
``origin``; ``destination``, our own server name; ``content``, the parsed JSON body
when there is one. The check itself is the pure
:func:`roomactors.protocol.x_matrix.verify_request`.

Keys: ``verify_keys`` may sign requests, ``old_verify_keys`` only events ("Publishing
Keys"), so the key must be valid now: we ask the key service for it with
``minimum_valid_until_ts = now`` and refuse one whose validity (an old key's is its
``expired_ts``) has passed. A request may carry several X-Matrix headers (one per
key, as the spec's example code suggests): all must name the same origin, every
one whose key we know must verify, and at least one must.

:func:`federation_route` registers a view under ``/_matrix/federation/<version><rule>``
for each version, authenticates first and passes ``origin=`` to the view.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from quart import Blueprint, Request, request

from api.deps import Deps, deps
from api.errors import MatrixError
from roomactors.protocol.errors import SignatureError
from roomactors.protocol.x_matrix import XMatrixHeader, parse_authorization, verify_request

__all__ = ["RequestParts", "authenticate", "federation_route", "request_parts", "FEDERATION_PREFIX"]

FEDERATION_PREFIX = "/_matrix/federation"
_RULE = 's2s "Request Authentication"'


@dataclass(frozen=True, slots=True)
class RequestParts:
    """What authentication needs of a request."""

    method: str
    #: the request target as received: raw path, plus ``?query`` when there is one
    uri: str
    #: every ``Authorization`` header value, in order
    authorization: Sequence[str]
    body: bytes


def _unauthorized(error: str) -> MatrixError:
    return MatrixError("M_UNAUTHORIZED", 401, error)


async def request_parts(req: Request) -> RequestParts:
    """The :class:`RequestParts` of a quart request (reads the body, cached)."""
    raw_path: bytes = req.scope.get("raw_path") or req.path.encode("utf-8")
    query: bytes = req.scope.get("query_string") or b""
    try:
        uri = raw_path.decode("ascii") + ("?" + query.decode("ascii") if query else "")
    except UnicodeDecodeError:
        # A raw request target is ASCII (RFC 9112 §3.2); the sender cannot have signed this.
        raise _unauthorized("request target is not ASCII") from None
    body = await req.get_data(cache=True)
    return RequestParts(req.method, uri, req.headers.getlist("Authorization"), body)


async def authenticate(req: Request | RequestParts, d: Deps) -> str:
    """The verified origin of ``req``, or raise :class:`MatrixError` (see the module docstring)."""
    keys = d.keys
    if keys is None:
        raise MatrixError("M_UNRECOGNIZED", 404, "Unrecognized request")
    parts = req if isinstance(req, RequestParts) else await request_parts(req)

    headers: list[XMatrixHeader] = []
    for value in parts.authorization:
        scheme = value.split(None, 1)[0] if value.strip() else ""
        if scheme.lower() != "x-matrix":
            continue  # other schemes are not ours to judge
        try:
            headers.append(parse_authorization(value))
        except ValueError as e:
            raise _unauthorized(f"malformed X-Matrix Authorization header: {e}") from None
    if not headers:
        raise _unauthorized("missing X-Matrix Authorization header")
    origin = headers[0].origin
    if any(h.origin != origin for h in headers):
        raise _unauthorized("X-Matrix headers name different origins")
    for h in headers:
        # "If this property is included, but the value does not match the receiving
        # server's name, the receiving server must deny the request with an HTTP
        # status code 401 Unauthorized."
        if h.destination is not None and h.destination != d.server_name:
            raise _unauthorized(f"request is for {h.destination}, not this server")

    content: Any | None = None
    if parts.body.strip():
        try:
            content = orjson.loads(parts.body)
        except orjson.JSONDecodeError:
            raise MatrixError("M_NOT_JSON", 400, "the request body is not valid JSON") from None

    now = d.clock.time_ms()
    found = await keys.get_verify_keys({origin: {h.key_id: now for h in headers}})
    known = found.get(origin, {})
    verified = 0
    for h in headers:
        entry = known.get(h.key_id)
        if entry is None:
            continue
        verify_key, valid_until_ts = entry
        if valid_until_ts is not None and valid_until_ts < now:
            continue  # an expired or old key may not sign requests ("Publishing Keys")
        try:
            verify_request(
                header=h, method=parts.method, uri=parts.uri, destination=d.server_name,
                content=content, verify_key=verify_key,
            )
        except SignatureError as e:
            raise _unauthorized(f"bad X-Matrix signature from {origin} ({h.key_id}): {e.message}") from None
        verified += 1
    if not verified:
        raise _unauthorized(f"no usable key of {origin} to check the request signature ({_RULE})")
    return origin


View = Callable[..., Awaitable[Any]]


def federation_route(
    bp: Blueprint, rule: str, methods: Sequence[str], *, versions: Sequence[str] = ("v1",)
) -> Callable[[View], View]:
    """Register the decorated view under ``/_matrix/federation/<version><rule>`` for
    each of ``versions``; it runs only after :func:`authenticate` succeeded and gets
    the origin as ``origin=``."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        async def authenticated(**kwargs: Any) -> Any:
            origin = await authenticate(request, deps())
            return await view(origin=origin, **kwargs)

        for version in versions:
            bp.add_url_rule(
                f"{FEDERATION_PREFIX}/{version}{rule}",
                f"{view.__name__}:{version}",
                authenticated,
                methods=list(methods),
            )
        return view

    return decorator
