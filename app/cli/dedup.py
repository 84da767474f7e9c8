"""`zfleet dedup analyze`: how much a collection of images would shrink re-based on common bases.

Runs on one host's ZFS: the local simulation ($ZFLEET_SIM_ROOT, as `zfleet sim zfs`), or with
`--host NAME -c fleet.toml` the backend the fleet config gives that host. With `--from-streams`
the arguments are send-stream files instead of datasets. The work is in workers.dedup; this
module only turns arguments into sources and the analysis into a table, JSON or a picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import click

from app.cli.common import (
    cli_errors,
    config_option,
    human_bytes,
    json_option,
    print_json,
)
from protocol.errors import ConfigError
from workers.dedup import DEFAULT_K, DEFAULT_THRESHOLD, Analysis, RecordSet, analyze
from workers.dedup.analyze import summarize_all
from workers.zfs.base import ZfsBackend


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dedup() -> None:
    """Find look-alike datasets and what re-basing them on common bases would save."""


def host_backend(host: str | None, config_path: Path | None) -> ZfsBackend:
    """The local simulation, or (``host`` with a fleet config) the backend of that host."""
    if host is None:
        from workers.zfs.front import open_sim, sim_root

        return open_sim(sim_root())
    if config_path is None:
        raise ConfigError("--host needs the fleet config (-c FILE or $ZFLEET_FLEET_CONFIG)")
    from coordinator.config import load_config

    fleet = load_config(config_path)
    found = fleet.hosts.get(host)
    if found is None:
        raise ConfigError(f"host {host!r} is not in {config_path} (hosts: {sorted(fleet.hosts)})")
    if found.backend == "sim":
        from workers.zfs.sim import SimBackend

        assert found.sim_root is not None  # the config refuses a sim host without one
        return SimBackend(found.sim_root)
    from workers.zfs.real import RealBackend

    return RealBackend(found.exec_prefix)


def analyze_names(backend: ZfsBackend, names: tuple[str, ...] | list[str], *,
                  threshold: float = DEFAULT_THRESHOLD) -> Analysis:  # fmt: skip
    """The analysis `zfleet rebase --optimize` starts from: datasets or a pool, read on
    ``backend``, clusters from exact record sets or sketches, then read again for exact bases."""
    from workers.dedup.refine import reread
    from workers.dedup.sources import expand, read_source

    sources = expand(backend, list(names))
    items = ((s.dataset, s.snapshot, read_source(backend, s)) for s in sources)
    summaries = summarize_all(items, method="auto", k=DEFAULT_K, count=len(sources))
    result = analyze(summaries, threshold=threshold)
    return reread(result, lambda i: read_source(backend, sources[i]))


def _table(analysis: Analysis) -> str:
    p = analysis.proposal
    rows = [("cluster", "dataset", "role", "unique", "shared w/ base", "after")]
    for number, cluster in enumerate(p.clusters, 1):
        rows.append(
            (str(number), cluster.base, "base", human_bytes(cluster.base_bytes), "-",
             human_bytes(cluster.base_bytes))
        )  # fmt: skip
        for m in cluster.members:
            rows.append(
                (str(number), m.dataset, "member", human_bytes(m.bytes_now),
                 human_bytes(m.shared_with_base), human_bytes(m.bytes_after))
            )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]  # fmt: skip
    estimate = {
        "sketch": " (estimates from sketches)",
        "sketch+reread": " (clusters from sketches; figures exact but the lower bound)",
    }.get(p.method, "")
    ratio = p.bytes_now / p.bytes_after if p.bytes_after else 1.0
    lines += [
        "",
        f"datasets: {len(analysis.summaries)}, clusters: {len(p.clusters)}, "
        f"threshold: {p.threshold}, method: {p.method}{estimate}",
        f"logical (files as written): {human_bytes(analysis.logical)}",
        f"now (each dataset alone):   {human_bytes(p.bytes_now)}",
        f"after the proposed rebase:  {human_bytes(p.bytes_after)}  ({ratio:.2f}x smaller)",
        f"record-level lower bound:   {human_bytes(p.lower_bound)}",
    ]
    return "\n".join(lines)


@dedup.command("analyze")
@click.argument("names", nargs=-1, required=True)
@click.option("--host", help="Analyse on this fleet host (needs -c). Default: the local sim.")
@config_option(required=False)
@click.option(
    "--from-streams", "from_streams", is_flag=True,
    help="NAMES are send-stream files (full, incremental chains, -R/-I, clones after origins).",
)  # fmt: skip
@json_option
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the similarity heatmap here.")  # fmt: skip
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Least similarity (shared / union bytes) to join a base.")  # fmt: skip
@click.option("--method", type=click.Choice(["auto", "exact", "sketch"]), default="auto",
              show_default=True,
              help="Exact record sets or bottom-k sketches (auto: sketch above 64).")  # fmt: skip
@click.option("--sketch-size", "k", type=int, default=DEFAULT_K, show_default=True,
              help="Records kept per dataset by a sketch.")  # fmt: skip
@click.option("--reread/--no-reread", default=True, show_default=True,
              help="After sketching, read clusters again for exact figures and bases.")  # fmt: skip
def analyze_cmd(
    names: tuple[str, ...],
    *,
    host: str | None,
    config_path: Path | None,
    from_streams: bool,
    as_json: bool,
    svg_path: Path | None,
    threshold: float,
    method: str,
    k: int,
    reread: bool,
) -> None:
    """Fingerprint datasets' 128 KiB records, cluster look-alikes, propose a base per cluster.

    \b
    NAMES: snapshots (pool/img@s1), datasets (pool/img: the files under its mountpoint) or a
    pool (every leaf dataset in it; a volume by its newest snapshot).
    \b
    Figures: now (each dataset's distinct records), after the proposed rebase (each member a
    clone of its cluster's base), and the record-level lower bound (each distinct record once).
    \b
    Examples:
      zfleet dedup analyze tank --svg dedup.svg
      zfleet dedup analyze tank/img/a@s1 tank/img/b@s1 --json
      zfleet dedup analyze --from-streams base.zstream app.zstream
    """
    with cli_errors():
        if from_streams:
            if host is not None:
                raise ConfigError("--from-streams reads files: --host does not apply")
            from workers.dedup.streams import read_streams

            found = read_streams(names)
            items: Iterator[tuple[str, str | None, RecordSet]] = iter(
                [(d.dataset, d.snapshot, d.records) for d in found]
            )
            count = len(found)
            read_again: Callable[[int], RecordSet] = lambda i: found[i].records  # noqa: E731
        else:
            from workers.dedup.sources import expand, read_source

            backend = host_backend(host, config_path)
            sources = expand(backend, names)
            items = ((s.dataset, s.snapshot, read_source(backend, s)) for s in sources)
            count = len(sources)
            read_again = lambda i: read_source(backend, sources[i])  # noqa: E731
        summaries = summarize_all(items, method=method, k=k, count=count)
        result = analyze(summaries, threshold=threshold)
        if reread:
            from workers.dedup.refine import reread as second_pass

            result = second_pass(result, read_again)
        if svg_path is not None:
            from workers.dedup.svg import heatmap

            try:
                svg_path.write_text(heatmap(result), encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot write {svg_path}: {exc.strerror}") from exc
        if as_json:
            data = result.proposal.to_dict()
            data["logical"] = result.logical
            data["datasets"] = [
                {"dataset": s.dataset, "snapshot": s.snapshot, "records": s.records,
                 "distinct": s.distinct, "unique": s.unique, "logical": s.logical}
                for s in result.summaries
            ]  # fmt: skip
            print_json(data)
        else:
            click.echo(_table(result))
            if svg_path is not None:
                click.echo(f"heatmap: {svg_path}")

