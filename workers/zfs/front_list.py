"""`zfs list` and `zfs get` for the front end: which objects, which values, which order.

zfs's rules: without operands every pool; ``-r``/``-d N`` go down (a snapshot is one level
below its dataset); snapshots show only when asked for (``-t``) or named; rows come in tree
order, each dataset followed by its snapshots in creation order, unless ``-s``/``-S`` sort them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocol import names as rules
from protocol.errors import DatasetNotFound, ZfleetError
from workers.zfs.base import ObjType, ZfsObject
from workers.zfs.front import DEFAULT_LIST, GET_FIELDS, TYPE_NAMES, Front, Usage, opts
from workers.zfs.front_table import (
    ALIASES,
    NUMERIC_PROPS,
    header,
    humanize,
    is_property,
    table,
)


def commands(front: Front) -> dict[str, Callable[[Sequence[str]], int]]:
    """``zfs list`` and ``zfs get``, bound to one front-end invocation."""
    return {
        "list": lambda args: list_objects(front, args),
        "get": lambda args: get(front, args),
    }


def tree_key(obj: ZfsObject) -> tuple[list[str], int, int]:
    """zfs list's default order: by dataset path, a dataset's snapshots right after it."""
    kind = {ObjType.SNAPSHOT: 1, ObjType.BOOKMARK: 2}.get(obj.type, 0)
    return obj.dataset.split("/"), kind, obj.createtxg


def depth_below(obj: ZfsObject, root: str) -> int:
    """How far below ``root`` an object is, counting a snapshot as one level (zfs -d)."""
    extra = 0 if obj.type in (ObjType.FILESYSTEM, ObjType.VOLUME) else 1
    return obj.dataset.count("/") - root.count("/") + extra


def _not_found(name: str) -> ZfleetError:
    return DatasetNotFound(f"{name}: dataset does not exist")


def _sortable(prop: str, value: str) -> tuple[int, int, str]:
    """Numbers sort as numbers ("-" first), everything else as text."""
    if ALIASES.get(prop, prop) in NUMERIC_PROPS or value.isdigit():
        return (0, int(value), "") if value.isdigit() else (0, -1, value)
    return (1, 0, value)


def _types(found: dict[str, list[str]], default: tuple[ObjType, ...]) -> set[ObjType]:
    if "-t" not in found:
        return set(default)
    types: set[ObjType] = set()
    for value in found["-t"]:
        for word in value.split(","):
            if word not in TYPE_NAMES:
                raise Usage(f"invalid type '{word}'")
            types.update(TYPE_NAMES[word])
    return types


def _depth(found: dict[str, list[str]]) -> int | None:
    if "-d" in found:
        value = found["-d"][-1]
        if not value.isdigit():
            raise Usage(f"invalid depth '{value}'")
        return int(value)
    return None if "-r" in found else 0


def collect(
    front: Front, operands: Sequence[str], types: set[ObjType], depth: int | None
) -> list[ZfsObject]:
    """The objects ``zfs list``/``get`` act on: operands (all pools if none) to ``depth``."""
    if not operands:
        objects = front.backend.list(None)
        if depth is not None:
            objects = [o for o in objects if depth_below(o, o.name.split("/")[0]) <= depth]
        return sorted((o for o in objects if o.type in types), key=tree_key)
    result: dict[str, ZfsObject] = {}
    for name in operands:
        rules.validate_any(name, existing=True)
        front.doing("open", name)
        if "@" in name or "#" in name or depth == 0:
            # as zfs: a named snapshot alone; a dataset alone, or with only -t snapshot its
            # own snapshots (the backend contract follows `zfs list` here)
            found = front.backend.list(name, recursive=False, types=sorted(types))
            result.update((o.name, o) for o in found)
            continue
        for obj in front.backend.list(name, recursive=True):
            if depth is None or depth_below(obj, name) <= depth:
                result[obj.name] = obj
    return sorted((o for o in result.values() if o.type in types), key=tree_key)


def value(front: Front, obj: ZfsObject, prop: str) -> str:
    """One property of one object as ``-p`` prints it."""
    prop = ALIASES.get(prop, prop)
    direct = {
        "name": obj.name,
        "type": obj.type.value,
        "guid": str(obj.guid),
        "createtxg": str(obj.createtxg),
        "creation": str(obj.creation),
        "origin": obj.origin or "-",
        "used": str(obj.used),
        "referenced": str(obj.referenced),
        "written": str(obj.written),
        "receive_resume_token": obj.receive_resume_token or "-",
        "encryption": obj.encryption or "off",
        "keystatus": obj.keystatus or "-",
    }
    if prop in direct:
        return direct[prop]
    if ":" in prop and prop in obj.user_props:
        return obj.user_props[prop]
    got = front.backend.get(obj.name, [prop]).get(prop)
    return got.value if got is not None else "-"


def list_objects(front: Front, args: Sequence[str]) -> int:
    found, operands = opts("list", args, "Hprd:o:t:s:S:")
    parsable = "-p" in found
    snaps_named = any("@" in o or "#" in o for o in operands)
    default = (ObjType.FILESYSTEM, ObjType.VOLUME) + ((ObjType.SNAPSHOT,) if snaps_named else ())
    types = _types(found, default)
    if snaps_named and "-t" in found:
        types |= {ObjType.SNAPSHOT, ObjType.BOOKMARK}
    props = [p for v in found.get("-o", []) for p in v.split(",")] or list(DEFAULT_LIST)
    for prop in props:
        if not is_property(prop):
            raise Usage(f"bad property list: invalid property '{prop}'")
    for key in (*found.get("-s", []), *found.get("-S", [])):
        if not is_property(key):
            raise Usage(f"invalid property '{key}'")
    depth = _depth(found) if operands or "-d" in found else None
    objects = collect(front, operands, types, depth)
    if not objects and not operands:
        front.err("no datasets available")
        return 0
    rows = [[value(front, o, p) for p in props] for o in objects]
    for flag, reverse in (("-s", False), ("-S", True)):
        for key in reversed(found.get(flag, [])):
            if key not in props:
                props_index = None
                values = [value(front, o, key) for o in objects]
            else:
                props_index = props.index(key)
                values = [r[props_index] for r in rows]
            order = sorted(range(len(rows)), key=lambda i: _sortable(key, values[i]),
                           reverse=reverse)  # fmt: skip
            rows = [rows[i] for i in order]
            objects = [objects[i] for i in order]
    shown = [[humanize(p, v, parsable=parsable) for p, v in zip(props, r, strict=True)]
             for r in rows]  # fmt: skip
    right = [ALIASES.get(p, p) in NUMERIC_PROPS - {"creation"} for p in props]
    front.out(table([header(p) for p in props], shown, scripted="-H" in found, right=right))
    return 0


def get(front: Front, args: Sequence[str]) -> int:
    found, operands = opts("get", args, "Hprd:o:s:t:")
    if not operands:
        raise Usage("missing property argument")
    wanted = operands[0].split(",")
    for prop in wanted:
        if prop != "all" and not is_property(prop):
            raise Usage(f"bad property list: invalid property '{prop}'")
    fields = [f for v in found.get("-o", []) for f in v.split(",")] or list(GET_FIELDS)
    for field in fields:
        if field not in (*GET_FIELDS, "received"):
            raise Usage(f"invalid field '{field}'")
    sources = {s for v in found.get("-s", []) for s in v.split(",")}
    types = _types(found, tuple(ObjType))
    depth = _depth(found) if operands[1:] or "-d" in found else None
    objects = collect(front, operands[1:], types, depth)
    rows = []
    for obj in objects:
        front.doing("get", obj.name)
        props = front.backend.get(obj.name, None if wanted == ["all"] else wanted)
        order = list(props) if wanted == ["all"] else wanted
        for prop in order:
            got = props.get(prop)
            value, source = (got.value, got.source) if got else ("-", "-")
            if sources and source.split(" ")[0] not in sources:
                continue
            cells = {
                "name": obj.name,
                "property": prop,
                "value": humanize(prop, value, parsable="-p" in found),
                "received": "-",
                "source": source,
            }
            rows.append([cells[f] for f in fields])
    front.out(table([f.upper() for f in fields], rows, scripted="-H" in found))
    return 0
