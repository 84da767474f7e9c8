"""bench/hostile.py kept small in ordinary CI: a few hundred seeded cases per input family.

Each family drives the real entry point (a live StreamServer on loopback over a sim backend, the
record reader and the simulation's receive on real OpenZFS streams, the token decoder and
`zfs send -t`, `zfleet graph|sync|coordinator -c FILE`, the step message decoders). Any
traceback, crashed server or partial apply fails, and every bad grant must be refused. Then
the regressions the harness found: trickling connections and the slots of the stream server.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.ca import init_ca, issue_host
from bench import hostile
from coordinator.api.auth import TokenAuth
from coordinator.api.routes import Router, json_response
from coordinator.api.server import ApiHandle, start_server
from protocol import messages
from protocol.frames import Frame, FrameKind, encode_frame
from protocol.zfs import ReceiveSpec, SendSpec
from workers.dataplane.server import StreamServer
from workers.tls import TlsConfig

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hostile.SimPair]:
    with hostile.sim_pair(tmp_path_factory.mktemp("pair")) as p:
        yield p


def _clean(tally: hostile.Tally) -> None:
    assert (tally.tracebacks, tally.crashes, tally.partial) == (0, 0, 0), tally.examples
    assert tally.clear == tally.cases


def test_fuzzed_frames_never_crash_the_stream_server_or_half_apply(pair: hostile.SimPair) -> None:
    _clean(hostile.family_frames(pair, 200, hostile.SEED))


def test_every_bad_grant_is_refused_and_changes_nothing(pair: hostile.SimPair) -> None:
    tally = hostile.family_grants(pair, 80, hostile.SEED + 1)
    _clean(tally)
    assert set(tally.refused) == set(hostile.GRANT_CATEGORIES)
    for category, (refused, total) in tally.refused.items():
        assert refused == total == 20, category


def test_mutated_openzfs_streams_are_refused_clearly(tmp_path: Path) -> None:
    _clean(hostile.family_streams(300, hostile.SEED + 2, tmp_path))


def test_mutated_resume_tokens_are_refused_clearly(tmp_path: Path) -> None:
    _clean(hostile.family_tokens(300, hostile.SEED + 3, tmp_path))


def test_mutated_fleet_configs_through_the_cli(tmp_path: Path) -> None:
    _clean(hostile.family_configs(150, hostile.SEED + 4, tmp_path))


def test_mutated_step_messages_decode_or_are_refused(tmp_path: Path) -> None:
    _clean(hostile.family_messages(1000, hostile.SEED + 5))


# -- regressions --------------------------------------------------------------------------------
def _hello_prefix() -> bytes:
    return encode_frame(Frame(FrameKind.HELLO, 0, {"version": 2, "grant": "x" * 200}))[:20]


def test_a_trickled_hello_is_cut_at_the_handshake_deadline(pair: hostile.SimPair) -> None:
    # a byte every 0.3 s stays inside any per-recv timeout, but not inside the HELLO's deadline
    server = StreamServer(pair.beta, host="beta", bind=("127.0.0.1", 0), secret=hostile.SECRET,
                          stall_timeout=3.0, heartbeat_interval=0.5,
                          handshake_timeout=1.0)  # fmt: skip
    with server, socket.create_connection(server.address, timeout=5) as sock:
        start = time.monotonic()
        cut = False
        for byte in _hello_prefix():  # 20 bytes: 6 s at this pace
            ready, _, _ = select.select([sock], [], [], 0.3)
            if ready:  # the server's ERROR, or its hang-up
                cut = True
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut = True
                break
        took = time.monotonic() - start
    assert cut, "the trickling connection was never cut"
    assert took < 3.0


def test_ungranted_connections_filling_every_slot_do_not_keep_a_transfer_out(
    pair: hostile.SimPair,
) -> None:
    server = StreamServer(pair.beta, host="beta", bind=("127.0.0.1", 0), secret=hostile.SECRET,
                          stall_timeout=3.0, heartbeat_interval=0.5, max_connections=8,
                          handshake_timeout=30.0)  # fmt: skip
    with server:
        held = [socket.create_connection(server.address, timeout=5) for _ in range(8)]
        try:
            for sock in held:
                sock.send(_hello_prefix()[:5])  # started, never finished
            time.sleep(0.3)
            target = "tank/slots"
            frames = hostile.conversation(pair.grant(target), target, pair.full)
            reply = hostile.talk(server.address, b"".join(encode_frame(f) for f in frames),
                                 wait_accept=True)  # fmt: skip
            assert reply.result, reply
            assert pair.beta.exists(f"{target}@s1")
        finally:
            for sock in held:
                sock.close()
            pair.reset()


def _api(**limits: float) -> ApiHandle:
    router = Router()
    router.add("GET", "/healthz", lambda req: json_response({"ok": True}), public=True)
    return start_server(("127.0.0.1", 0), router, TokenAuth("t" * 32), **limits)  # type: ignore[arg-type]


def test_a_trickled_http_request_is_cut_at_its_deadline() -> None:
    api = _api(request_timeout=5.0, request_deadline=1.0)
    try:
        with socket.create_connection(api.address, timeout=5) as sock:
            start = time.monotonic()
            cut = False
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                ready, _, _ = select.select([sock], [], [], 0.3)
                if ready:
                    cut = True
                    break
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    cut = True
                    break
            took = time.monotonic() - start
        assert cut, "the trickling request was never cut"
        assert took < 3.5
    finally:
        api.stop()


def test_connections_over_the_limit_cut_the_oldest_waiting_one() -> None:
    api = _api(max_connections=4, request_deadline=60.0)
    held = [socket.create_connection(api.address, timeout=5) for _ in range(12)]
    try:
        for sock in held:
            sock.send(b"GET /heal")  # started, never finished
        with socket.create_connection(api.address, timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer
        # the first ones made room: the server hung up on them (no more than the limit stay)
        cut = 0
        for sock in held:
            sock.settimeout(0.5)
            try:
                cut += sock.recv(4096) == b""
            except OSError:
                cut += 1
        assert cut >= len(held) - 4 + 1
    finally:
        for sock in held:
            sock.close()
        api.stop()


def _trickle_until_cut(address: tuple[str, int], data: bytes, pace: float) -> tuple[bool, float]:
    """Send ``data`` a byte every ``pace`` seconds until the server answers or hangs up."""
    with socket.create_connection(address, timeout=5) as sock:
        start = time.monotonic()
        for byte in data:
            ready, _, _ = select.select([sock], [], [], pace)
            if ready:
                return True, time.monotonic() - start
            try:
                sock.send(bytes([byte]))
            except OSError:
                return True, time.monotonic() - start
        return False, time.monotonic() - start


def test_a_trickled_tls_handshake_is_cut_at_the_handshake_deadline(
    pair: hostile.SimPair, tmp_path: Path
) -> None:
    init_ca(tmp_path)
    issue_host(tmp_path, "beta")
    server = StreamServer(pair.beta, host="beta", bind=("127.0.0.1", 0), secret=hostile.SECRET,
                          stall_timeout=3.0, heartbeat_interval=0.5, handshake_timeout=1.0,
                          tls=TlsConfig.for_host(tmp_path, "beta"))  # fmt: skip
    # the start of a TLS record holding a ClientHello, never finished
    hello = bytes.fromhex("160301020001") + b"\x00" * 40
    with server:
        cut, took = _trickle_until_cut(server.address, hello, 0.3)
    assert cut, "the trickling TLS handshake was never cut"
    assert took < 3.0


@pytest.mark.parametrize("props", ["mountpoint", {"canmount": "on"}, {"exec": "on"}])
def test_a_granted_hello_cannot_set_receive_properties_the_grant_does_not_allow(
    pair: hostile.SimPair, props: dict[str, str] | str, tmp_path: Path
) -> None:
    # the grant signs the dataset and -F, not receive options: a sender holding a genuine grant
    # must not get this host to mount the replica over, say, /etc (OpenZFS would). Never aim
    # this at a real directory: the simulation empties a non-empty mountpoint it is given.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    if props == "mountpoint":
        props = {"mountpoint": str(victim)}
    assert isinstance(props, dict)
    target = "tank/props"
    frames = hostile.conversation(pair.grant(target), target, pair.full)
    spec = ReceiveSpec(target, set_props=props)
    frames[0] = Frame(FrameKind.HELLO, 0, {**frames[0].header, "receive": messages.to_dict(spec)})
    before = hostile.sim_state(pair.beta)
    reply = hostile.talk(pair.address(), b"".join(encode_frame(f) for f in frames),
                         wait_accept=True)  # fmt: skip
    assert not reply.result and reply.errors == ["GrantError"], reply
    assert hostile.sim_state(pair.beta) == before
    assert [p.name for p in victim.iterdir()] == ["keep"]


def test_a_replica_that_does_not_mount_is_still_received(pair: hostile.SimPair) -> None:
    target = "tank/nomount"
    frames = hostile.conversation(pair.grant(target), target, pair.full)
    spec = ReceiveSpec(target, set_props={"canmount": "noauto"})
    frames[0] = Frame(FrameKind.HELLO, 0, {**frames[0].header, "receive": messages.to_dict(spec)})
    reply = hostile.talk(pair.address(), b"".join(encode_frame(f) for f in frames),
                         wait_accept=True)  # fmt: skip
    try:
        assert reply.result, reply
    finally:
        pair.reset()


def _package(pair: hostile.SimPair, spec: SendSpec) -> bytes:
    stream = pair.alpha.send(spec)
    try:
        return b"".join(iter(lambda: stream.read(1 << 20), b""))
    finally:
        stream.close()


@pytest.mark.parametrize("how", ["props", "snapprops", "children"])
def test_a_granted_stream_cannot_bring_properties_or_datasets_the_grant_does_not_name(
    pair: hostile.SimPair, how: str, tmp_path: Path
) -> None:
    # a sender with a genuine grant crafts a `zfs send -p` package whose properties would have
    # this host mount the replica over a directory of its own (OpenZFS would, at the latest on
    # failover), or a -R package that creates children nobody granted
    victim = tmp_path / "victim"
    victim.mkdir()
    source = f"tank/pkg-{how}"
    # the source never mounts there (canmount=off): the directory stays this host's own
    props = {"canmount": "off", "mountpoint": str(victim)} if how == "props" else {}
    pair.alpha.create(source, props=props)
    (victim / "keep").write_text("mine")
    if how == "children":
        pair.alpha.create(f"{source}/child")
    pair.alpha.snapshot([f"{source}@p1"], recursive=how == "children")
    if how == "snapprops":
        pair.alpha.set(f"{source}@p1", {"zfleet:note": "hello"})
    guid = int(pair.alpha.get(f"{source}@p1", ["guid"])["guid"].value)
    stream = _package(pair, SendSpec(f"{source}@p1", props=True, replicate=how == "children"))
    target = "tank/pkg"
    frames = hostile.conversation(pair.grant(target, toguid=guid), target, stream)
    before = hostile.sim_state(pair.beta)
    reply = hostile.talk(pair.address(), b"".join(encode_frame(f) for f in frames),
                         wait_accept=True)  # fmt: skip
    assert not reply.result and reply.errors == ["GrantError"], reply
    assert hostile.sim_state(pair.beta) == before
    assert [p.name for p in victim.iterdir()] == ["keep"]


def test_a_props_package_without_properties_is_still_received(pair: hostile.SimPair) -> None:
    source = "tank/pkg-plain"
    pair.alpha.create(source)
    pair.alpha.snapshot([f"{source}@p1"])
    guid = int(pair.alpha.get(f"{source}@p1", ["guid"])["guid"].value)
    stream = _package(pair, SendSpec(f"{source}@p1", props=True))
    target = "tank/pkgplain"
    frames = hostile.conversation(pair.grant(target, toguid=guid), target, stream)
    reply = hostile.talk(pair.address(), b"".join(encode_frame(f) for f in frames),
                         wait_accept=True)  # fmt: skip
    try:
        assert reply.result, reply
    finally:
        pair.reset()
