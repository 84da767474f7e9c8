"""A `zfs`/`zpool`-compatible command line over any ZfsBackend (the simulation by default).

``python -m workers.zfs.front zfs list -t all`` (or ``zfleet sim zfs ...``) takes OpenZFS's
arguments for the subset zfleet uses, prints OpenZFS's formats, fails with OpenZFS's messages and
exit codes, streams ``send`` to stdout and ``receive`` from stdin. Scripts written for real ZFS,
and zfleet's own real backend, can therefore drive the simulation unchanged.

Arguments and names are checked before the backend is touched: a bad one is refused with the
rule it broke (exit 2 for usage, 1 for a bad name, as OpenZFS does).

The subset: ``zfs list get set inherit create destroy snapshot hold release holds bookmark
clone promote rename rollback send receive/recv diff load-key unload-key change-key mount
unmount/umount``
and ``zpool create destroy list get``. Modules: front_list (list/get), front_send
(send/receive), front_holds (hold/release/holds), front_mount (mount/unmount), front_pool
(zpool), front_table (formats), front_errors (messages and exit codes).
"""

from __future__ import annotations

import getopt
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Final, TextIO

import structlog

from protocol import names as rules
from protocol.errors import ConfigError, InvalidOperation, ZfleetError
from protocol.log import configure_logging
from workers.zfs.base import ObjType, ZfsBackend
from workers.zfs.front_errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_SET_REFUSED,
    EXIT_USAGE,
    Context,
    render,
)
from workers.zfs.front_mount import USAGE as MOUNT_USAGE
from workers.zfs.front_proptable import PROPERTY_TABLE
from workers.zfs.front_table import is_property

log = structlog.get_logger(__name__)

SIM_ROOT_ENV: Final = "ZFLEET_SIM_ROOT"
LOG_LEVEL_ENV: Final = "ZFLEET_LOG_LEVEL"
CHUNK: Final = 1 << 20

DEFAULT_LIST: Final = ("name", "used", "available", "referenced", "mountpoint")
GET_FIELDS: Final = ("name", "property", "value", "source")
TYPE_NAMES: Final[dict[str, tuple[ObjType, ...]]] = {
    "all": tuple(ObjType),
    "filesystem": (ObjType.FILESYSTEM,),
    "fs": (ObjType.FILESYSTEM,),
    "volume": (ObjType.VOLUME,),
    "vol": (ObjType.VOLUME,),
    "snapshot": (ObjType.SNAPSHOT,),
    "snap": (ObjType.SNAPSHOT,),
    "bookmark": (ObjType.BOOKMARK,),
}

USAGE: Final[dict[str, str]] = {
    "list": "list [-Hp] [-r|-d max] [-o property[,property]...] [-s property]...\n"
    "\t    [-S property]... [-t type[,type]...] [filesystem|volume|snapshot] ...",
    "get": 'get [-rHp] [-d max] [-o "all" | field[,...]]\n'
    "\t    [-t type[,type]...] [-s source[,source]...]\n"
    '\t    <"all" | property[,...]> [filesystem|volume|snapshot|bookmark] ...',
    "set": "set <property=value> ... <filesystem|volume|snapshot> ...",
    "inherit": "inherit [-rS] <property> <filesystem|volume|snapshot> ...",
    "create": "create [-Pnpuv] [-o property=value] ... <filesystem>\n"
    "\tcreate [-Pnpsv] [-b blocksize] [-o property=value] ... -V <size> <volume>",
    "destroy": "destroy [-fnpRrv] <filesystem|volume>\n"
    "\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%<snap>][,...]",
    "snapshot": "snapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...",
    "hold": "hold [-r] <tag> <snapshot> ...",
    "release": "release [-r] <tag> <snapshot> ...",
    "holds": "holds [-rHp] <snapshot> ...",
    "bookmark": "bookmark <snapshot|bookmark> <newbookmark>",
    "clone": "clone [-p] [-o property=value] ... <snapshot> <filesystem|volume>",
    "promote": "promote <clone-filesystem>",
    "rename": "rename [-f] <filesystem|volume|snapshot> <filesystem|volume|snapshot>",
    "rollback": "rollback [-rRf] <snapshot>",
    "send": "send [-DLPbcehnpsVvw] [-i|-I snapshot] [-R [-X dataset[,dataset]...]] <snapshot>\n"
    "\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n"
    "\tsend [-PnVv] -t <receive_resume_token>",
    "receive": "receive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n"
    "\t    <filesystem|volume|snapshot>\n"
    "\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... \n"
    "\t    [-d | -e] <filesystem>\n"
    "\treceive -A <filesystem|volume>",
    "diff": "diff [-FHth] <snapshot> [snapshot|filesystem]",
    "load-key": "load-key [-rn] [-L <keylocation>] <-a | filesystem|volume>",
    "unload-key": "unload-key [-r] <-a | filesystem|volume>",
    "change-key": "change-key [-l] [-o keyformat=<value>]\n"
    "\t    [-o keylocation=<value>] [-o pbkdf2iters=<value>]\n"
    "\t    <filesystem|volume>\n"
    "\tchange-key -i [-l] <filesystem|volume>",
}
USAGE.update(MOUNT_USAGE)
ALIASES_CMD: Final = {"recv": "receive", "snap": "snapshot", "umount": "unmount"}
# what zfs_main.c usage() prints after a command's usage, unless it lists the properties
USAGE_TRAILER: Final = (
    "\nFor the property list, run: zfs set|get\n"
    "\nFor the delegated permission list, run: zfs allow|unallow\n"
    "\nFor further help on a command or topic, run: zfs help [<topic>]"
)
PROPERTY_USAGE: Final = frozenset({"set", "get", "inherit", "list"})


class Usage(Exception):
    """A command line OpenZFS would refuse with its usage text (exit 2)."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


def sim_root(env: dict[str, str] | None = None) -> Path:
    """Where simulated pools live: ``$ZFLEET_SIM_ROOT``, else zfleet's settings (data dir)."""
    env = dict(os.environ) if env is None else env
    if env.get(SIM_ROOT_ENV):
        return Path(env[SIM_ROOT_ENV])
    from protocol.settings import load_settings

    return Path(load_settings(env=env).sim_root)


def open_sim(root: Path) -> ZfsBackend:
    """The simulated backend over ``root`` (imported here: the front end needs no sim to load)."""
    from workers.zfs.sim import SimBackend

    root.mkdir(parents=True, exist_ok=True)
    return SimBackend(root)


def opts(command: str, args: Sequence[str], spec: str) -> tuple[dict[str, list[str]], list[str]]:
    """getopt as zfs uses it; options gathered as {"-o": [values...]} and the operands."""
    try:
        pairs, operands = getopt.gnu_getopt(list(args), spec)
    except getopt.GetoptError as exc:
        if "requires argument" in exc.msg:
            raise Usage(f"missing argument for '{exc.opt}' option", command) from None
        raise Usage(f"invalid option '{exc.opt}'", command) from None
    found: dict[str, list[str]] = {}
    for flag, value in pairs:
        found.setdefault(flag, []).append(value)
    return found, operands


def prop_pairs(values: Sequence[str], command: str) -> dict[str, str]:
    """``-o prop=value`` arguments as a mapping; a missing ``=`` is a usage error."""
    props = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"missing '=' for property=value argument '{item}'", command)
        props[key] = value
    return props


def escape_path(path: str) -> str:
    """``zfs diff`` escapes spaces, backslashes and unprintables as ``\\0ooo``."""
    return "".join(
        c if c.isprintable() and c not in " \\" else "".join(f"\\{b:04o}" for b in c.encode())
        for c in path
    )


class Front:
    """One invocation of the front end: a backend and the three standard streams."""

    def __init__(
        self,
        backend: ZfsBackend,
        *,
        stdin: BinaryIO,
        stdout: BinaryIO,
        stderr: TextIO,
        stdout_is_tty: bool = False,
    ) -> None:
        self.backend = backend
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_is_tty = stdout_is_tty
        self.ctx = Context("open", "")

    # -- plumbing ---------------------------------------------------------------------------
    def out(self, text: str) -> None:
        # a byte that is not UTF-8 came in through argv as a lone surrogate: out as that byte,
        # as zfs would print what it stored
        self.stdout.write(text.encode(errors="surrogateescape"))

    def err(self, text: str) -> None:
        self.stderr.write(text if text.endswith("\n") else text + "\n")

    def doing(
        self, verb: str, subject: str, *, new_stream: bool = True, resume: bool = False
    ) -> None:
        """Say what is being done, for the failure message if it fails."""
        self.ctx = Context(verb, subject, new_stream, resume)

    def run(self, program: str, args: Sequence[str]) -> int:
        """Run ``zfs ARGS`` or ``zpool ARGS``; the exit code."""
        from workers.zfs import front_holds, front_list, front_mount, front_pool, front_send

        commands: dict[str, Callable[[Sequence[str]], int]]
        if program == "zpool":
            commands = front_pool.commands(self)
        elif program == "zfs":
            commands = {
                **self.zfs_commands(),
                **front_list.commands(self),
                **front_send.commands(self),
                **front_mount.commands(self),
                **front_holds.commands(self),
            }
        else:
            self.err(f"unknown program '{program}': expected zfs or zpool")
            return EXIT_USAGE
        if not args:
            self.err(f"usage: {program} command args ...")
            return EXIT_USAGE
        if args[0] in ("-?", "--help", "help"):
            lines = [USAGE.get(c, f"{c} ...") for c in commands] if program == "zfs" else []
            self.out(
                f"usage: {program} command args ...\nwhere 'command' is one of the following:\n\n"
                + "".join(f"\t{line}\n" for line in lines or commands)
            )
            return 0
        name = ALIASES_CMD.get(args[0], args[0])
        command = commands.get(name)
        if command is None:
            self.err(f"unrecognized command '{args[0]}'\nusage: {program} command args ...")
            return EXIT_USAGE
        try:
            return command(args[1:])
        except Usage as exc:
            self.usage(program, exc.command or name, str(exc))
            return EXIT_USAGE
        except ZfleetError as exc:
            message, code = render(exc, self.ctx, self.backend)
            self.err(message)
            return code
        except (OSError, ValueError, RuntimeError, LookupError, ImportError) as exc:
            # a fault below the contract (a full disk, a bug): say so in one line, keep the
            # details in the log, and fail like zfs does rather than dumping a traceback
            log.error("front.internal_error", command=name, error=repr(exc))
            log.debug("front.internal_error_trace", command=name, exc_info=True)
            self.err(f"internal error: {type(exc).__name__}: {exc}")
            return EXIT_FAILURE

    def usage(self, program: str, command: str, message: str = "") -> None:
        """A refused command line: the reason (if any), then the command's usage, as zfs does."""
        usage = USAGE.get(command, f"{command} ...")
        trailer = ""
        if program == "zfs":
            trailer = PROPERTY_TABLE if command in PROPERTY_USAGE else USAGE_TRAILER
        self.err(f"{message}\n" * bool(message) + f"usage:\n\t{usage}\n{trailer}")

    def zfs_commands(self) -> dict[str, Callable[[Sequence[str]], int]]:
        return {
            "set": self.set,
            "inherit": self.inherit,
            "create": self.create,
            "destroy": self.destroy,
            "snapshot": self.snapshot,
            "bookmark": self.bookmark,
            "clone": self.clone,
            "promote": self.promote,
            "rename": self.rename,
            "rollback": self.rollback,
            "diff": self.diff,
            "load-key": self.load_key,
            "unload-key": self.unload_key,
            "change-key": self.change_key,
        }

    # -- properties ---------------------------------------------------------------------------
    def set(self, args: Sequence[str]) -> int:
        _, operands = opts("set", args, "u")
        assignments = [a for a in operands if "=" in a and "@" not in a.partition("=")[0]]
        targets = operands[len(assignments) :]
        if not assignments:
            raise Usage("missing property=value argument(s)")
        if not targets:
            raise Usage("missing dataset name(s)")
        props = prop_pairs(assignments, "set")
        for name in targets:
            rules.validate_any(name, existing=True)
        for name in targets:
            self.doing("set property for", name)
            try:
                self.backend.set(name, props)
            except InvalidOperation as exc:
                # zfs set's callback returns -1 for a refused property or value: exit 255
                # (checked on OpenZFS 2.3.2); a missing dataset still exits 1
                self.err(render(exc, self.ctx, self.backend)[0])
                return EXIT_SET_REFUSED
        return 0

    def inherit(self, args: Sequence[str]) -> int:
        found, operands = opts("inherit", args, "rS")
        if len(operands) < 2:
            raise Usage("missing property argument" if not operands else "missing dataset argument")
        prop, targets = operands[0], operands[1:]
        if not is_property(prop):
            raise Usage(f"invalid property '{prop}'")
        for name in targets:
            rules.validate_any(name, existing=True)
        from workers.zfs.front_list import collect

        kinds = {ObjType.FILESYSTEM, ObjType.VOLUME}
        for name in targets:
            self.doing("open", name)
            below = collect(self, [name], kinds, None if "-r" in found else 0)
            for subject in [o.name for o in below] or [name]:
                self.doing("inherit property for", subject)
                self.backend.inherit(subject, prop)
        return 0

    # -- datasets -----------------------------------------------------------------------------
    def create(self, args: Sequence[str]) -> int:
        found, operands = opts("create", args, "pusPnvo:V:b:")
        if len(operands) != 1:
            raise Usage("missing filesystem argument" if not operands else "too many arguments")
        name = operands[0]
        props = prop_pairs(found.get("-o", []), "create")
        volsize = None
        if "-V" in found:
            from workers.zfs.front_table import parse_size

            try:
                volsize = parse_size(found["-V"][-1])
            except ConfigError as exc:
                # zfs_do_create: "bad volume size '%s': %s", then exit 1 (no usage)
                self.err(f"bad volume size '{found['-V'][-1]}': {exc}")
                return EXIT_FAILURE
        if "-b" in found:
            props["volblocksize"] = found["-b"][-1]
        self.doing("create", name)
        rules.validate_dataset(name)
        if "-p" not in found and not self._parent_exists(name):
            return EXIT_FAILURE
        if "-n" in found:
            return 0
        key = None
        if "keyformat" in props and props.get("keylocation", "prompt") == "prompt":
            key = self.stdin.read()  # not a terminal here: zfs reads the new key from stdin
        self.backend.create(
            name, props=props or None, volsize=volsize, parents="-p" in found, key=key
        )
        return 0

    def _parent_exists(self, name: str) -> bool:
        """libzfs's check_parents: say which part is missing ("no such pool", "parent...")."""
        parent = name.rpartition("/")[0]
        if not parent or self.backend.exists(parent):
            return True
        pool = rules.pool_of(name)
        if pool not in {p.name for p in self.backend.pools()}:
            self.err(f"cannot create '{name}': no such pool '{pool}'")
        else:
            self.err(f"cannot create '{name}': parent does not exist")
        return False

    def opened(self, name: str, command: str) -> bool:
        """zfs_open before the work: a missing one is "cannot open", and (for some) usage."""
        if self.backend.exists(name):
            return True
        self.err(f"cannot open '{name}': dataset does not exist")
        if command:
            self.usage("zfs", command)
        return False

    def destroy(self, args: Sequence[str]) -> int:
        found, operands = opts("destroy", args, "dfnprRv")
        if len(operands) != 1:
            raise Usage("missing dataset argument" if not operands else "too many arguments")
        target = operands[0]
        dataset, sep, shorts = target.partition("@")
        victims = [f"{dataset}@{s}" for s in shorts.split(",")] if sep else [target]
        recursive = "-r" in found or "-R" in found
        for name in victims:
            self.doing("destroy", name)
            if "%" not in name:
                rules.validate_any(name, existing=True)
        if sep:
            if not self.opened(dataset, ""):
                return EXIT_FAILURE
            victims = self._snapshots_to_destroy(dataset, shorts.split(","), recursive)
            if not victims:
                # zfs_do_destroy: gather_snapshots found none of the names
                self.err("could not find any snapshots to destroy; check snapshot names.")
                return EXIT_FAILURE
        if "-n" in found:
            for name in victims:
                self.out(f"would destroy {name}\n")
            return 0
        for name in victims:
            self.doing("destroy", name)
            if "#" in name and not self.backend.exists(name):
                self.err(f"bookmark '{name}' does not exist.")  # zfs_do_destroy's own words
                return EXIT_FAILURE
            if "-R" in found:
                self._destroy_dependents(name)
            elif "@" in name and recursive and "-d" not in found:
                self._name_cloned(name)
            self.backend.destroy(name, recursive=recursive, defer="-d" in found)
        return 0

    def _snapshots_to_destroy(
        self, dataset: str, parts: Sequence[str], recursive: bool
    ) -> list[str]:
        """``ds@a,b%c``: the snapshots named, a range ``b%c`` (either end open) in creation
        order; with ``-r`` a name counts if a descendant has it."""
        objects = self.backend.list(dataset)
        own = [o.name.split("@", 1)[1] for o in objects if o.dataset == dataset and "@" in o.name]
        present = {o.name.split("@", 1)[1] for o in objects if "@" in o.name}
        chosen: list[str] = []
        for part in parts:
            first, pct, last = part.partition("%")
            if pct:
                if (first and first not in own) or (last and last not in own):
                    continue
                start = own.index(first) if first else 0
                end = own.index(last) if last else len(own) - 1
                chosen += own[start : end + 1]
            elif part in own or (recursive and part in present):
                chosen.append(part)
        return [f"{dataset}@{short}" for short in dict.fromkeys(chosen)]

    def _name_cloned(self, name: str) -> None:
        """``destroy -r ds@s``: a refusal names the snapshot (maybe a descendant's) with clones."""
        dataset, short = name.split("@", 1)
        origins = {o.origin for o in self.backend.list(None) if o.origin}
        for obj in self.backend.list(dataset):
            if obj.name.endswith(f"@{short}") and obj.name in origins:
                self.doing("destroy", obj.name)
                return

    def _destroy_dependents(self, name: str) -> None:
        """``-R``: first destroy the clones of every snapshot being destroyed, recursively."""
        doomed = {o.name for o in self.backend.list(name.split("@", maxsplit=1)[0])}
        if "@" in name:
            short = name.split("@", 1)[1]
            doomed = {n for n in doomed if n.endswith(f"@{short}")}
        everything = self.backend.list(None)
        for clone in (o for o in everything if o.origin in doomed):
            if any(o.name == clone.name for o in self.backend.list(None)):
                self._destroy_dependents(clone.name)
                self.backend.destroy(clone.name, recursive=True)

    def snapshot(self, args: Sequence[str]) -> int:
        found, operands = opts("snapshot", args, "ro:")
        if not operands:
            raise Usage("missing snapshot argument")
        for name in operands:
            self.doing("create snapshot", name)
            rules.validate_snapshot(name)
        for name in operands:
            if not self.opened(name.split("@", 1)[0], "snapshot"):
                return EXIT_USAGE
        self.doing("create snapshot", operands[0])
        props = prop_pairs(found.get("-o", []), "snapshot")
        self.backend.snapshot(operands, recursive="-r" in found, props=props or None)
        return 0

    def clone(self, args: Sequence[str]) -> int:
        found, operands = opts("clone", args, "po:")
        if len(operands) != 2:
            raise Usage("missing source dataset argument" if not operands else "wrong arguments")
        snapshot, target = operands
        self.doing("create", target)
        rules.validate_snapshot(snapshot, existing=True)
        rules.validate_dataset(target)
        props = prop_pairs(found.get("-o", []), "clone")
        if not self.opened(snapshot, ""):
            return EXIT_FAILURE
        if "-p" not in found and not self._parent_exists(target):
            return EXIT_FAILURE
        if "-p" in found and "/" in target:
            parent = target.rsplit("/", 1)[0]
            if not self.backend.exists(parent):
                self.backend.create(parent, parents=True)
        self.backend.clone(snapshot, target, props=props or None)
        return 0

    def promote(self, args: Sequence[str]) -> int:
        _, operands = opts("promote", args, "")
        if len(operands) != 1:
            raise Usage("missing clone filesystem argument")
        self.doing("promote", operands[0])
        rules.validate_dataset(operands[0], existing=True)
        self.backend.promote(operands[0])
        return 0

    def rename(self, args: Sequence[str]) -> int:
        found, operands = opts("rename", args, "fpru")
        if len(operands) != 2:
            raise Usage("missing source dataset argument" if not operands else "wrong arguments")
        old, new = operands
        if new.startswith("@"):
            new = old.split("@", 1)[0] + new
        self.doing("rename to", new)
        rules.validate_any(old, existing=True)
        rules.validate_any(new)
        if "-r" in found and "@" in old and self.backend.exists(old):
            # the snapshot of that name on every descendant too (zfs_rename, recursive)
            dataset, short = old.split("@", 1)
            fresh = new.split("@", 1)[1]
            for obj in self.backend.list(dataset):
                if obj.name.endswith(f"@{short}") and obj.name != old:
                    self.backend.rename(obj.name, f"{obj.dataset}@{fresh}")
        self.backend.rename(old, new)
        return 0

    def rollback(self, args: Sequence[str]) -> int:
        found, operands = opts("rollback", args, "rRf")
        if len(operands) != 1:
            raise Usage("missing dataset argument" if not operands else "too many arguments")
        self.doing("rollback", operands[0])
        rules.validate_snapshot(operands[0], existing=True)
        newer = "-r" in found or "-R" in found
        self.backend.rollback(operands[0], destroy_newer=newer)
        return 0

    def bookmark(self, args: Sequence[str]) -> int:
        _, operands = opts("bookmark", args, "")
        if len(operands) != 2:
            raise Usage("wrong number of arguments")
        source, mark = operands
        if mark.startswith("#"):
            mark = source.split("@", 1)[0].split("#", 1)[0] + mark
        self.doing("create bookmark", mark)
        # the source is a snapshot, or (OpenZFS 2.0 on) another bookmark of the same dataset
        if "#" in source:
            rules.validate_bookmark(source)
        else:
            rules.validate_snapshot(source, existing=True)
        if mark.count("#") + mark.count("@") > 1:
            # passed to the ioctl as is, which refuses it (EINVAL)
            self.err(f"cannot create bookmark '{mark}': invalid argument")
            return EXIT_FAILURE
        rules.validate_bookmark(mark)
        if not self.opened(source, "bookmark"):
            return EXIT_USAGE
        if not self.backend.exists(mark.split("#", 1)[0]):
            # the ioctl finds the new bookmark's dataset missing (ENOENT) before anything else
            self.err(f"cannot create bookmark '{mark}': dataset does not exist")
            return EXIT_FAILURE
        if self.backend.exists(mark):
            self.err(f"cannot create bookmark '{mark}': bookmark exists")
            return EXIT_FAILURE
        self.backend.bookmark(source, mark)
        return 0

    # -- diff and keys --------------------------------------------------------------------------
    def diff(self, args: Sequence[str]) -> int:
        found, operands = opts("diff", args, "FHth")
        if len(operands) not in (1, 2):
            raise Usage("must provide at least one snapshot name")
        snapshot = operands[0]
        other = operands[1] if len(operands) == 2 else snapshot.split("@", 1)[0]
        if other.startswith("@"):
            other = snapshot.split("@", 1)[0] + other
        self.doing("diff", snapshot)
        rules.validate_snapshot(snapshot, existing=True)
        rules.validate_any(other, existing=True)
        for entry in self.backend.diff(snapshot, other):
            path = escape_path(entry.path)
            if entry.new_path is not None:
                sep = "\t" if "-H" in found else " -> "
                path += sep + escape_path(entry.new_path)
            self.out(f"{entry.change.value}\t{path}\n")
        return 0

    def _key_targets(self, found: dict[str, list[str]], operands: Sequence[str]) -> list[str]:
        if "-a" in found:
            # keys are loaded and unloaded on encryption roots only
            return [o.name for o in self.backend.list(None) if o.encryption not in (None, "off")
                    and o.type in (ObjType.FILESYSTEM, ObjType.VOLUME)
                    and self.backend.get(o.name, ["encryptionroot"])["encryptionroot"].value
                    == o.name]  # fmt: skip
        if len(operands) != 1:
            raise Usage("missing dataset argument")
        rules.validate_dataset(operands[0], existing=True)
        return [operands[0]]

    def load_key(self, args: Sequence[str]) -> int:
        found, operands = opts("load-key", args, "rnaL:")
        location = found.get("-L", [None])[-1]
        key: bytes | None = None
        if location == "prompt":
            key = self.stdin.read()
        elif location is not None and location.startswith("file://"):
            try:
                key = Path(location[len("file://") :]).read_bytes()
            except OSError as exc:
                raise ConfigError(f"Failed to open key material file: {exc.strerror}") from None
        elif location is not None:
            raise Usage(f"invalid keylocation '{location}'")
        for name in self._key_targets(found, operands):
            self.doing("load key for", name)
            if "-n" not in found:
                self.backend.load_key(name, key=key)
        return 0

    def unload_key(self, args: Sequence[str]) -> int:
        found, operands = opts("unload-key", args, "ra")
        for name in self._key_targets(found, operands):
            self.doing("unload key for", name)
            self.backend.unload_key(name)
        return 0

    def change_key(self, args: Sequence[str]) -> int:
        found, operands = opts("change-key", args, "lio:")
        if len(operands) != 1:
            raise Usage("missing dataset argument" if not operands else "too many arguments")
        name = operands[0]
        rules.validate_dataset(name, existing=True)
        props = prop_pairs(found.get("-o", []), "change-key")
        inherit = "-i" in found
        if inherit and props:
            raise Usage("Properties not allowed for inheriting")
        self.doing("change key for", name)
        if "-l" in found:
            status = self.backend.get(name, ["keystatus", "encryptionroot"])
            if status["keystatus"].value == "unavailable":
                self.backend.load_key(status["encryptionroot"].value)
        key: bytes | None = None
        if not inherit:
            location = props.get("keylocation")
            if location is None:
                current = self.backend.get(name, ["keylocation", "encryptionroot"])
                is_root = current["encryptionroot"].value == name
                location = current["keylocation"].value if is_root else "prompt"
            if location == "prompt":
                # not a terminal here: zfs reads the new key from stdin as it is
                key = self.stdin.read()
        self.backend.change_key(name, key=key, props=props, inherit=inherit)
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _term_interrupts() -> signal.Handlers | Callable[[int, FrameType | None], object] | int | None:
    """SIGTERM stops a command the way Ctrl-C does (a receive keeps what arrived, with -s).

    Only the main thread may set handlers; elsewhere (a test's thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def main(argv: Sequence[str] | None = None, *, backend: ZfsBackend | None = None) -> int:
    """``main(["zfs", "list"])``: run one command on the standard streams; the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m workers.zfs.front zfs|zpool command args ...\n")
        return EXIT_USAGE
    # zfs prints no chatter, and stdout may carry a send stream: logs go to stderr, warnings up
    configure_logging(level=os.environ.get(LOG_LEVEL_ENV, "WARNING"), stream=sys.stderr)
    try:
        chosen = backend if backend is not None else open_sim(sim_root())
    except ZfleetError as exc:
        sys.stderr.write(f"cannot open the simulated pools: {exc}\n")
        return EXIT_FAILURE
    front = Front(
        chosen,
        stdin=sys.stdin.buffer,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr,
        stdout_is_tty=sys.stdout.isatty(),
    )
    previous = _term_interrupts()
    try:
        return front.run(args[0], args[1:])
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # zfs dies of the signal without a word; so do we, and no trace
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            # the reader went away (`zfs list | head`); say nothing more, as zfs does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    # run as `python -m workers.zfs.front`, this file is __main__; front_list and friends raise
    # workers.zfs.front.Usage, which only that module's main catches
    from workers.zfs.front import main as imported_main

    sys.exit(imported_main())
