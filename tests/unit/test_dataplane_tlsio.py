"""TlsStream: mutual TLS through memory buffers carries frames byte for byte and fails clearly."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from app.cli.ca import init_ca, issue_host
from protocol.errors import FrameError, TransferInterrupted
from protocol.frames import PREAMBLE_SIZE, FrameKind, compress_payload
from workers.dataplane.tlsio import RECORD_SIZE, TlsStream
from workers.dataplane.wire import Wire, _batches
from workers.tls import TlsConfig, client_context, server_context


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca = tmp_path_factory.mktemp("ca")
    init_ca(ca)
    issue_host(ca, "alpha")
    issue_host(ca, "beta")
    return ca


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets to close after the test, whatever it left open."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def _pair(
    sockets: list[socket.socket],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    name: str = "beta",
) -> tuple[TlsStream, TlsStream | BaseException]:
    """Both ends of a TLS connection over a socket pair, or the server's handshake error."""
    left, right = socket.socketpair()
    sockets += [left, right]
    left.settimeout(10)
    right.settimeout(10)
    server: list[TlsStream | BaseException] = []

    def accept() -> None:
        try:
            server.append(TlsStream.server(server_ctx, left))
        except (ssl.SSLError, OSError) as exc:
            server.append(exc)
            left.close()

    thread = threading.Thread(target=accept)
    thread.start()
    client = TlsStream.client(client_ctx, right, server_hostname=name)
    thread.join(10)
    return client, server[0]


def _contexts(ca: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return (
        server_context(TlsConfig.for_host(ca, "beta")),
        client_context(TlsConfig.for_host(ca, "alpha")),
    )


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


def test_frames_cross_mutual_tls_unchanged_and_with_an_aead_cipher(
    fleet: Path, sockets: list[socket.socket]
) -> None:
    client, server = _pair(sockets, *_contexts(fleet))
    assert isinstance(server, TlsStream)
    assert client.version() == "TLSv1.3"
    cipher = client.cipher()
    assert cipher is not None and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])
    assert server.getpeercert()["subject"]  # the client showed its certificate
    payloads = [os.urandom(3 << 20), b"zfleet " * 300_000, b"", os.urandom(17)]
    sender = Wire(client, peer="beta", timeout=10)
    receiver = Wire(server, peer="alpha", timeout=10)

    def receive() -> list[bytes]:
        return [receiver.recv().payload for _ in payloads]

    thread, got = _in_thread(receive)
    sizes = []
    for payload in payloads:
        prepared = compress_payload(payload, 1)
        size = sender.send(FrameKind.DATA, {"n": len(payload)}, prepared)
        header = msgpack.packb({"n": len(payload)})
        sizes.append(size - len(prepared.data) - len(header))
    thread.join(10)
    assert got == [payloads]
    # TLS authenticates every byte: the frames go without their own digest
    assert sender.authenticated and receiver.authenticated
    plain = Wire(socket.socket(), peer="x", timeout=1)
    sockets.append(plain.sock)  # type: ignore[arg-type]
    assert not plain.authenticated
    assert sizes == [PREAMBLE_SIZE] * len(payloads)  # no DIGEST_SIZE bytes behind the payload
    sender.close()  # with the server's session tickets unread: a reset, or a plain close
    with pytest.raises(TransferInterrupted, match=r"closed|reset"):
        receiver.recv()


def test_a_client_from_another_ca_reads_why_it_was_refused(
    fleet: Path, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    init_ca(tmp_path)
    issue_host(tmp_path, "alpha")
    foreign = client_context(TlsConfig.for_host(tmp_path, "alpha"))
    foreign.load_verify_locations(cafile=str(fleet / "ca.crt"))  # it trusts the server
    client, server = _pair(sockets, _contexts(fleet)[0], foreign)
    assert isinstance(server, ssl.SSLError)
    wire = Wire(client, peer="beta", timeout=10)
    with pytest.raises(TransferInterrupted, match="unknown ca"):
        wire.recv()  # the server has hung up already: its alert is what is left to read


def test_a_server_with_the_wrong_name_is_refused(fleet: Path, sockets: list[socket.socket]) -> None:
    server_ctx, client_ctx = _contexts(fleet)
    with pytest.raises(ssl.SSLCertVerificationError):
        _pair(sockets, server_ctx, client_ctx, name="gamma")


def test_a_tampered_record_is_an_error_not_data(fleet: Path, sockets: list[socket.socket]) -> None:
    client, server = _pair(sockets, *_contexts(fleet))
    assert isinstance(server, TlsStream)
    # encrypt a frame by hand and flip one byte of the ciphertext on its way
    client._obj.write(b"\x00" * 1000)
    record = bytearray(client._out.read())
    record[40] ^= 0x01
    client.raw.sendall(bytes(record))
    receiver = Wire(server, peer="alpha", timeout=10)
    with pytest.raises((TransferInterrupted, FrameError)):
        receiver.recv()


def test_batches_keep_every_byte_in_order_and_bound_each_batch() -> None:
    parts = [b"p" * 28, b"h" * 9, bytes(range(256)) * 40, b"d" * 16]
    for step in (1, 7, 100, 4096, 1 << 20):
        batches = _batches(parts, step)
        assert b"".join(bytes(v) for batch in batches for v in batch) == b"".join(parts)
        assert all(sum(len(v) for v in batch) <= step for batch in batches)
        assert all(len(v) for batch in batches for v in batch)  # no empty writes


def test_one_read_takes_every_whole_record_received_and_leaves_a_partial_one(
    fleet: Path, sockets: list[socket.socket]
) -> None:
    client, server = _pair(sockets, *_contexts(fleet))
    assert isinstance(server, TlsStream)
    data = os.urandom(5 * 16384 + 100)  # five full records and a short sixth
    client.sendall(data)
    # all of it on the server's side of the socket before the first read
    raw = bytearray()
    while len(raw) < len(data) + 6 * 22:  # TLS 1.3: 22 bytes of framing and tag a record
        chunk = server.raw.recv(1 << 20)
        assert chunk, "the client's records did not all arrive"
        raw += chunk
    cut = len(raw) - 50  # the last record arrives in two pieces
    server._in.write(bytes(raw[:cut]))
    buf = bytearray(len(data) + 1000)
    with memoryview(buf) as view:
        got = server.recv_into(view)
        assert got == 5 * 16384, "one read, every whole record (and no wait for the partial one)"
        server._in.write(bytes(raw[cut:]))
        with view[got:] as rest:
            got += server.recv_into(rest)
    assert bytes(buf[:got]) == data


def _records(raw: bytes) -> list[int]:
    """The lengths of the TLS records in ``raw`` (5-byte header: type, version, length)."""
    lengths, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos + 3 : pos + 5], "big")
        lengths.append(size)
        pos += 5 + size
    assert pos == len(raw), "the bytes end inside a record"
    return lengths


def test_a_frames_small_parts_ride_in_full_records(
    fleet: Path, sockets: list[socket.socket]
) -> None:
    client, server = _pair(sockets, *_contexts(fleet))
    assert isinstance(server, TlsStream)
    parts = [b"p" * PREAMBLE_SIZE, b"h" * 3, os.urandom(5 * RECORD_SIZE + 10), b"t" * 2]
    client._flush()  # nothing pending from the handshake
    with contextlib.ExitStack() as stack:
        views = [stack.enter_context(memoryview(part)) for part in parts]
        assert client.sendmsg(views) == sum(map(len, parts))
    total = sum(map(len, parts))
    raw = bytearray()
    # TLS 1.3: a record carries its content type and a 16-byte tag beyond the plaintext
    want = -(-total // RECORD_SIZE)
    while len(raw) < total + want * 22:
        chunk = server.raw.recv(1 << 20)
        assert chunk, "the client's records did not all arrive"
        raw += chunk
    assert [size - 17 for size in _records(bytes(raw))] == [RECORD_SIZE] * (want - 1) + [
        total - (want - 1) * RECORD_SIZE
    ]
    server._in.write(bytes(raw))
    buf = bytearray(total)
    with memoryview(buf) as view:
        got = 0
        while got < total:
            with view[got:] as rest:
                got += server.recv_into(rest)
    assert bytes(buf) == b"".join(parts)
