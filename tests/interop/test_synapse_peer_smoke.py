"""Smoke tests of the Synapse federation peer harness (``synapse_peer.py``).

They check the peer itself, before any federation of ours is involved: Synapse
(the pinned release) starts with a TLS federation listener whose certificate is
self-signed for ``localhost``; its key server answers over that listener with a
response signed by the key it publishes (spec, server-server API, "Publishing
Keys"); and two local users can create a v12 room, join it and exchange messages
through /sync. One peer per session (the ``synapse_peer`` fixture of
``conftest.py``): start-up is most of the runtime.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

ROOT = Path(__file__).resolve().parents[2]


def pinned_synapse_version() -> str:
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition(":=")
        if sep and name.strip() == "SYNAPSE_VERSION":
            return value.strip()
    raise AssertionError("the Makefile does not pin SYNAPSE_VERSION")


def test_pinned_version_and_server_name(synapse_peer):
    assert synapse_peer.version.split(" ")[0] == pinned_synapse_version()
    assert synapse_peer.server_name == f"localhost:{synapse_peer.fed_port}"


def test_federation_listener_is_tls_with_self_signed_localhost_cert(synapse_peer):
    pem = ssl.get_server_certificate(("127.0.0.1", synapse_peer.fed_port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject == cert.issuer  # self-signed
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # Trusting that one certificate, a client checking host names accepts "localhost"
    # (SNI and hostname match), which a peer that verifies would need.
    ctx = ssl.create_default_context(cafile=str(synapse_peer.tls_cert_path))
    r = httpx.get(f"{synapse_peer.federation_url}/_matrix/federation/v1/version", verify=ctx, trust_env=False)
    assert r.status_code == 200
    # Without TLS the federation port does not speak HTTP.
    try:
        plain = httpx.get(f"http://127.0.0.1:{synapse_peer.fed_port}/_matrix/federation/v1/version",
                          trust_env=False, timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert plain.status_code >= 400


def test_key_server_response_is_self_signed(synapse_peer):
    r = httpx.get(f"{synapse_peer.federation_url}/_matrix/key/v2/server", verify=False, trust_env=False)
    assert r.status_code == 200
    keys = r.json()
    assert keys["server_name"] == synapse_peer.server_name
    assert keys["valid_until_ts"] > time.time() * 1000
    assert keys["verify_keys"] == {synapse_peer.signing_key_id: {"key": synapse_peer.verify_key_base64}}
    assert list(keys["signatures"]) == [synapse_peer.server_name]
    assert list(keys["signatures"][synapse_peer.server_name]) == [synapse_peer.signing_key_id]
    key_id, entry = next(iter(keys["verify_keys"].items()))
    verify_key = decode_verify_key_bytes(key_id, decode_base64(entry["key"]))
    verify_signed_json(keys, synapse_peer.server_name, verify_key)  # raises if not


def test_two_local_users_talk_in_a_v12_room(synapse_peer):
    peer = synapse_peer
    alice, alice_tok = peer.register_user("smoke_alice")
    bob, bob_tok = peer.register_user("smoke_bob")
    assert alice == f"@smoke_alice:{peer.server_name}"

    room_id = peer.create_room(alice_tok, room_version="12", preset="public_chat", name="smoke")
    create = next(ev for ev in peer.get_state(alice_tok, room_id) if ev["type"] == "m.room.create")
    assert create["content"]["room_version"] == "12"
    assert peer.join(bob_tok, room_id) == room_id

    sent = peer.send_message(alice_tok, room_id, "hello bob")
    got = peer.wait_for_event(bob_tok, room_id, lambda ev: ev.get("event_id") == sent, timeout_s=20)
    assert got["sender"] == alice and got["content"]["body"] == "hello bob"

    # Incremental: from alice's current position, bob's reply arrives by long-poll.
    since = peer.sync(alice_tok)["next_batch"]
    reply = peer.send_message(bob_tok, room_id, "hello alice")
    got = peer.wait_for_event(alice_tok, room_id, lambda ev: ev.get("event_id") == reply,
                              timeout_s=20, since=since)
    assert got["sender"] == bob

    peer.send_state(alice_tok, room_id, "m.room.topic", "", {"topic": "smoke topic"})
    assert peer.get_state_event(bob_tok, room_id, "m.room.topic") == {"topic": "smoke topic"}


async def test_trio_tests_call_helpers_through_worker_threads(synapse_peer):
    # In a trio test whose loop also runs our server, helpers must not block the loop.
    user, tok = await synapse_peer.trio.register_user("smoke_trio")
    room_id = await synapse_peer.trio.create_room(tok, room_version="12")
    state = await synapse_peer.trio.get_state(tok, room_id)
    assert any(ev["type"] == "m.room.member" and ev["state_key"] == user for ev in state)

# --------------------------------------------------------------------------------------
# The harness end to end: a second Synapse federating with the first, so a failure in the
# roomactors <-> Synapse tests can be told apart from a broken peer set-up. It walks
# the same steps those tests need (join over federation, messages both ways, state
# changes, a ban, /state equality) for room versions 12 and 10.
# --------------------------------------------------------------------------------------

import pytest  # noqa: E402

from synapse_peer import SynapseHTTPError, SynapsePeer  # noqa: E402


@pytest.fixture(scope="module")
def second_synapse(synapse_peer, tmp_path_factory):
    with SynapsePeer(tmp_path_factory.mktemp("synapse-peer-2"), python=synapse_peer.python) as peer:
        yield peer


def _state_key_map(state):
    return {(ev["type"], ev["state_key"]): (ev["event_id"], ev["content"]) for ev in state}


@pytest.mark.parametrize("room_version", ["12", "10"])
def test_two_synapses_federate_over_tls_on_loopback(synapse_peer, second_synapse, room_version):
    a, b = synapse_peer, second_synapse
    alice, alice_tok = a.register_user(f"fed_alice_v{room_version}")
    bob, bob_tok = b.register_user(f"fed_bob_v{room_version}")

    room_id = a.create_room(alice_tok, room_version=room_version, preset="public_chat")
    assert b.join(bob_tok, room_id, server_name=[a.server_name]) == room_id
    a.wait_for_event(alice_tok, room_id, lambda ev: ev["type"] == "m.room.member"
                     and ev["state_key"] == bob and ev["content"].get("membership") == "join")

    sent = a.send_message(alice_tok, room_id, "to b")
    b.wait_for_event(bob_tok, room_id, lambda ev: ev.get("event_id") == sent)
    sent = b.send_message(bob_tok, room_id, "to a")
    a.wait_for_event(alice_tok, room_id, lambda ev: ev.get("event_id") == sent)

    topic = a.send_state(alice_tok, room_id, "m.room.topic", "", {"topic": "federated"})
    b.wait_for_event(bob_tok, room_id, lambda ev: ev.get("event_id") == topic)
    assert b.get_state_event(bob_tok, room_id, "m.room.topic") == {"topic": "federated"}

    a.ban(alice_tok, room_id, bob, reason="smoke")
    b.wait_for_event(bob_tok, room_id, lambda ev: ev["type"] == "m.room.member"
                     and ev["state_key"] == bob and ev["content"].get("membership") == "ban")
    with pytest.raises(SynapseHTTPError) as err:
        b.send_message(bob_tok, room_id, "after the ban")
    assert err.value.status == 403

    # Bob can no longer read the room's state: compare through a user still in it.
    carol, carol_tok = b.register_user(f"fed_carol_v{room_version}")
    b.join(carol_tok, room_id, server_name=[a.server_name])
    a.wait_for_event(alice_tok, room_id, lambda ev: ev["type"] == "m.room.member"
                     and ev["state_key"] == carol and ev["content"].get("membership") == "join")
    assert _state_key_map(a.get_state(alice_tok, room_id)) == _state_key_map(b.get_state(carol_tok, room_id))
