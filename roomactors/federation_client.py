"""Outbound federation requests: X-Matrix signing over a pluggable transport.

Theory of operation
-------------------
Two layers, so tests can route requests in-process (``tests/helpers/network.py``)
while production speaks HTTPS::

    FederationClient.request(destination, method, path, query, json_body)
      │  target = path + "?" + %-encoded query      (path is already encoded by callers)
      │  Authorization: X-Matrix ... over {method, uri: target, origin, destination, content}
      ▼
    FederationTransport.send(FederationRequest, timeout_s) -> FederationResponse
      │  raises FederationUnreachable for DNS, connect, TLS, deny-list and timeout failures
      ▼
    HttpsTransport: ServerDiscovery.resolve(destination) -> Resolution (spec steps 1-6)
                    for each endpoint: addresses (deny-list applied) -> httpx over trio

``FederationClient`` turns the response into JSON: 2xx with a JSON body is the
result; any other status raises :class:`FederationError` (status, errcode, error,
body); a 2xx that is not JSON raises ``FederationError(status, "M_NOT_JSON")``.
``FederationClient.get_raw`` (media) returns the raw :class:`FederationResponse`
whatever its status, refusing a body over ``max_bytes`` with
:class:`ResponseTooLarge`: the HTTPS transport stops reading as soon as the limit is
passed (transports that say ``supports_max_response_bytes``); other transports are
checked once they answer.

HttpsTransport details
~~~~~~~~~~~~~~~~~~~~~~
* The request URL's host is the name the certificate must be valid for
  (``Resolution.tls_name``), so httpx sends it as SNI, checks the certificate
  against it, and pools connections per (name, port): a connection verified for
  one server name is never reused for another. The TCP connection itself goes to
  the address discovery chose: a small httpcore network backend
  (:class:`_PinnedBackend`) reads the addresses for the current request from a
  context variable set around ``send`` (httpcore connects in the requesting task).
  For an IP-literal name no SNI is sent (Python's ``ssl`` never sends one for an
  IP) and the certificate must hold that IP.
* ``Host`` is set explicitly per the spec's step (``Resolution.host_header``).
* Every address is checked against ``ip_range_denylist`` / ``ip_range_allowlist``
  before connecting, including the well-known fetch and each of its redirects.
* HTTP/1.1 only (ALPN ``http/1.1``), no proxies from the environment, one overall
  deadline per request (``timeout_s``) covering discovery, connect, send and read.
* A connect failure moves on to the next SRV endpoint; a failure after the
  request may have been sent does not (the caller decides about retries).
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpcore
import httpx
import orjson
import trio

from roomactors.discovery import (
    DiscoveryError,
    Resolver,
    ServerDiscovery,
    SystemResolver,
    WellKnownFetcher,
    WellKnownResponse,
)
from roomactors.protocol.server_discovery import WELL_KNOWN_PATH, Endpoint, IpFilter, Resolution
from roomactors.protocol.x_matrix import sign_request

__all__ = [
    "FederationClient",
    "FederationError",
    "FederationRequest",
    "FederationResponse",
    "FederationTransport",
    "FederationUnreachable",
    "HttpsTransport",
    "ResponseTooLarge",
    "encode_target",
]

log = logging.getLogger(__name__)

#: Responses larger than this are refused (``FederationUnreachable``).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_WELL_KNOWN_BYTES = 50 * 1024
WELL_KNOWN_TIMEOUT_S = 10.0
MAX_WELL_KNOWN_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class FederationRequest:
    destination: str
    method: str
    #: path + "?" + query, exactly what was signed and goes on the request line
    target: str
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class FederationResponse:
    status: int
    #: lower-case names
    headers: Mapping[str, str]
    body: bytes


class FederationUnreachable(Exception):
    """The destination could not be reached: DNS, connect, TLS, deny-listed address, timeout."""


class ResponseTooLarge(FederationUnreachable):
    """The answer's body passed the size limit of the request (nothing more was read)."""


class FederationError(Exception):
    """The destination answered, but not with 2xx JSON."""

    def __init__(self, status: int, errcode: str | None = None, error: str | None = None, body: Any = None) -> None:
        super().__init__(f"HTTP {status} {errcode or ''}{': ' + error if error else ''}".rstrip())
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body = body


class FederationTransport(Protocol):
    async def send(self, request: FederationRequest, *, timeout_s: float) -> FederationResponse:
        """Deliver ``request`` to ``request.destination``; raise :class:`FederationUnreachable`."""
        ...


def encode_target(path: str, query: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """``path`` (already percent-encoded by the caller) plus the %-encoded query, if any."""
    if not query:
        return path
    items: list[tuple[str, str]] = []
    for name, value in query.items():
        if isinstance(value, str):
            items.append((name, value))
        else:
            items.extend((name, v) for v in value)
    return path + "?" + urllib.parse.urlencode(items, quote_via=urllib.parse.quote)


class FederationClient:
    """Signed federation requests from ``server_name`` (s2s "Request Authentication")."""

    def __init__(
        self, transport: FederationTransport, *, server_name: str, signing_key: Any, request_timeout_s: float
    ) -> None:
        self.transport = transport
        self.server_name = server_name
        self._signing_key = signing_key
        self._timeout_s = request_timeout_s

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | Sequence[str]] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Send one signed request and return the parsed JSON answer.

        Raises :class:`FederationUnreachable` or :class:`FederationError`.
        """
        method = method.upper()
        target = encode_target(path, query)
        headers = {
            "Authorization": sign_request(
                method=method,
                uri=target,
                origin=self.server_name,
                destination=destination,
                content=json_body,
                signing_key=self._signing_key,
            ),
            "Accept": "application/json",
        }
        body = None
        if json_body is not None:
            body = orjson.dumps(json_body)
            headers["Content-Type"] = "application/json"
        response = await self.transport.send(
            FederationRequest(destination=destination, method=method, target=target, headers=headers, body=body),
            timeout_s=self._timeout_s if timeout_s is None else timeout_s,
        )
        try:
            parsed = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            parsed = _NOT_JSON
        if 200 <= response.status < 300:
            if parsed is _NOT_JSON:
                raise FederationError(response.status, "M_NOT_JSON", "response is not JSON", response.body)
            return parsed
        if isinstance(parsed, dict):
            errcode = parsed.get("errcode") if isinstance(parsed.get("errcode"), str) else None
            error = parsed.get("error") if isinstance(parsed.get("error"), str) else None
            raise FederationError(response.status, errcode, error, parsed)
        raise FederationError(response.status, None, None, response.body if parsed is _NOT_JSON else parsed)

    async def get_raw(
        self,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str | Sequence[str]] | None = None,
        max_bytes: int,
        timeout_s: float | None = None,
    ) -> FederationResponse:
        """One signed GET; the raw answer (any status). Raises
        :class:`FederationUnreachable`, or :class:`ResponseTooLarge` past ``max_bytes``."""
        target = encode_target(path, query)
        headers = {
            "Authorization": sign_request(
                method="GET", uri=target, origin=self.server_name, destination=destination,
                content=None, signing_key=self._signing_key,
            ),
        }
        request = FederationRequest(destination=destination, method="GET", target=target, headers=headers, body=None)
        timeout = self._timeout_s if timeout_s is None else timeout_s
        if getattr(self.transport, "supports_max_response_bytes", False):
            response = await self.transport.send(request, timeout_s=timeout, max_response_bytes=max_bytes)  # type: ignore[call-arg]
        else:
            response = await self.transport.send(request, timeout_s=timeout)
        if len(response.body) > max_bytes:
            raise ResponseTooLarge(f"{destination}: response larger than {max_bytes} bytes")
        return response

    async def get_json(self, destination: str, path: str, *, query: Mapping[str, str | Sequence[str]] | None = None) -> Any:
        return await self.request(destination, "GET", path, query=query)

    async def put_json(
        self, destination: str, path: str, body: Any, *, query: Mapping[str, str | Sequence[str]] | None = None
    ) -> Any:
        return await self.request(destination, "PUT", path, query=query, json_body=body)

    async def post_json(
        self, destination: str, path: str, body: Any, *, query: Mapping[str, str | Sequence[str]] | None = None
    ) -> Any:
        return await self.request(destination, "POST", path, query=query, json_body=body)


_NOT_JSON: Any = object()


# ------------------------------------------------------------------ HTTPS


@dataclass(frozen=True, slots=True)
class _Route:
    port: int
    addresses: tuple[str, ...]


_ROUTE: contextvars.ContextVar[_Route | None] = contextvars.ContextVar("roomactors_federation_route", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses discovery chose for the current request, in order."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        route = _ROUTE.get()
        if route is None or route.port != port or not route.addresses:
            raise httpcore.ConnectError(f"no resolved address for {host}:{port}")
        error: Exception | None = None
        for address in route.addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("federation never uses unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with our network backend in its httpcore pool."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, trust_env=False, http1=True, http2=False, limits=limits)
        # The pool super() built is never opened; ours differs only in network_backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_PinnedBackend(httpcore.TrioBackend()),
        )


class HttpsTransport:
    """:class:`FederationTransport` over HTTPS with spec server discovery (httpx on trio)."""

    #: ``send`` takes ``max_response_bytes`` (``FederationClient.get_raw``).
    supports_max_response_bytes = True

    def __init__(
        self,
        *,
        verify_certificates: bool,
        ip_range_denylist: Sequence[str],
        ip_range_allowlist: Sequence[str],
        resolver: Resolver | None = None,
        well_known_fetcher: WellKnownFetcher | None = None,
        ssl_context: ssl.SSLContext | None = None,
        discovery: ServerDiscovery | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        well_known_port: int = 443,
        user_agent: str = "roomactors",
    ) -> None:
        """``ssl_context`` replaces the default (system CAs; tests pass one trusting a
        test certificate); ``verify_certificates=False`` turns verification off in
        either. ``resolver``/``well_known_fetcher``/``discovery`` replace discovery's
        collaborators; ``well_known_port`` exists for tests (the spec's is 443)."""
        self._verify_certificates = verify_certificates
        self._ssl_context = ssl_context
        self._client: httpx.AsyncClient | None = None  # made on first use (loading CAs costs)
        self._closed = False
        self._ip_filter = IpFilter(ip_range_denylist, ip_range_allowlist)
        self.discovery = discovery or ServerDiscovery(
            resolver=resolver or SystemResolver(),
            well_known=well_known_fetcher or self.fetch_well_known,
            ip_filter=self._ip_filter,
        )
        self._max_response_bytes = max_response_bytes
        self._well_known_port = well_known_port
        self._user_agent = user_agent

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise FederationUnreachable("the federation transport is closed")
        if self._client is None:
            ssl_context = self._ssl_context or ssl.create_default_context()
            if not self._verify_certificates:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            ssl_context.set_alpn_protocols(["http/1.1"])
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60.0)
            self._client = httpx.AsyncClient(
                transport=_PinnedTransport(ssl_context, limits), trust_env=False, follow_redirects=False, timeout=None
            )
        return self._client

    async def __aenter__(self) -> HttpsTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections; later sends raise :class:`FederationUnreachable`."""
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def send(
        self, request: FederationRequest, *, timeout_s: float, max_response_bytes: int | None = None
    ) -> FederationResponse:
        try:
            with trio.fail_after(timeout_s):
                resolution = await self.discovery.resolve(request.destination)
                return await self._exchange(
                    resolution,
                    method=request.method,
                    target=request.target,
                    headers=request.headers,
                    body=request.body,
                    max_bytes=self._max_response_bytes if max_response_bytes is None else max_response_bytes,
                )
        except trio.TooSlowError:
            raise FederationUnreachable(f"{request.destination}: no answer within {timeout_s} s") from None
        except DiscoveryError as e:
            raise FederationUnreachable(f"{request.destination}: {e}") from e

    async def _exchange(
        self,
        resolution: Resolution,
        *,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
    ) -> FederationResponse:
        """Try each endpoint of ``resolution`` until one connects; return its answer."""
        error: Exception | None = None
        for endpoint in resolution.endpoints:
            try:
                addresses = await self.discovery.addresses(endpoint)
            except DiscoveryError as e:
                error = e
                continue
            url = httpx.URL(scheme="https", host=resolution.tls_name, port=endpoint.port, raw_path=target.encode("ascii"))
            sent_headers = {"User-Agent": self._user_agent, **headers, "Host": resolution.host_header}
            token = _ROUTE.set(_Route(endpoint.port, tuple(addresses)))
            try:
                return await self._send_one(method, url, sent_headers, body, max_bytes)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                error = e  # nothing was sent: try the next endpoint
                log.debug("connecting to %s for %s failed: %s", endpoint, resolution.server_name, e)
            except httpx.TransportError as e:
                raise FederationUnreachable(f"{resolution.server_name}: {type(e).__name__}: {e}") from e
            finally:
                _ROUTE.reset(token)
        if isinstance(error, DiscoveryError):
            raise error
        raise FederationUnreachable(f"{resolution.server_name}: {type(error).__name__}: {error}") from error

    async def _send_one(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], body: bytes | None, max_bytes: int
    ) -> FederationResponse:
        client = self._http()
        request = client.build_request(method, url, headers=headers, content=body)
        response = await client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ResponseTooLarge(f"{url.host}: response larger than {max_bytes} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        out: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            name = name.lower()
            out[name] = f"{out[name]}, {value}" if name in out else value
        return FederationResponse(status=response.status_code, headers=out, body=b"".join(chunks))

    async def fetch_well_known(self, hostname: str) -> WellKnownResponse | None:
        """GET ``https://<hostname>/.well-known/matrix/server``, following up to
        ``MAX_WELL_KNOWN_REDIRECTS`` https redirects without loops (spec step 3).

        ``None`` when no host could be reached; a redirect loop, a redirect to a
        non-https URL or too many redirects count as an error response (status 0).
        """
        host, port, target = hostname, self._well_known_port, WELL_KNOWN_PATH
        seen: set[tuple[str, int, str]] = set()
        try:
            with trio.fail_after(WELL_KNOWN_TIMEOUT_S):
                for _ in range(MAX_WELL_KNOWN_REDIRECTS + 1):
                    seen.add((host, port, target))
                    netloc = host if port == 443 else f"{host}:{port}"
                    if ":" in host:
                        netloc = f"[{host}]" if port == 443 else f"[{host}]:{port}"
                    resolution = Resolution(hostname, (Endpoint(host, port),), netloc, host, "3")
                    response = await self._exchange(
                        resolution,
                        method="GET",
                        target=target,
                        headers={"Accept": "application/json"},
                        body=None,
                        max_bytes=MAX_WELL_KNOWN_BYTES,
                    )
                    location = response.headers.get("location")
                    if response.status not in _REDIRECTS or location is None:
                        return WellKnownResponse(response.status, response.headers, response.body)
                    next_url = urllib.parse.urlsplit(urllib.parse.urljoin(f"https://{netloc}{target}", location))
                    if next_url.scheme != "https" or not next_url.hostname:
                        return WellKnownResponse(0, {}, b"")
                    host, port = next_url.hostname.lower(), next_url.port or 443
                    target = (next_url.path or "/") + (f"?{next_url.query}" if next_url.query else "")
                    if (host, port, target) in seen:
                        return WellKnownResponse(0, {}, b"")  # redirect loop
                return WellKnownResponse(0, {}, b"")  # too many redirects
        except (trio.TooSlowError, FederationUnreachable, DiscoveryError, ValueError, httpx.InvalidURL) as e:
            log.info("well-known for %s unreachable: %s", hostname, e)
            return None
