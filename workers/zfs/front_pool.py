"""`zpool create|destroy|list|get` for the front end.

The backend contract only lists pools; creating and destroying them is something a simulated
backend offers (``create_pool`` / ``destroy_pool``) and real hosts do by hand, so those two ask
the backend whether it can. Device arguments are accepted and ignored: a simulated pool has none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from protocol import names as rules
from protocol.errors import DatasetNotFound, InvalidOperation
from workers.zfs.base import PoolInfo
from workers.zfs.front_table import header, humanize, table

if TYPE_CHECKING:
    from workers.zfs.front import Front

DEFAULT_COLUMNS: Final = (
    "name", "size", "allocated", "free", "ckpoint", "expandsize", "fragmentation", "capacity",
    "dedupratio", "health", "altroot",
)  # fmt: skip
POOL_PROPS: Final = ("name", "size", "allocated", "free", "capacity", "health")
_HEADERS: Final = {"expandsize": "EXPANDSZ", "dedupratio": "DEDUP", "ckpoint": "CKPOINT"}
# zpool aligns every column right but the name and the altroot
_LEFT: Final = frozenset({"name", "altroot"})


def commands(front: Front) -> dict[str, Callable[[Sequence[str]], int]]:
    """The ``zpool`` commands, bound to one front-end invocation."""
    return {
        "create": lambda args: create(front, args),
        "destroy": lambda args: destroy(front, args),
        "list": lambda args: list_pools(front, args),
        "get": lambda args: get(front, args),
    }


def pool_value(pool: PoolInfo, prop: str, *, parsable: bool) -> str:
    """One pool property as ``zpool list``/``get`` prints it."""
    prop = {"alloc": "allocated", "cap": "capacity", "frag": "fragmentation"}.get(prop, prop)
    raw = {
        "name": pool.name,
        "size": str(pool.size),
        "allocated": str(pool.allocated),
        "free": str(pool.free),
        "health": pool.health,
        "capacity": str(pool.allocated * 100 // pool.size) if pool.size else "0",
        "dedupratio": "1.00" if parsable else "1.00x",
    }.get(prop)
    if raw is None:
        return "-"
    if prop == "capacity" and not parsable:
        return f"{raw}%"
    return humanize(prop, raw, parsable=parsable)


def _pools(front: Front, operands: Sequence[str]) -> list[PoolInfo]:
    pools = {p.name: p for p in front.backend.pools()}
    for name in operands:
        if name not in pools:
            front.doing("open", name)
            raise DatasetNotFound(f"cannot open '{name}': no such pool")
    return (
        [pools[n] for n in operands] if operands else sorted(pools.values(), key=lambda p: p.name)
    )


def create(front: Front, args: Sequence[str]) -> int:
    """``zpool create [-o prop=value] [-O fsprop=value] [-m mountpoint] pool [vdev...]``."""
    from workers.zfs.front import Usage, opts, prop_pairs

    found, operands = opts("create", args, "fndo:O:m:R:t:")
    if not operands:
        raise Usage("missing pool name argument")
    name = operands[0]
    front.doing("create", name)
    rules.validate_pool(name)
    fs_props = prop_pairs(found.get("-O", []), "create")
    if "-m" in found:
        fs_props["mountpoint"] = found["-m"][-1]
    make = getattr(front.backend, "create_pool", None)
    if not callable(make):
        raise InvalidOperation("creating pools is not supported by this backend")
    if "-n" in found:
        return 0
    make(name)
    if fs_props:
        front.backend.set(name, fs_props)
    return 0


def destroy(front: Front, args: Sequence[str]) -> int:
    """``zpool destroy [-f] pool``."""
    from workers.zfs.front import Usage, opts

    _, operands = opts("destroy", args, "f")
    if len(operands) != 1:
        raise Usage("missing pool argument" if not operands else "too many arguments")
    name = operands[0]
    front.doing("destroy", name)
    rules.validate_pool(name, existing=True)
    _pools(front, [name])
    remove = getattr(front.backend, "destroy_pool", None)
    if not callable(remove):
        raise InvalidOperation("destroying pools is not supported by this backend")
    remove(name)
    return 0


def list_pools(front: Front, args: Sequence[str]) -> int:
    """``zpool list [-Hp] [-o props] [pool...]``."""
    from workers.zfs.front import opts

    found, operands = opts("list", args, "HpLPgvo:T:")
    parsable = "-p" in found
    columns = [c for v in found.get("-o", []) for c in v.split(",")] or list(DEFAULT_COLUMNS)
    pools = _pools(front, operands)
    if not pools:
        front.err("no pools available")
        return 0
    rows = [[pool_value(p, c, parsable=parsable) for c in columns] for p in pools]
    titles = [_HEADERS.get(c, header(c)) for c in columns]
    right = [c not in _LEFT for c in columns]
    front.out(table(titles, rows, scripted="-H" in found, right=right))
    return 0


def get(front: Front, args: Sequence[str]) -> int:
    """``zpool get [-Hp] [-o fields] props|all [pool...]``."""
    from workers.zfs.front import GET_FIELDS, Usage, opts

    found, operands = opts("get", args, "Hpo:")
    if not operands:
        raise Usage("missing property argument")
    wanted = list(POOL_PROPS) if operands[0] == "all" else operands[0].split(",")
    fields = [f for v in found.get("-o", []) for f in v.split(",")] or list(GET_FIELDS)
    rows = []
    for pool in _pools(front, operands[1:]):
        for prop in wanted:
            value = pool_value(pool, prop, parsable="-p" in found)
            cells = {"name": pool.name, "property": prop, "value": value, "source": "-"}
            rows.append([cells.get(f, "-") for f in fields])
    front.out(table([f.upper() for f in fields], rows, scripted="-H" in found))
    return 0
