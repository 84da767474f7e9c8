"""The real OpenZFS backend: runs `zfs` and `zpool`, locally or through an exec prefix.

Every call is one child process without a local shell (``sudo zfs ...``, ``ssh root@host zfs
...``); output is read in OpenZFS's script form (``-Hp``) by workers.zfs.parse, failures are read
into typed errors by workers.zfs.errormap. Send and receive stream through pipes: the stream is
never held in memory.
"""

from __future__ import annotations

import builtins
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import IO, Final

import structlog

from protocol import names as rules
from protocol.errors import ConfigError, InvalidOperation, NameError_, StreamIncomplete, ZfleetError
from workers.zfs import parse
from workers.zfs.base import (
    ALL_TYPES,
    DiffEntry,
    ObjType,
    PoolInfo,
    PropertyValue,
    ReceiveResult,
    ReceiveSpec,
    SendSpec,
    ZfsBackend,
    ZfsObject,
)
from workers.zfs.errormap import error_from_stderr
from workers.zfs.proc import Child, Finished, Runner, read_all

log = structlog.get_logger(__name__)

RESUME_TOKEN_PROP: Final = "receive_resume_token"  # noqa: S105  (a property name)


_PROPERTY_NAME: Final = re.compile(r"[a-z][a-z0-9:+._-]*\Z")


def check_property(prop: str) -> str:
    """Refuse a property name that OpenZFS would not take (or would read as an option)."""
    if not _PROPERTY_NAME.match(prop):
        raise ConfigError(
            f"invalid property name {prop!r}: lowercase letters, digits and ':+._-' only,"
            " starting with a letter"
        )
    return prop


def check_tag(tag: str) -> str:
    """Refuse a hold tag that is empty or would be read as an option."""
    if not tag or tag.startswith("-") or len(tag) > rules.MAX_NAME_LEN:
        raise NameError_(tag, "a hold tag must be 1-255 characters and not start with '-'")
    return tag


def check_existing(name: str) -> str:
    """Refuse a dataset, snapshot or bookmark name that breaks OpenZFS's rules."""
    rules.validate_any(name, existing=True)
    return name


def check_from(from_snap: str) -> str:
    """An incremental source: a full snapshot or bookmark name, or ``@snap`` / ``#mark``."""
    if from_snap[:1] in ("@", "#"):
        rules.validate_component(
            from_snap[1:], what="snapshot" if from_snap[0] == "@" else "bookmark"
        )
        return from_snap
    return check_existing(from_snap)


def _props_args(flag: str, props: Mapping[str, str] | None) -> list[str]:
    args: list[str] = []
    for key, value in (props or {}).items():
        args += [flag, f"{check_property(key)}={value}"]
    return args


def send_args(spec: SendSpec, *, dry_run: bool = False) -> list[str]:
    """``zfs send``'s arguments for ``spec`` (``-nP`` first when ``dry_run``)."""
    args = ["send"]
    if dry_run:
        args.append("-nP")
    if spec.resume_token is not None:
        if not spec.resume_token or spec.resume_token.startswith("-"):
            raise ConfigError(f"not a resume token: {spec.resume_token!r}")
        return [*args, "-t", spec.resume_token]
    for enabled, flag in (
        (spec.replicate, "-R"),
        (spec.raw, "-w"),
        (spec.compressed, "-c"),
        (spec.large_blocks, "-L"),
        (spec.embedded, "-e"),
        (spec.props, "-p"),
    ):
        if enabled:
            args.append(flag)
    if spec.from_snap is not None:
        args += ["-I" if spec.intermediates else "-i", check_from(spec.from_snap)]
    return [*args, rules.validate_snapshot(spec.snapshot, existing=True)]


def receive_args(spec: ReceiveSpec) -> list[str]:
    """``zfs receive``'s arguments for ``spec``; ``-v`` so the received snapshot is named."""
    args = ["receive", "-v"]
    for enabled, flag in ((spec.resumable, "-s"), (spec.force, "-F"), (spec.no_mount, "-u")):
        if enabled:
            args.append(flag)
    args += _props_args("-o", spec.set_props)
    if spec.origin is not None:
        args += ["-o", f"origin={rules.validate_snapshot(spec.origin, existing=True)}"]
    for prop in spec.exclude_props:
        args += ["-x", check_property(prop)]
    return [*args, check_existing(spec.target)]


class RealSendStream:
    """A running ``zfs send``: its stdout, read in pieces."""

    def __init__(self, child: Child, spec: SendSpec) -> None:
        self._child = child
        self._spec = spec
        self._done = False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the stream (all that is left when ``n`` < 0); b"" at its end."""
        if self._child.stdout.closed:  # cancelled or closed: the stream is over
            return b""
        if n < 0:
            return self._child.stdout.read()
        # what is there now (at most n), without waiting to fill n: no extra copy, no stall
        return self._child.stdout.read1(n)

    def close(self) -> None:
        """Wait for ``zfs send`` to end; raise the typed error if it failed."""
        if self._done:
            return
        self._done = True
        code, stderr = self._child.wait()
        if code != 0:
            raise error_from_stderr(stderr, code)
        log.debug("zfs.send_finished", snapshot=self._spec.snapshot)

    def cancel(self) -> None:
        """Kill ``zfs send`` (and its exec prefix) and reap it; no error is raised."""
        self._done = True
        self._child.kill()


class RealReceiveSink:
    """A running ``zfs receive``: its stdin, written in pieces."""

    def __init__(
        self, child: Child, out: IO[bytes], spec: ReceiveSpec, backend: RealBackend
    ) -> None:
        self._child = child
        self._out = out
        self._spec = spec
        self._backend = backend
        self._received = 0

    def write(self, data: bytes) -> int:
        """Feed ``data`` to ``zfs receive``; raises its typed error if it has already failed."""
        try:
            self._child.stdin.write(data)
        except BrokenPipeError:
            # receive exited early (a bad stream, a refused target): its own message says why
            raise self._failure() from None
        self._received += len(data)
        return len(data)

    def finish(self) -> ReceiveResult:
        """Close the stream, wait for ``zfs receive``, and say what arrived."""
        code, _ = self._child.wait()
        if code != 0:
            raise self._failure()
        snapshot = parse.parse_receive_verbose(read_all(self._out))
        return ReceiveResult(self._spec.target, snapshot, self._received)

    def abort(self) -> None:
        """Kill ``zfs receive`` now; with ``-s`` its partial state stays for a resume."""
        self._child.kill()
        self._out.close()

    def _failure(self) -> ZfleetError:
        code, stderr = self._child.wait()
        self._out.close()
        error = error_from_stderr(stderr, code)
        if self._spec.resumable and isinstance(error, StreamIncomplete) and error.token is None:
            # OpenZFS prints the token only on some paths; the target always has it
            error.token = self._backend.resume_token(self._spec.target)
        return error


class RealBackend(ZfsBackend):
    """OpenZFS through its commands. ``exec_prefix`` runs them elsewhere (``ssh root@host``).

    ``user_props`` names user properties to fetch in the same ``zfs list`` call; when empty,
    ``list`` finds every user property with one extra ``zfs get``. ``quote`` forces (or stops)
    shell-quoting of arguments after the prefix; by default an ssh/rsh prefix is quoted.
    """

    name = "real"

    def __init__(
        self,
        exec_prefix: Sequence[str] = (),
        *,
        zfs: str = "zfs",
        zpool: str = "zpool",
        env: Mapping[str, str] | None = None,
        quote: bool | None = None,
        user_props: Sequence[str] = (),
        timeout: float = 600.0,
    ) -> None:
        self.runner = Runner(exec_prefix, env=env, quote=quote)
        self.zfs = zfs
        self.zpool = zpool
        self.user_props = tuple(user_props)
        self.timeout = timeout

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, args: Sequence[str], *, input_bytes: bytes | None = None) -> Finished:
        done = self.runner.run([self.zfs, *args], input_bytes=input_bytes, timeout=self.timeout)
        if done.code != 0:
            raise error_from_stderr(done.stderr, done.code)
        return done

    def _zpool(self, args: Sequence[str]) -> Finished:
        done = self.runner.run([self.zpool, *args], timeout=self.timeout)
        if done.code != 0:
            raise error_from_stderr(done.stderr, done.code)
        return done

    # -- inventory ------------------------------------------------------------------------
    def list(
        self,
        root: str | None = None,
        *,
        recursive: bool = True,
        types: Sequence[ObjType] = ALL_TYPES,
    ) -> builtins.list[ZfsObject]:
        columns = [*parse.LIST_COLUMNS, *self.user_props]
        args = ["list", "-Hp", "-t", ",".join(t.value for t in types), "-o", ",".join(columns)]
        if root is not None:
            # as `zfs list`: without -r only root itself, or (for -t snapshot/bookmark alone)
            # root's own snapshots/bookmarks; a snapshot or bookmark may be named directly
            args += ["-r", root] if recursive else [root]
        objects = parse.parse_list(self._run(args).stdout, parse.LIST_COLUMNS, self.user_props)
        if self.user_props or not objects:
            return objects
        if root is None:
            found = self._user_props_of([])  # everything was listed: ask about everything
        elif recursive:
            found = self._user_props_of(["-r", root])
        else:
            # bookmarks carry no user properties; only what was listed is asked about
            wanted = [o.name for o in objects if o.type is not ObjType.BOOKMARK]
            found = self._user_props_of(wanted) if wanted else {}
        return [_with_user_props(o, found.get(o.name, {})) for o in objects]

    def _user_props_of(self, operands: Sequence[str]) -> dict[str, dict[str, str]]:
        """User properties (local, received or inherited) of ``operands``, in one call."""
        args = ["get", "-Hp", "-o", "name,property,value,source", "-s", "local,received,inherited"]
        args += ["-t", "filesystem,volume,snapshot", "all", *operands]
        return parse.parse_user_props(self._run(args).stdout)

    def pools(self) -> builtins.list[PoolInfo]:
        return parse.parse_pools(
            self._zpool(["list", "-Hp", "-o", ",".join(parse.POOL_COLUMNS)]).stdout
        )

    def resume_token(self, target: str) -> str | None:
        """The target's ``receive_resume_token``, or None when it has none (or is missing)."""
        try:
            value = self.get(target, [RESUME_TOKEN_PROP]).get(RESUME_TOKEN_PROP)
        except ZfleetError:
            return None
        if value is None or value.value in ("-", ""):
            return None
        return value.value

    # -- datasets -------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        props: Mapping[str, str] | None = None,
        volsize: int | None = None,
        parents: bool = False,
        key: bytes | None = None,
    ) -> None:
        rules.validate_dataset(name)
        given = dict(props or {})
        if key is not None:
            # keylocation=prompt reads the new key from stdin when stdin is not a terminal
            if given.get("keylocation", "prompt") != "prompt":
                raise ConfigError("a key given on stdin needs keylocation=prompt")
            given["keylocation"] = "prompt"
        args = ["create", *(["-p"] if parents else []), *_props_args("-o", given)]
        if volsize is not None:
            args += ["-V", str(volsize)]
        self._run([*args, name], input_bytes=key)

    def destroy(self, name: str, *, recursive: bool = False, defer: bool = False) -> None:
        flags = [flag for on, flag in ((recursive, "-r"), (defer, "-d")) if on]
        self._run(["destroy", *flags, check_existing(name)])

    def snapshot(
        self,
        names: Sequence[str],
        *,
        recursive: bool = False,
        props: Mapping[str, str] | None = None,
    ) -> None:
        if not names:
            raise InvalidOperation("snapshot needs at least one name")
        for name in names:
            rules.validate_snapshot(name)
        flags = ["-r"] if recursive else []
        self._run(["snapshot", *flags, *_props_args("-o", props), *names])

    def clone(self, snapshot: str, target: str, *, props: Mapping[str, str] | None = None) -> None:
        rules.validate_snapshot(snapshot, existing=True)
        rules.validate_dataset(target)
        self._run(["clone", *_props_args("-o", props), snapshot, target])

    def promote(self, name: str) -> None:
        self._run(["promote", rules.validate_dataset(name, existing=True)])

    def rename(self, old: str, new: str) -> None:
        rules.validate_any(new)
        self._run(["rename", check_existing(old), new])

    def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        rules.validate_snapshot(snapshot, existing=True)
        self._run(["rollback", *(["-r"] if destroy_newer else []), snapshot])

    def bookmark(self, snapshot: str, bookmark: str) -> None:
        rules.validate_snapshot(snapshot, existing=True)
        rules.validate_bookmark(bookmark)
        self._run(["bookmark", snapshot, bookmark])

    # -- holds ----------------------------------------------------------------------------
    def hold(self, tag: str, snapshots: Sequence[str]) -> None:
        self._run(["hold", check_tag(tag), *map(check_existing, snapshots)])

    def release(self, tag: str, snapshots: Sequence[str]) -> None:
        self._run(["release", check_tag(tag), *map(check_existing, snapshots)])

    def holds(self, snapshot: str) -> builtins.list[str]:
        rules.validate_snapshot(snapshot, existing=True)
        return parse.parse_holds(self._run(["holds", "-H", snapshot]).stdout)

    def hold_times(self, snapshot: str) -> dict[str, int]:
        rules.validate_snapshot(snapshot, existing=True)
        return parse.parse_hold_times(self._run(["holds", "-Hp", snapshot]).stdout)

    # -- properties -----------------------------------------------------------------------
    def get(self, name: str, props: Sequence[str] | None = None) -> dict[str, PropertyValue]:
        check_existing(name)
        wanted = ",".join(map(check_property, props)) if props else "all"
        out = self._run(["get", "-Hp", "-o", ",".join(parse.GET_FIELDS), wanted, name]).stdout
        found = parse.parse_get(out).get(name, {})
        # zfs get prints "-" for a property that does not apply; a user property never set
        # also reads "-" with source "-": leave both out, as a mapping cannot say "absent" else
        return {k: v for k, v in found.items() if not (v.value == "-" and v.source == "-")}

    def set(self, name: str, props: Mapping[str, str]) -> None:
        if not props:
            return
        check_existing(name)
        self._run(["set", *(f"{check_property(k)}={v}" for k, v in props.items()), name])

    def inherit(self, name: str, prop: str) -> None:
        self._run(["inherit", check_property(prop), check_existing(name)])

    # -- streams --------------------------------------------------------------------------
    def send(self, spec: SendSpec) -> RealSendStream:
        child = self.runner.spawn(
            [self.zfs, *send_args(spec)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        log.info("zfs.send_started", snapshot=spec.snapshot, resume=spec.resume_token is not None)
        return RealSendStream(child, spec)

    def estimate(self, spec: SendSpec) -> int:
        return parse.parse_estimate(self._run(send_args(spec, dry_run=True)).stdout)

    def receive(self, spec: ReceiveSpec) -> RealReceiveSink:
        # stdout (the -v report) goes to a file: a pipe nobody reads could fill and stall us
        command = [self.zfs, *receive_args(spec)]
        out = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the sink)
        try:
            child = self.runner.spawn(command, stdin=subprocess.PIPE, stdout=out)
        except BaseException:
            out.close()
            raise
        log.info("zfs.receive_started", target=spec.target)
        return RealReceiveSink(child, out, spec, self)

    def abort_receive(self, target: str) -> None:
        self._run(["receive", "-A", check_existing(target)])

    def diff(self, snapshot: str, other: str) -> builtins.list[DiffEntry]:
        rules.validate_snapshot(snapshot, existing=True)
        return parse.parse_diff(self._run(["diff", "-H", snapshot, check_existing(other)]).stdout)

    # -- encryption -----------------------------------------------------------------------
    def load_key(self, name: str, *, key: bytes | None = None) -> None:
        check_existing(name)
        if key is None:
            self._run(["load-key", name])
        else:
            # "-L prompt" reads the key from stdin when stdin is not a terminal
            self._run(["load-key", "-L", "prompt", name], input_bytes=key)

    def unload_key(self, name: str) -> None:
        self._run(["unload-key", check_existing(name)])

    def change_key(
        self,
        name: str,
        *,
        key: bytes | None = None,
        props: Mapping[str, str] | None = None,
        inherit: bool = False,
    ) -> None:
        self._run(change_key_args(name, key=key, props=props, inherit=inherit), input_bytes=key)

    # -- mounts -------------------------------------------------------------------------
    def mount(self, name: str) -> None:
        self._run(["mount", check_existing(name)])

    def unmount(self, name: str) -> None:
        self._run(["unmount", check_existing(name)])

    def mounted(self) -> builtins.list[tuple[str, str]]:
        # `zfs mount` pads names with spaces, which names may contain: read -H columns instead
        out = self._run(["list", "-Hp", "-t", "filesystem", "-o", "name,mounted,mountpoint"])
        rows = (line.split("\t") for line in out.stdout.splitlines() if line)
        return [(row[0], row[2]) for row in rows if len(row) == 3 and row[1] == "yes"]


_KEYFORMATS: Final = ("raw", "hex", "passphrase")


def change_key_args(
    name: str, *, key: bytes | None, props: Mapping[str, str] | None, inherit: bool
) -> builtins.list[str]:
    """``zfs change-key``'s argv (zfs-change-key(8), OpenZFS 2.3); a key travels on stdin.

    With a key, ``keylocation=prompt`` is what makes zfs read it from stdin (not a terminal),
    so another keylocation with a key is refused here rather than silently ignored.
    """
    check_existing(name)
    given = dict(props or {})
    if inherit:
        if given or key is not None:
            raise ConfigError("change-key -i takes no key and no properties")
        return ["change-key", "-i", name]
    unknown = sorted(set(given) - {"keyformat", "keylocation", "pbkdf2iters"})
    if unknown:
        raise ConfigError(
            f"change-key sets only keyformat, keylocation and pbkdf2iters, not {unknown}"
        )
    if "keyformat" in given and given["keyformat"] not in _KEYFORMATS:
        raise ConfigError(f"keyformat must be one of {', '.join(_KEYFORMATS)}")
    if "pbkdf2iters" in given and not given["pbkdf2iters"].isdigit():
        raise ConfigError(f"pbkdf2iters must be a number, not {given['pbkdf2iters']!r}")
    location = given.get("keylocation")
    if key is not None:
        if location not in (None, "prompt"):
            raise ConfigError("a key given on stdin needs keylocation=prompt")
        given["keylocation"] = "prompt"
    elif (
        location is not None
        and location != "prompt"
        and not location.startswith(("file://", "https://", "http://"))
    ):
        raise ConfigError(f"invalid keylocation {location!r}")
    args = ["change-key"]
    for prop in ("keyformat", "keylocation", "pbkdf2iters"):
        if prop in given:
            args += ["-o", f"{prop}={given[prop]}"]
    return [*args, name]


def _with_user_props(obj: ZfsObject, props: Mapping[str, str]) -> ZfsObject:
    if not props:
        return obj
    return replace(obj, user_props=dict(props))
