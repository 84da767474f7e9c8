"""Hostile input figures (issue 18, outcome 3): seeded, bounded fuzzing of every edge.

Each input family is driven through the real entry point that meets it in production, and every
case is judged the same way:

- ``clear``: refused with an error of the project's tree (a ZfleetError, an exit code with a
  ``zfleet:`` line, a JSON 4xx, an ERROR frame), or accepted because the mutation was harmless;
- ``traceback``: a Python traceback (or another exception type) reached the user or a log;
- ``crash``: a server stopped answering, or a process died;
- ``partial``: a refused or broken input left a target changed (datasets, snapshots, guids,
  files, Redis records).

Families (this module: in-process ones; bench/hostile_servers.py: real processes):

- ``frames``: mutated data-plane conversations, fed to ``FrameDecoder`` and sent to a live
  ``StreamServer`` (before and after a valid grant);
- ``grants``: unauthorised, expired, replayed and mismatched grants sent to the live server with a
  real stream; the refusal rate per category must be 100 %;
- ``streams``: mutated real OpenZFS streams (tests/fixtures/zfs-streams) through the record
  reader and the simulation's ``zfs receive``;
- ``tokens``: mutated resume tokens through the token decoder, the real backend's ``send -t``
  arguments and the simulation's ``zfs send -t``;
- ``configs``: mutated fleet configs through ``zfleet graph|sync|coordinator -c FILE`` (click's
  runner, in-process); ``configs-cli``: the same through the installed ``zfleet`` executable;
- ``messages``: mutated msgpack step calls, events and step arguments (protocol/steps).

    .venv/bin/python bench/hostile.py                  # defaults: 2,000 cases per family
                                                       # (configs-cli: --cli-cases, 100)
    .venv/bin/python bench/hostile.py --cases 300      # quicker
    .venv/bin/python bench/hostile.py --servers        # adds the coordinator HTTP API, the
                                                       # webhook and the 200-connection floods

Exit status 1 when any traceback, crash, partial apply or accepted bad grant was counted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from protocol import messages
from protocol.errors import ConfigError, ZfleetError
from protocol.frames import Frame, FrameDecoder, FrameKind, encode_frame
from protocol.grants import new_grant, read_claims, sign_grant
from protocol.log import configure_logging
from protocol.messages import StepCall, StepEvent, StepState
from protocol.steps import (
    HoldArgs,
    SnapshotArgs,
    TransferArgs,
    TransferTarget,
    args_from_bytes,
    args_to_bytes,
)
from protocol.stream import decode_resume_token, read_records
from protocol.zfs import SendSpec
from workers.dataplane.server import StreamServer
from workers.dataplane.wire import PROTOCOL_VERSION
from workers.zfs.base import ObjType, ReceiveSpec
from workers.zfs.front import Front
from workers.zfs.real import send_args
from workers.zfs.sim import SimBackend

ROOT: Final = Path(__file__).resolve().parent.parent
FIXTURES: Final = ROOT / "tests" / "fixtures" / "zfs-streams"
SEED: Final = 20261204
SECRET: Final = b"hostile-bench-fleet-secret-0123456789"
FAMILIES: Final = ("frames", "grants", "streams", "tokens", "configs", "configs-cli", "messages")
GRANT_CATEGORIES: Final = ("unauthorised", "expired", "replayed", "mismatched")


@dataclass
class Tally:
    """What one family's cases came to."""

    family: str
    cases: int = 0
    clear: int = 0
    tracebacks: int = 0
    crashes: int = 0
    partial: int = 0
    examples: list[str] = field(default_factory=list)
    refused: dict[str, list[int]] = field(default_factory=dict)  # category -> [refused, total]
    outcomes: dict[str, int] = field(default_factory=dict)  # how the clear cases ended

    def ok(self, outcome: str) -> None:
        self.clear += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def bad(self, kind: str, case: int, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 8:
            self.examples.append(f"case {case} {kind}: {what[:300]}")

    def grant(self, category: str, refused: bool) -> None:
        row = self.refused.setdefault(category, [0, 0])
        row[0] += int(refused)
        row[1] += 1

    @property
    def failed(self) -> bool:
        wrong_grants = any(r != t for r, t in self.refused.values())
        return bool(self.tracebacks or self.crashes or self.partial or wrong_grants)


# -- mutation helpers ---------------------------------------------------------------------------
def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One of: flipped bits, a cut, a splice of garbage, a repeated or dropped slice."""
    raw = bytearray(data)
    how = rng.randrange(6)
    if how == 0 and raw:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(raw))
            raw[i] ^= 1 << rng.randrange(8)
    elif how == 1:
        del raw[rng.randrange(len(raw) + 1) :]
    elif how == 2:
        i = rng.randrange(len(raw) + 1)
        raw[i:i] = rng.randbytes(rng.randint(1, 64))
    elif how == 3 and raw:
        i = rng.randrange(len(raw))
        j = min(len(raw), i + rng.randint(1, 512))
        raw[j:j] = raw[i:j]
    elif how == 4 and raw:
        i = rng.randrange(len(raw))
        del raw[i : i + rng.randint(1, 512)]
    else:  # a field-sized overwrite with an extreme value
        if len(raw) >= 8:
            i = rng.randrange(len(raw) - 7)
            raw[i : i + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, b"\x7f" + b"\xff" * 7])
    return bytes(raw)


ODD: Final[tuple[Any, ...]] = (
    None, True, 0, -1, 2**63, 2**64, -(2**63) - 1, 1.5, float("nan"), "", "x" * 70000, b"\x00",
    [], {}, [1, [2, [3]]], {"a": {"b": {}}}, "tank/a", "../../etc", "\udcff", "é",
)  # fmt: skip


def odd_value(rng: random.Random) -> Any:
    value = rng.choice(ODD)
    if isinstance(value, str) and value == "\udcff":
        return "tank/\x00"
    return value


def mutate_tree(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """A decoded msgpack value with one field replaced, dropped or added somewhere inside."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(list(value))
        out = dict(value)
        pick = rng.random()
        if pick < 0.5:
            out[key] = mutate_tree(rng, value[key], depth + 1)
        elif pick < 0.7:
            del out[key]
        elif pick < 0.85:
            out[rng.choice(["extra", "", "kind", "v", key + "x"])] = odd_value(rng)
        else:
            out[key] = odd_value(rng)
        return out
    if isinstance(value, list | tuple) and value and depth < 6:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        if rng.random() < 0.7:
            out_list[i] = mutate_tree(rng, out_list[i], depth + 1)
        else:
            del out_list[i]
        return out_list
    return odd_value(rng)


# -- the simulated fleet the live families use ----------------------------------------------------
def sim_state(backend: SimBackend, root: str = "tank") -> str:
    """A digest of what a user sees under ``root``: names, guids, files (resume tokens apart)."""
    h = hashlib.sha256()
    for row in backend.list(root, recursive=True, types=tuple(ObjType)):
        guid = backend.get(row.name, ["guid"])["guid"].value
        h.update(f"{row.name} {row.type} {guid}\n".encode())
        if row.type == ObjType.FILESYSTEM:
            mount = backend.mountpoint(row.name)
            if mount:
                for p in sorted(Path(mount).rglob("*")):
                    if p.is_file():
                        h.update(str(p.relative_to(mount)).encode() + p.read_bytes())
    return h.hexdigest()


def resume_state(backend: SimBackend, dataset: str) -> bool:
    """True when ``dataset`` holds a partial receive (kept by design for a resume)."""
    if not backend.exists(dataset):
        return False
    rows = backend.list(dataset, recursive=False, types=(ObjType.FILESYSTEM, ObjType.VOLUME))
    return any(r.receive_resume_token not in (None, "", "-") for r in rows)


@dataclass
class SimPair:
    """alpha (the source, tank/src@s1 and @s2) and beta (a live stream server's backend)."""

    alpha: SimBackend
    beta: SimBackend
    server: StreamServer
    full: bytes  # tank/src@s1, full
    incr: bytes  # tank/src@s1 -> @s2
    guid1: int
    guid2: int

    def address(self) -> tuple[str, int]:
        return self.server.address

    def grant(self, dataset: str, *, fromguid: int = 0, toguid: int | None = None,
              host: str = "beta", ttl: float = 120, secret: bytes = SECRET,
              force: bool = False) -> str:  # fmt: skip
        claims = new_grant(transfer_id=uuid.uuid4().hex, host=host, dataset=dataset,
                           fromguid=fromguid, toguid=self.guid1 if toguid is None else toguid,
                           ttl=ttl, force=force)  # fmt: skip
        return sign_grant(secret, claims)

    def reset(self) -> None:
        """Back to beta with tank/base@s1 only (received from alpha) and nothing else."""
        for row in self.beta.list("tank", recursive=True, types=(ObjType.FILESYSTEM,)):
            if row.name.count("/") == 1 and row.name != "tank/base":
                self.beta.destroy(row.name, recursive=True)
        for name in ("tank/base",):
            if resume_state(self.beta, name):
                self.beta.abort_receive(name)


@contextlib.contextmanager
def sim_pair(root: Path) -> Iterator[SimPair]:
    alpha = SimBackend(root / "alpha")
    alpha.create_pool("tank")
    alpha.create("tank/src")
    mount = Path(alpha.mountpoint("tank/src") or "")
    rng = random.Random(SEED)
    for i in range(3):
        (mount / f"f{i}.bin").write_bytes(rng.randbytes(20_000 * (i + 1)))
    alpha.snapshot(["tank/src@s1"])
    (mount / "f3.bin").write_bytes(rng.randbytes(30_000))
    alpha.snapshot(["tank/src@s2"])
    full = _read_all(alpha, SendSpec("tank/src@s1"))
    incr = _read_all(alpha, SendSpec("tank/src@s2", from_snap="tank/src@s1"))
    guid1 = int(alpha.get("tank/src@s1", ["guid"])["guid"].value)
    guid2 = int(alpha.get("tank/src@s2", ["guid"])["guid"].value)
    beta = SimBackend(root / "beta")
    beta.create_pool("tank")
    sink = beta.receive(ReceiveSpec("tank/base"))
    sink.write(full)
    sink.finish()
    server = StreamServer(beta, host="beta", bind=("127.0.0.1", 0), secret=SECRET,
                          stall_timeout=3.0, heartbeat_interval=0.5)  # fmt: skip
    with server:
        yield SimPair(alpha, beta, server, full, incr, guid1, guid2)


def _read_all(backend: SimBackend, spec: SendSpec) -> bytes:
    stream = backend.send(spec)
    try:
        return stream.read()
    finally:
        stream.close()


def conversation(grant: str, target: str, stream: bytes, *, chunk: int = 16384,
                 version: Any = PROTOCOL_VERSION) -> list[Frame]:  # fmt: skip
    """The frames a sender sends: HELLO, DATA..., END."""
    frames = [Frame(FrameKind.HELLO, 0, {"version": version, "grant": grant, "target": target,
                                         "receive": messages.to_dict(ReceiveSpec(target))})]
    for i in range(0, len(stream), chunk):
        frames.append(Frame(FrameKind.DATA, len(frames), {}, stream[i : i + chunk]))
    frames.append(Frame(FrameKind.END, len(frames),
                        {"stream_bytes": len(stream), "frames": len(frames) - 1}))  # fmt: skip
    return frames


@dataclass
class Reply:
    """What the server answered a raw conversation with."""

    kinds: list[str]
    errors: list[str]
    closed: bool  # it ended the connection (rather than our deadline)

    @property
    def result(self) -> bool:
        return "RESULT" in self.kinds


def talk(address: tuple[str, int], data: bytes, *, wait_accept: bool = False,
         timeout: float = 15.0) -> Reply:  # fmt: skip
    """Send ``data`` (after the first frame, once ACCEPT arrives when ``wait_accept``), half-close,
    read every frame until the server hangs up."""
    decoder = FrameDecoder()
    frames: list[Frame] = []
    with socket.create_connection(address, timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        try:
            if wait_accept:
                sock.sendall(data[: _first_frame_len(data)])
                while not any(f.kind in (FrameKind.ACCEPT, FrameKind.ERROR) for f in frames):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    frames += decoder.feed(chunk)
                if any(f.kind == FrameKind.ACCEPT for f in frames):
                    sock.sendall(data[_first_frame_len(data) :])
            else:
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may hang up on us mid-send: its ERROR is still readable
        closed = False
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            frames += decoder.feed(chunk)
    return Reply([f.kind.name for f in frames],
                 [str(f.header.get("error")) for f in frames if f.kind == FrameKind.ERROR],
                 closed)  # fmt: skip


def _first_frame_len(data: bytes) -> int:
    from protocol.frames import PREAMBLE, PREAMBLE_SIZE

    if len(data) < PREAMBLE_SIZE:
        return len(data)
    _, _, _, flags, _, _, hlen, wlen, _ = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    return PREAMBLE_SIZE + hlen + wlen + (0 if flags & 0x02 else 16)


def server_alive(pair: SimPair) -> bool:
    """A legitimate full transfer into a fresh dataset still goes through, and lands whole."""
    target = f"tank/alive{uuid.uuid4().hex[:8]}"
    frames = conversation(pair.grant(target), target, pair.full)
    reply = talk(pair.address(), b"".join(encode_frame(f) for f in frames), wait_accept=True)
    ok = reply.result and pair.beta.exists(f"{target}@s1")
    if pair.beta.exists(target):
        pair.beta.destroy(target, recursive=True)
    return ok


# -- frames ---------------------------------------------------------------------------------------
def family_frames(pair: SimPair, cases: int, seed: int) -> Tally:
    """Mutated conversations: the decoder alone, then the live server (half before the grant is
    checked: nothing may change; half after: a partial receive kept for a resume is fine, a
    visible half-applied dataset is not)."""
    tally = Tally("frames")
    rng = random.Random(seed)
    for n in range(cases):
        tally.cases += 1
        target = "tank/fz"
        grant = pair.grant(target)
        frames = conversation(grant, target, pair.full)
        raw = [encode_frame(f) for f in frames]
        after_grant = rng.random() < 0.5
        if after_grant:
            i = rng.randrange(1, len(raw))
            raw[i] = mutate_bytes(rng, raw[i])
        elif rng.random() < 0.5:
            raw[0] = mutate_bytes(rng, raw[0])
        else:  # a HELLO whose header is odd but correctly digested
            header = mutate_tree(rng, dict(frames[0].header))
            try:
                raw[0] = encode_frame(Frame(FrameKind.HELLO, 0, header))
            except Exception:
                raw[0] = rng.randbytes(rng.randint(1, 200))
        data = b"".join(raw)
        try:  # the decoder alone: frames or a FrameError, nothing else
            FrameDecoder().feed(data)
        except ZfleetError:
            pass
        except Exception as exc:
            tally.bad("tracebacks", n, f"decoder {type(exc).__name__}: {exc}")
            continue
        before = sim_state(pair.beta)
        try:
            reply = talk(pair.address(), data, wait_accept=after_grant)
        except OSError as exc:
            tally.bad("crashes", n, f"server unreachable: {exc}")
            break
        after = sim_state(pair.beta)
        changed = before != after
        if reply.result:
            whole = pair.beta.exists(f"{target}@s1") and _files_equal(pair, target)
            if not whole:
                tally.bad("partial", n, "RESULT for a dataset that is not the source's copy")
            else:
                tally.ok("applied")
        elif pair.beta.exists(f"{target}@s1") and _files_equal(pair, target):
            tally.ok("applied, END damaged")  # every stream byte arrived, verified
        elif changed and not (after_grant and only_resume_state(pair.beta, target)):
            tally.bad("partial", n, f"refused ({reply.errors}) but beta changed")
        elif not reply.closed:
            tally.bad("crashes", n, "server neither answered nor hung up")
        else:
            tally.ok("refused")
        pair.reset()
        if n % 200 == 199 and not server_alive(pair):
            tally.bad("crashes", n, "a legitimate transfer failed after these cases")
    if not server_alive(pair):
        tally.bad("crashes", cases, "a legitimate transfer failed at the end")
    return tally


def _files_equal(pair: SimPair, target: str) -> bool:
    def files(backend: SimBackend, name: str) -> dict[str, bytes]:
        root = Path(backend.mountpoint(name) or "")
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip

    return files(pair.beta, target) == files(pair.beta, "tank/base")  # tank/src@s1's files


def only_resume_state(backend: SimBackend, target: str) -> bool:
    """The only change is ``target`` holding a partial receive, with no snapshot of its own."""
    if not resume_state(backend, target):
        return False
    snaps = backend.list(target, recursive=True, types=(ObjType.SNAPSHOT,))
    return not snaps


# -- grants ---------------------------------------------------------------------------------------
def family_grants(pair: SimPair, cases: int, seed: int) -> Tally:
    """Bad grants with a real stream behind them: every one refused, beta unchanged."""
    tally = Tally("grants")
    rng = random.Random(seed)
    for n in range(cases):
        tally.cases += 1
        category = GRANT_CATEGORIES[n % len(GRANT_CATEGORIES)]
        target, stream, header_target = "tank/gz", pair.full, None
        if category == "unauthorised":
            token = _unauthorised(rng, pair, target)
        elif category == "expired":
            token = pair.grant(target, ttl=0.05)
            time.sleep(0.1)
        elif category == "replayed":
            token = pair.grant(target)
            first = talk(pair.address(), _encoded(token, target, stream), wait_accept=True)
            if not first.result:
                tally.bad("crashes", n, f"the legitimate first use failed: {first.errors}")
                pair.reset()
                continue
            pair.beta.destroy(target, recursive=True)
        else:
            token, target, stream, header_target = _mismatched(rng, pair)
        before = sim_state(pair.beta)
        try:
            reply = talk(pair.address(), _encoded(token, header_target or target, stream, rng),
                         wait_accept=True)  # fmt: skip
        except OSError as exc:
            tally.bad("crashes", n, f"server unreachable: {exc}")
            break
        refused = not reply.result
        tally.grant(category, refused)
        if not refused:
            tally.bad("partial", n, f"{category} grant accepted")
        elif sim_state(pair.beta) != before:
            tally.bad("partial", n, f"{category} grant refused but beta changed")
        else:
            tally.ok(f"{category} refused: " + (",".join(reply.errors) or "hung up"))
        pair.reset()
    if not server_alive(pair):
        tally.bad("crashes", cases, "a legitimate transfer failed at the end")
    return tally


PROPS: Final = "<props>"
# never a real directory as mountpoint: the simulation empties a non-empty one it is given
_BAD_PROPS: Final = ({"mountpoint": "<victim>"}, {"readonly": "off"}, {"canmount": "on"},
                     {"exec": "on", "setuid": "on"}, {"sharenfs": "on"})


def _encoded(token: str, target: str, stream: bytes, rng: random.Random | None = None) -> bytes:
    if len(token) > 20_000:  # past what a HELLO header holds: a long one stands for it
        token = token[:20_000]
    if target == PROPS:
        granted = read_claims(token).dataset
        frames = conversation(token, granted, stream)
        props = dict((rng or random.Random(0)).choice(_BAD_PROPS))
        if props.get("mountpoint") == "<victim>":
            victim = Path(tempfile.mkdtemp(prefix="zfleet-hostile-victim-"))
            (victim / "keep").write_text("mine")
            props["mountpoint"] = str(victim)
        spec = ReceiveSpec(granted, set_props=props)
        frames[0] = Frame(FrameKind.HELLO, 0, {**frames[0].header,
                                                "receive": messages.to_dict(spec)})  # fmt: skip
        return b"".join(encode_frame(f) for f in frames)
    return b"".join(encode_frame(f) for f in conversation(token, target, stream))


def _unauthorised(rng: random.Random, pair: SimPair, target: str) -> str:
    good = pair.grant(target)
    body, _, mac = good.partition(".")
    how = rng.randrange(6)
    if how == 0:
        return pair.grant(target, secret=rng.randbytes(32))
    if how == 1:  # claims changed, MAC kept
        claims = json.loads(_unb64(body))
        claims[rng.choice(list(claims))] = odd_value(rng)
        return _b64(json.dumps(claims, default=repr).encode()) + "." + mac
    if how == 2:
        return body + "." + _b64(rng.randbytes(32))
    if how == 3:
        return body
    if how == 4:
        return mutate_bytes(rng, good.encode()).decode("latin-1")
    return rng.choice(["", ".", "..", "a.b", "x" * 5000, "\x00." * 10, good + good])


def _mismatched(rng: random.Random, pair: SimPair) -> tuple[str, str, bytes, str | None]:
    """A genuine grant used for something else: (token, granted dataset, stream, HELLO target);
    a HELLO target of ``PROPS`` asks for receive properties the grant does not allow."""
    how = rng.randrange(6)
    if how == 5:
        return pair.grant("tank/gz"), "tank/gz", pair.full, PROPS
    if how == 0:  # another host's grant
        return pair.grant("tank/gz", host=rng.choice(["alpha", "gamma", "Beta", ""])), \
            "tank/gz", pair.full, None
    if how == 1:  # HELLO names another dataset than the grant
        return pair.grant("tank/gz"), "tank/gz", pair.full, rng.choice(
            ["tank/base", "tank/other", "tank", "tank/gz/x"])
    if how == 2:  # a grant for another snapshot than the stream carries
        return pair.grant("tank/gz", toguid=pair.guid2), "tank/gz", pair.full, None
    if how == 3:  # an incremental stream under a full grant onto the existing base
        return pair.grant("tank/base", toguid=pair.guid2), "tank/base", pair.incr, None
    # the right snapshot, the wrong origin
    return pair.grant("tank/base", fromguid=pair.guid1 ^ 1, toguid=pair.guid2), "tank/base", \
        pair.incr, None


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- streams --------------------------------------------------------------------------------------
def family_streams(cases: int, seed: int, root: Path) -> Tally:
    """Mutated real OpenZFS streams: the record reader, then the simulation's receive."""
    tally = Tally("streams")
    rng = random.Random(seed)
    streams = [p.read_bytes() for p in sorted(FIXTURES.glob("*.zstream"))]
    backend = SimBackend(root / "streams")
    backend.create_pool("tank")
    for n in range(cases):
        tally.cases += 1
        data = mutate_bytes(rng, rng.choice(streams))
        for _ in range(rng.randint(0, 2)):
            data = mutate_bytes(rng, data)
        try:
            for _ in read_records(io.BytesIO(data), verify=True):
                pass
        except ZfleetError:
            pass
        except Exception as exc:
            tally.bad("tracebacks", n, f"reader {type(exc).__name__}: {exc}")
            continue
        before = sim_state(backend)
        target = "tank/r"
        resumable = rng.random() < 0.5
        try:
            sink = backend.receive(ReceiveSpec(target, resumable=resumable,
                                               force=rng.random() < 0.3))  # fmt: skip
            try:
                sink.write(data)
                sink.finish()
            except BaseException:
                sink.abort()
                raise
        except ZfleetError:
            kept = resumable and only_resume_state(backend, target)
            if sim_state(backend) != before and not kept:
                tally.bad("partial", n, f"a refused stream changed the pool (-s: {resumable})")
            else:
                tally.ok("refused" + (", resume state kept" if kept else ""))
        except Exception as exc:
            tally.bad("tracebacks", n, f"sim receive {type(exc).__name__}: {exc}")
        else:
            tally.ok("accepted")  # harmless mutation (padding, a cut at a record boundary...)
        if backend.exists(target):
            backend.destroy(target, recursive=True)
    return tally


# -- tokens ---------------------------------------------------------------------------------------
def family_tokens(cases: int, seed: int, root: Path) -> Tally:
    """Mutated resume tokens: decoder, the real backend's arguments, the simulation's send -t."""
    tally = Tally("tokens")
    rng = random.Random(seed)
    fixture = (FIXTURES / "resume-token.txt").read_text().split()[0]
    backend = SimBackend(root / "tokens")
    backend.create_pool("tank")
    backend.create("tank/a")
    backend.snapshot(["tank/a@s1"])
    before = sim_state(backend)
    alphabet = "0123456789abcdef-"
    for n in range(cases):
        tally.cases += 1
        how = rng.randrange(4)
        if how == 0:
            token = mutate_bytes(rng, fixture.encode()).decode("latin-1")
        elif how == 1:
            chars = list(fixture)
            for _ in range(rng.randint(1, 6)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            token = "".join(chars)
        elif how == 2:
            token = rng.choice(["", "-", "1-", "1-0-0-", "9-ab-cd-ef", "-t", "1-x-y-z",
                                fixture + fixture, fixture[: rng.randrange(len(fixture))]])
        else:
            token = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        try:
            decode_resume_token(token)
        except ZfleetError:
            pass
        except Exception as exc:
            tally.bad("tracebacks", n, f"decoder {type(exc).__name__}: {exc}")
            continue
        try:
            argv = send_args(SendSpec("tank/a@s1", resume_token=token))
            if argv[-2:] != ["-t", token]:
                tally.bad("partial", n, f"token not passed as one argument: {argv}")
                continue
        except ConfigError:
            pass
        except Exception as exc:
            tally.bad("tracebacks", n, f"send_args {type(exc).__name__}: {exc}")
            continue
        err = io.StringIO()
        front = Front(backend, stdin=io.BytesIO(), stdout=io.BytesIO(), stderr=err)
        try:
            code = front.run("zfs", ["send", "-t", token])
        except BaseException as exc:
            tally.bad("tracebacks", n, f"sim send -t {type(exc).__name__}: {exc}")
            continue
        text = err.getvalue()
        if "Traceback" in text or "internal error" in text:
            tally.bad("tracebacks", n, text)
        elif code not in (0, 1, 2, 255) or (code and not text.strip()):
            tally.bad("tracebacks", n, f"exit {code} with {text!r}")
        elif sim_state(backend) != before:
            tally.bad("partial", n, "send -t changed the pool")
        else:
            tally.ok(f"send -t exit {code}")
    return tally


# -- configs --------------------------------------------------------------------------------------
GOOD_CONFIG: Final = """\
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"
stream_address = "127.0.0.1:7001"

[hosts.beta]
backend = "real"
exec_prefix = "ssh -o BatchMode=yes root@beta"

[stores.bucket]
kind = "s3"
endpoint = "http://127.0.0.1:8333"
bucket = "zfleet"

[jobs.images]
source = "alpha:tank/images"
targets = ["beta:backup/images", "store:bucket"]
schedule = "15m"
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.images.retention]
"zfleet-*" = 24
"""

CONFIG_VALUES: Final = (
    '""', "0", "-1", "99999999999999999999999999", "1e400", "nan", "inf", "true", "[]", "{}",
    '"ssh \'root@x"', '"ssh \\"root@x"', '"\\\\"', '"' + "x" * 5000 + '"', "[" * 400 + "]" * 400,
    '"99999999999999999999w"', '"9999999999999999999s"', '"1e308s"', '"0s"', '"-5m"',
    '"*/0 * * * *"', '"61 * * * *"', '"a:b:c"', '"store:"', '"alpha:"', '"nohost:tank/a"',
    '"127.0.0.1:99999"', '"[::1]:7001"', '"' + "é" * 10 + '"', "{ a = { b = { c = 1 } } }",
    '"zfleet-%"', '"%Y%Y%Y"', '{ "*" = -5 }', '{ "*" = 99999999999999999999 }',
    "1979-05-27T07:32:00Z", '"\\u0000"', '"alpha:tank/images@x"', '"$(reboot)"',
)  # fmt: skip
CONFIG_KEYS: Final = (
    "backend", "sim_root", "exec_prefix", "stream_address", "source", "targets", "schedule",
    "snapshot", "retention", "exclude", "kind", "bucket", "endpoint", "failover", "bogus",
)  # fmt: skip


def mutate_config(rng: random.Random, root: Path) -> bytes:
    text = GOOD_CONFIG.format(root=root)
    lines = text.splitlines()
    how = rng.randrange(9)
    if how == 0:
        lines.insert(rng.randrange(len(lines)) + 1,
                     f"{rng.choice(CONFIG_KEYS)} = {rng.choice(CONFIG_VALUES)}")  # fmt: skip
    elif how == 1:
        i = rng.choice([i for i, line in enumerate(lines) if " = " in line])
        lines[i] = lines[i].split(" = ", 1)[0] + " = " + rng.choice(CONFIG_VALUES)
    elif how == 2:
        return mutate_bytes(rng, text.encode())
    elif how == 3:
        return rng.choice([text.replace("images", "imágenes").encode("latin-1"),
                           text.encode("utf-16"), rng.randbytes(rng.randint(1, 400)),
                           b"\x00" * 30, b"\xef\xbb\xbf" + text.encode()])  # fmt: skip
    elif how == 4:
        depth = rng.choice([100, 1000, 5000])
        key = ".".join(["a"] * depth)
        return (text + rng.choice([f"[{key}]\n", f"x = {'[' * depth}{']' * depth}\n",
                                   f"y = {'{ a = ' * depth}1{' }' * depth}\n"])).encode()
    elif how == 5:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(
            ["[hosts]", "[jobs]", "[[jobs.x]]", "[hosts.alpha.x]", "[settings]",
             "[hosts.'bad name']", "[jobs.'']", "[jobs.images.retention.x]"]))  # fmt: skip
    elif how == 6:
        rng.shuffle(lines)
    elif how == 7:  # a second job whose names clash or loop
        lines += ["[jobs.loop]", 'source = "beta:backup/images"', 'targets = ["alpha:tank/images"]',
                  f"schedule = {rng.choice(CONFIG_VALUES)}"]  # fmt: skip
    else:
        pass  # the good config: it must load (or fail only for Redis)
    return "\n".join(lines).encode()


def family_configs(cases: int, seed: int, root: Path) -> Tally:
    """``zfleet graph|sync|coordinator -c FILE`` in-process (click's runner), Redis pointed at a
    closed port: a config that loads ends with "cannot reach Redis" (exit 4); a bad one with a
    ``zfleet:`` line (exit 2). Nothing may be created under the sim root."""
    from click.testing import CliRunner

    from app.cli import cli

    tally = Tally("configs")
    rng = random.Random(seed)
    path = root / "fleet.toml"
    env = {"ZFLEET_REDIS_URL": "redis://127.0.0.1:9/0", "ZFLEET_CONFIG": "",
           "ZFLEET_FLEET_SECRET": "", "ZFLEET_LOG_FORMAT": "json"}  # fmt: skip
    commands = (["graph"], ["sync", "images"], ["coordinator"])
    for n in range(cases):
        tally.cases += 1
        path.write_bytes(mutate_config(rng, root))
        argv = [*rng.choice(commands), "-c", str(path)]
        result = CliRunner().invoke(cli, argv, env=env)
        out = result.output
        if not isinstance(result.exception, SystemExit | None):
            tally.bad("tracebacks", n, f"{argv[0]}: {type(result.exception).__name__}: "
                                       f"{result.exception}")  # fmt: skip
        elif "Traceback" in out or result.exit_code not in (2, 4) or "zfleet: " not in out:
            tally.bad("tracebacks", n, f"{argv[0]} exit {result.exit_code}: {out[-300:]}")
        elif (root / "alpha").exists():
            tally.bad("partial", n, f"{argv[0]} created the sim root of a refused run")
        else:
            tally.ok(f"exit {result.exit_code}")
    return tally


def family_configs_cli(cases: int, seed: int, root: Path) -> Tally:
    """The same configs through the installed ``zfleet`` executable, one process per case (the
    console entry point, the interpreter's own last-resort traceback printing included)."""
    import subprocess

    tally = Tally("configs-cli")
    rng = random.Random(seed)
    path = root / "fleet.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env.update({"ZFLEET_REDIS_URL": "redis://127.0.0.1:9/0", "ZFLEET_LOG_FORMAT": "json"})
    binary = str(Path(sys.executable).parent / "zfleet")
    commands = (["graph"], ["sync", "images"], ["coordinator"])
    for n in range(cases):
        tally.cases += 1
        path.write_bytes(mutate_config(rng, root))
        argv = [binary, *rng.choice(commands), "-c", str(path)]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            tally.bad("crashes", n, f"{argv[1]} hung past 60 s")
            continue
        err = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
        if "Traceback" in err or done.returncode not in (2, 4) or "zfleet: " not in err:
            tally.bad("tracebacks", n, f"{argv[1]} exit {done.returncode}: {err[-300:]}")
        elif (root / "alpha").exists():
            tally.bad("partial", n, f"{argv[1]} created the sim root of a refused run")
        else:
            tally.ok(f"exit {done.returncode}")
    return tally


# -- messages -------------------------------------------------------------------------------------
def _sample_messages() -> list[bytes]:
    args = [
        SnapshotArgs(names=("tank/a@s1", "tank/b@s1"), recursive=True),
        HoldArgs(tag="zfleet", snapshots=(("tank/a@s1", 123),)),
        TransferArgs(source="alpha", send=SendSpec("tank/a@s2", from_snap="tank/a@s1"),
                     to_guid=2, from_guid=1,
                     targets=(TransferTarget("beta", "backup/a", grant="x.y",
                                             address=("127.0.0.1", 7001)),)),
    ]  # fmt: skip
    out = [args_to_bytes(a) for a in args]
    for a in args:
        out.append(messages.encode(StepCall("j1", "s1", 1, "beta", args_to_bytes(a), epoch=3,
                                            fence="images", time_limit=60.0)))  # fmt: skip
    out.append(messages.encode(StepEvent("j1", "s1", 1, "beta", StepState.FAILED,
                                         error_type="DatasetBusy", error_message="busy",
                                         result={"guid": 5, "name": "tank/a@s1"})))  # fmt: skip
    return out


def family_messages(cases: int, seed: int) -> Tally:
    """Mutated msgpack step calls, events and arguments: decoded to a typed message or a
    MessageError, nothing else (the worker turns that into a FAILED event)."""
    tally = Tally("messages")
    rng = random.Random(seed)
    samples = _sample_messages()
    for n in range(cases):
        tally.cases += 1
        raw = rng.choice(samples)
        if rng.random() < 0.5:
            data = mutate_bytes(rng, raw)
        else:
            tree = mutate_tree(rng, msgpack.unpackb(raw, raw=False, strict_map_key=False))
            try:
                data = msgpack.packb(tree, use_bin_type=True)
            except Exception:
                data = mutate_bytes(rng, raw)
        ok = True
        for decode in (args_from_bytes, messages.decode):
            try:
                decoded = decode(data)
                if isinstance(decoded, StepCall):
                    args_from_bytes(decoded.args)
            except ZfleetError:
                pass
            except Exception as exc:
                tally.bad("tracebacks", n, f"{decode.__name__} {type(exc).__name__}: {exc}")
                ok = False
                break
        if ok:
            tally.ok("decoded or MessageError")
    return tally


# -- the table ------------------------------------------------------------------------------------
def print_table(tallies: list[Tally], extra: list[str] | None = None) -> None:
    print(f"{'family':<10} {'cases':>7} {'clear':>7} {'tracebacks':>10} {'crashes':>8} "
          f"{'partial':>8}")  # fmt: skip
    for t in tallies:
        print(f"{t.family:<10} {t.cases:>7} {t.clear:>7} {t.tracebacks:>10} {t.crashes:>8} "
              f"{t.partial:>8}")  # fmt: skip
    for t in tallies:
        for category, (refused, total) in t.refused.items():
            share = 100.0 * refused / total if total else 0.0
            print(f"grant refusal  {category:<13} {refused}/{total} = {share:.1f} %")
    for t in tallies:
        if t.outcomes:
            shown = sorted(t.outcomes.items(), key=lambda kv: -kv[1])
            print(f"{t.family} outcomes: " + "; ".join(f"{k} {v}" for k, v in shown[:8]))
    for line in extra or []:
        print(line)
    for t in tallies:
        for example in t.examples:
            print(f"  {t.family}: {example}")


Runner = Callable[[int, int, Path], Tally]


def run_in_process(families: list[str], cases: int, seed: int, root: Path,
                   cli_cases: int = 100) -> list[Tally]:  # fmt: skip
    """Every in-process family asked for, each with ``cases`` cases from ``seed``."""
    out: list[Tally] = []
    live = {"frames", "grants"} & set(families)
    with contextlib.ExitStack() as stack:
        pair = stack.enter_context(sim_pair(root / "pair")) if live else None
        for i, name in enumerate(families):
            family_seed = seed + i * 1000003
            start = time.monotonic()
            if name == "frames" and pair is not None:
                tally = family_frames(pair, cases, family_seed)
            elif name == "grants" and pair is not None:
                tally = family_grants(pair, cases, family_seed)
            elif name == "streams":
                tally = family_streams(cases, family_seed, root)
            elif name == "tokens":
                tally = family_tokens(cases, family_seed, root)
            elif name == "configs":
                tally = family_configs(cases, family_seed, root / "configs")
            elif name == "messages":
                tally = family_messages(cases, family_seed)
            elif name == "configs-cli":
                tally = family_configs_cli(min(cases, cli_cases), family_seed, root / "configs")
            else:
                raise SystemExit(f"unknown family {name!r} (families: {', '.join(FAMILIES)})")
            print(f"# {name}: {tally.cases} cases in {time.monotonic() - start:.1f}s",
                  file=sys.stderr, flush=True)  # fmt: skip
            out.append(tally)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per family")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", default=",".join(FAMILIES),
                        help=f"comma-separated families ({', '.join(FAMILIES)})")
    parser.add_argument("--servers", action="store_true",
                        help="also the coordinator HTTP API, the webhook and the floods")
    parser.add_argument("--flood", type=int, default=200, help="connections per flood")
    parser.add_argument("--cli-cases", type=int, default=100,
                        help="configs-cli cases (one zfleet process each, about a second)")
    args = parser.parse_args(argv)
    families = [f for f in args.only.split(",") if f]
    extra: list[str] = []
    fd, name = tempfile.mkstemp(prefix="zfleet-hostile-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    with log_path.open("w") as log, tempfile.TemporaryDirectory(prefix="zfleet-hostile-") as tmp:
        configure_logging(level="INFO", fmt="json", stream=log, force=True)
        root = Path(tmp)
        (root / "configs").mkdir()
        tallies = run_in_process(families, args.cases, args.seed, root, args.cli_cases)
        if args.servers:
            from bench import hostile_servers

            server_tallies, extra = hostile_servers.run(args.cases, args.seed, root, args.flood)
            tallies += server_tallies
    logged = log_path.read_text(errors="replace")
    leaked = logged.count("Traceback") + logged.count('"exception"')
    if leaked:
        tallies.append(Tally("log", tracebacks=leaked,
                             examples=[f"tracebacks in the servers' log {log_path}"]))
    print(f"seed {args.seed}, {args.cases} cases per family; servers' log: {log_path}")
    print_table(tallies, extra)
    return 1 if any(t.failed for t in tallies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
