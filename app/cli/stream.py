"""`zfleet stream`: look inside ZFS send streams and resume tokens.

`zfleet stream dump FILE|-` reads a stream (from a file or standard input) record by record,
verifying its checksums, and prints each BEGIN and the per-type totals as `zstream dump` does;
`--json` prints the same for scripts. `zfleet stream token TOKEN` decodes a receive resume token.
Bad input exits 1 with one line on standard error saying what is wrong and where.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, Final

import click

from protocol.errors import StreamError, TokenError
from protocol.stream import BeginInfo, StreamSummary, decode_resume_token, summarize
from protocol.stream.token import FLAG_NAMES
from protocol.stream.types import HeaderType

# the order zstream dump prints its summary in; OBJECT_RANGE and REDACT follow
_SUMMARY_ORDER: Final = (
    "DRR_BEGIN", "DRR_END", "DRR_OBJECT", "DRR_FREEOBJECTS", "DRR_WRITE", "DRR_WRITE_BYREF",
    "DRR_WRITE_EMBEDDED", "DRR_FREE", "DRR_SPILL", "DRR_OBJECT_RANGE", "DRR_REDACT",
)  # fmt: skip


_STDIN: Final = "-"


def _fail(message: str) -> None:
    click.echo(f"zfleet stream: {message}", err=True)
    sys.exit(1)


@click.group()
def stream() -> None:
    """Inspect ZFS send streams and resume tokens (works on both real and simulated ZFS)."""


@stream.command()
@click.argument("source", metavar="FILE|-")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.option("--no-verify", is_flag=True, help="Skip the fletcher-4 checksum verification.")
def dump(source: str, as_json: bool, no_verify: bool) -> None:
    """Summarise the send stream in FILE ('-' reads standard input).

    Shows the BEGIN record of every (sub-)stream (guids, name, flags, features), the number of
    records and payload bytes of each type, the total length and whether every checksum
    matched. Exit status 1 means the stream is damaged, truncated or not a send stream.

    \b
    Examples:
      zfs send pool/fs@snap | zfleet stream dump -
      zfleet stream dump --json backup.zstream | jq .records.DRR_WRITE
    """
    try:
        if source == _STDIN:
            summary = summarize(sys.stdin.buffer, verify=not no_verify)
        else:
            with open(source, "rb") as fp:
                summary = summarize(fp, verify=not no_verify)
    except OSError as exc:
        _fail(f"cannot read {source}: {exc.strerror or exc}")
        return
    except StreamError as exc:
        _fail(f"{source}: {exc}")
        return
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(_render(summary), nl=False)


def _render(summary: StreamSummary) -> str:
    # BEGINs and ENDs in stream order, as zstream dump prints them
    events: list[tuple[int, list[str]]] = [(b.index, _render_begin(b)) for b in summary.begins]
    for index, end in zip(summary.end_indices, summary.end_checksums, strict=True):
        events.append((index, ["END checksum = " + "/".join(f"{w:x}" for w in end)]))
    lines: list[str] = []
    for _, block in sorted(events, key=lambda e: e[0]):
        lines += block
    lines.append("SUMMARY:")
    for name in _SUMMARY_ORDER:
        t = summary.records[name]
        lines.append(f"\tTotal {name} records = {t.count} ({t.payload_bytes} bytes)")
    lines += [
        f"\tTotal records = {summary.total_records}",
        f"\tTotal payload size = {summary.total_payload} (0x{summary.total_payload:x})",
        f"\tTotal header overhead = {summary.header_overhead} (0x{summary.header_overhead:x})",
        f"\tTotal stream length = {summary.total_length} (0x{summary.total_length:x})",
        "\tChecksums = " + ("all verified" if summary.checksums_verified else "not checked"),
    ]
    return "\n".join(lines) + "\n"


def _render_begin(b: BeginInfo) -> list[str]:
    kind = "compound" if b.hdrtype == HeaderType.COMPOUNDSTREAM else "substream"
    created = ""
    if b.creation_time:
        created = f" ({dt.datetime.fromtimestamp(b.creation_time, dt.UTC):%Y-%m-%d %H:%M:%S} UTC)"
    lines = [
        f"BEGIN record (record {b.index}, offset {b.offset})",
        f"\thdrtype = {b.hdrtype} ({kind})",
        f"\tfeatures = {b.features:x} ({', '.join(b.feature_names) or 'none'})",
        f"\tmagic = {b.magic:x}",
        f"\tcreation_time = {b.creation_time:x}{created}",
        f"\ttype = {b.type}",
        f"\tflags = 0x{b.flags:x}",
        f"\ttoguid = {b.toguid:x}",
        f"\tfromguid = {b.fromguid:x}",
        f"\ttoname = {b.toname}",
        f"\tpayloadlen = {len(b.payload)}",
    ]
    if b.nvlist is not None:
        lines += _render_nvlist(b.nvlist.to_python(), 1)
    return lines


def _render_nvlist(value: dict[str, Any], depth: int) -> list[str]:
    pad = "\t" * depth
    lines = []
    for key, v in value.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{key} = (embedded nvlist)")
            lines += _render_nvlist(v, depth + 1)
        elif isinstance(v, int) and not isinstance(v, bool):
            lines.append(f"{pad}{key} = 0x{v:x}")
        else:
            lines.append(f"{pad}{key} = {v}")
    return lines


@stream.command()
@click.argument("token_text", metavar="TOKEN|-")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def token(token_text: str, as_json: bool) -> None:
    """Decode a receive resume token (`zfs get -H -o value receive_resume_token DATASET`).

    Shows the snapshot being received, how far the receive got (object, offset, bytes) and the
    send flags the resumed stream must use. '-' reads the token from standard input.
    """
    text = sys.stdin.read() if token_text == _STDIN else token_text
    try:
        decoded = decode_resume_token(text)
    except TokenError as exc:
        _fail(str(exc))
        return
    fields: dict[str, Any] = {"fromguid": decoded.fromguid} if decoded.fromguid else {}
    fields |= {
        "object": decoded.object,
        "offset": decoded.offset,
        "bytes": decoded.bytes,
        "toguid": decoded.toguid,
        "toname": decoded.toname,
    }
    fields.update({name: getattr(decoded, name) for name in FLAG_NAMES})
    if decoded.extra:
        fields["extra"] = decoded.extra.to_python()
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    click.echo("resume token contents:")
    for key, value in fields.items():
        if isinstance(value, bool):
            if value:
                click.echo(f"\t{key}")
        elif isinstance(value, int):
            click.echo(f"\t{key} = 0x{value:x}")
        else:
            click.echo(f"\t{key} = {value}")
