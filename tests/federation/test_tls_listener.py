"""The federation TLS listener of ``api.server.serve`` and the certificate files
(``api.tls``, ``roomactors generate-config``), over real sockets."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509

from api.cli import main as cli_main
from api.server import serve
from api.settings import Settings, load_settings, parse_settings
from api.tls import TlsFilesError, ensure_tls_files, self_signed_pair
from roomactors.federation_client import FederationClient, FederationError, HttpsTransport
from roomactors.testing import open_test_homeserver
from tests.federation.test_federation_client import FakeResolver
from tests.helpers.rooms import signing_key


def fed_settings(tmp_path: Path, **federation: Any) -> Settings:
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
            "database": {"path": "data/roomactors.db"},
            "federation": {"bind": ["127.0.0.1:0"], "plain_bind": ["127.0.0.1:0"], **federation},
        },
        base_dir=tmp_path,
    )


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


async def test_federation_listener_serves_the_app_over_tls(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fed_settings(tmp_path)
    cert_path = settings.federation.tls_certificate_path
    assert not cert_path.exists()
    stop = trio.Event()
    with caplog.at_level(logging.WARNING, logger="api.server"):
        binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
    assert "self-signed" in caplog.text
    client_url, tls_url, plain_url = binds
    assert client_url.startswith("http://") and tls_url.startswith("https://") and plain_url.startswith("http://")
    assert cert_path.exists() and settings.federation.tls_private_key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]  # the server name's host

    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert_path))) as http:
        # The certificate verifies for the server name over the TLS listener.
        response = await http.get(
            f"https://localhost:{port_of(tls_url)}/_matrix/federation/v1/no-such-endpoint"
        )
        assert response.status_code == 404
        assert response.json()["errcode"] == "M_UNRECOGNIZED"
        assert response.http_version == "HTTP/1.1"
        plain = await http.get(f"{plain_url}/_matrix/federation/v1/no-such-endpoint")
        assert plain.status_code == 404 and plain.json()["errcode"] == "M_UNRECOGNIZED"
        versions = await http.get(f"{client_url}/_matrix/client/versions")
        assert versions.status_code == 200

    # ALPN: only http/1.1 is ever agreed (the h2 crash guard, api.hypercorn_guard).
    context = ssl.create_default_context(cafile=str(cert_path))
    context.set_alpn_protocols(["h2", "http/1.1"])
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port_of(tls_url)), context, server_hostname="localhost"
    )
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "http/1.1"
    await stream.aclose()
    stop.set()


async def test_signed_requests_reach_the_listener_through_https_transport(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = fed_settings(tmp_path, plain_bind=[])
    stop = trio.Event()
    binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
    assert len(binds) == 2
    destination = f"localhost:{port_of(binds[1])}"
    transport = HttpsTransport(
        verify_certificates=True,
        ip_range_denylist=settings.federation.ip_range_denylist,
        ip_range_allowlist=["127.0.0.1/32"],
        resolver=FakeResolver({"localhost": ["127.0.0.1"]}),
        ssl_context=ssl.create_default_context(cafile=str(settings.federation.tls_certificate_path)),
    )
    async with transport:
        client = FederationClient(transport, server_name="origin.test", signing_key=signing_key("origin.test"), request_timeout_s=10)
        with pytest.raises(FederationError) as error:
            await client.get_json(destination, "/_matrix/federation/v1/no-such-endpoint")
    assert (error.value.status, error.value.errcode) == (404, "M_UNRECOGNIZED")
    stop.set()


async def test_existing_certificate_is_kept_and_disabled_federation_listens_nowhere(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = fed_settings(tmp_path)
    cert, key = self_signed_pair(["operator.example"])
    settings.federation.tls_certificate_path.parent.mkdir(parents=True)
    settings.federation.tls_certificate_path.write_bytes(cert)
    settings.federation.tls_private_key_path.write_bytes(key)
    stop = trio.Event()
    binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
    assert len(binds) == 3
    assert settings.federation.tls_certificate_path.read_bytes() == cert
    stop.set()

    disabled = fed_settings(tmp_path / "off", enabled=False)
    stop2 = trio.Event()
    assert len(await nursery.start(partial(serve, disabled, shutdown_trigger=stop2.wait))) == 1
    assert not disabled.federation.tls_certificate_path.exists()
    stop2.set()


async def test_half_installed_certificate_refuses_to_start(tmp_path: Path) -> None:
    settings = fed_settings(tmp_path)
    settings.federation.tls_certificate_path.parent.mkdir(parents=True)
    settings.federation.tls_certificate_path.write_bytes(self_signed_pair(["x"])[0])
    with pytest.raises(TlsFilesError, match="install both or neither"):
        await serve(settings, shutdown_trigger=trio.sleep_forever)


async def test_embedded_test_homeserver_has_an_ephemeral_federation_listener() -> None:
    async with open_test_homeserver() as hs:
        assert hs.federation_url.startswith("https://127.0.0.1:")
        assert port_of(hs.federation_url) != 8448
        async with httpx.AsyncClient(verify=False) as http:
            response = await http.get(f"{hs.federation_url}/_matrix/federation/v1/no-such-endpoint")
        assert response.status_code == 404


def test_ensure_tls_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "a" / "f.crt", tmp_path / "a" / "f.key"
    assert ensure_tls_files(cert, key, "[::1]:8448") is True
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    assert ensure_tls_files(cert, key, "[::1]:8448") is False  # both present: kept
    key.unlink()
    with pytest.raises(TlsFilesError):
        ensure_tls_files(cert, key, "[::1]:8448")


def test_generate_config_writes_a_self_signed_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "settings.toml"
    argv = ["generate-config", "--server-name", "hs.example", "--data-dir", str(tmp_path / "data"), "-o", str(config)]
    assert cli_main(argv) == 0
    settings = load_settings(config)
    cert_path = settings.federation.tls_certificate_path
    assert cert_path == tmp_path / "data" / "federation.crt"
    assert settings.federation.tls_private_key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["hs.example"]
    assert "self-signed federation TLS certificate" in capsys.readouterr().out
    before = cert_path.read_bytes()
    assert cli_main([*argv, "--force"]) == 0
    assert cert_path.read_bytes() == before  # never replaced
