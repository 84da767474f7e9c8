"""Record corpus scenarios on real OpenZFS behind an exec prefix (a lab VM).

Each batch of scenarios becomes one bash script run on the host in one ssh call (a TCG guest
starts processes slowly; ssh round trips would dominate). Per scenario the script creates the
scratch root, runs the steps, prints marked sections (exit codes, stdout, stderr, list, props,
files) and destroys the root again (holds released first). The sections become recordings with
the same functions the replay uses, so both sides are normalized alike.

    python -m tests.conformance.corpus_record --count 300 --out tests/fixtures/zfs-corpus/corpus.txt

takes the first host of the lab in ``$ZFLEET_LAB_STATE`` (``zfleet lab up 1``).
"""

from __future__ import annotations

import argparse
import io
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from tests.conformance.corpus import (
    CORPUS_FILE,
    DATA_DIR,
    GET_PROPS,
    LIST_COLUMNS,
    ROOT,
    Normalizer,
    Pipeline,
    Recording,
    Scenario,
    Step,
    data_files,
    files_by_dataset,
    generate,
    observes_props,
    observes_state,
    parse_step,
    state_lines,
    step_lines,
)

SEED: Final = 18
BATCH: Final = 2
HEADER: Final = (
    "# OpenZFS behaviour recorded by tests/conformance/corpus_record.py (format: "
    "tests/conformance/corpus.py)\n"
)

PRELUDE: Final = rf"""
set -u
TAB="$(printf '\t')"
czwrite() {{
  local row m
  row="$(zfs list -H -o mounted,mountpoint "$1" 2>/dev/null)"
  [ "${{row%%$TAB*}}" = yes ] || {{ echo "write: $1 is not mounted" >&2; return 1; }}
  m="${{row#*$TAB}}/$2"
  mkdir -p "${{m%/*}}" && cp "{DATA_DIR}/$3" "$m"
}}
czcat() {{ local l; while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; }}
czstate() {{
  echo '@@list'; zfs list -H -t all -r -o {LIST_COLUMNS} {ROOT} 2>&1
  if [ "$1" = props ]; then
    echo '@@props'; zfs get -H -r -t filesystem,volume -o name,property,value,source \
      {GET_PROPS} {ROOT} 2>&1
  fi
  echo '@@files'; find /{ROOT} -type f -exec sha256sum {{}} + 2>/dev/null
}}
czteardown() {{
  zfs list -H -o name,userrefs -t snapshot -r {ROOT} 2>/dev/null | while read -r s refs; do
    [ "$refs" = 0 ] && continue
    zfs holds -H "$s" | while IFS="$TAB" read -r n t d; do zfs release "$t" "$s"; done
  done
  zfs destroy -R -f {ROOT} >/dev/null 2>&1 || {{ sleep 1; zfs destroy -R -f {ROOT}; }} || \
    echo '@@teardown-failed'
}}
"""


def _word(arg: str) -> str:
    if arg.startswith("$(") and arg.endswith(")"):
        inner = shlex.split(arg[2:-1])
        return '"$(' + " ".join(shlex.quote(a) for a in inner) + ' 2>/dev/null)"'
    return shlex.quote(arg)


def step_script(pipe: Pipeline) -> str:
    """The bash lines that run one step and print its marked sections."""
    stages = []
    for i, argv in enumerate(pipe.stages):
        words = " ".join(_word(a) for a in argv)
        if argv[0] == "write":
            words = "czwrite " + " ".join(_word(a) for a in argv[1:])
        err = f"/tmp/cz.e{i}" if i in pipe.recorded else "/dev/null"
        stages.append(f"{words} 2>{err}")
    if pipe.stdin_null:
        stages[0] += " </dev/null"
    stages[-1] += " >/dev/null" if pipe.discard else " >/tmp/cz.o"
    errs = " ".join(f"/tmp/cz.e{i}" for i in pipe.recorded)
    truncate = "".join(f" : >/tmp/cz.e{i};" for i in pipe.recorded)
    observe = (
        "" if not observes_state(pipe) else f"czstate {'props' if observes_props(pipe) else '-'}\n"
    )
    return (
        f"echo '@@step'; : >/tmp/cz.o;{truncate}\n"
        + " | ".join(stages)
        + '; echo "@@exit ${PIPESTATUS[*]}"\n'
        + f"echo '@@out'; czcat /tmp/cz.o; echo '@@err'; for f in {errs}; do "
        + 'czcat "$f"; done\n'
        + observe
    )


def batch_script(scenarios: Sequence[Scenario]) -> str:
    parts = [PRELUDE]
    for scenario in scenarios:
        parts.append(f"echo '@@scenario {scenario.number}'\nczteardown\nzfs create {ROOT}\n")
        parts.extend(step_script(parse_step(step)) for step in scenario.steps)
        parts.append("czteardown\n")
    return "".join(parts)


def _sections(chunk: str) -> dict[str, str]:
    """One step's output split at its ``@@`` markers."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in chunk.splitlines():
        if line.startswith("@@exit "):
            found["exit"] = [line[7:]]
        elif line.startswith("@@") and line[2:] in ("out", "err", "list", "props", "files"):
            current = line[2:]
            found[current] = []
        elif line.startswith("@@teardown-failed"):
            continue
        elif current:
            found[current].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def recording_from(scenario: Scenario, output: str) -> Recording:
    """A scenario's recording from the script's output for it."""
    norm = Normalizer()
    chunks = output.split("@@step\n")[1:]
    if len(chunks) != len(scenario.steps):
        raise RuntimeError(f"scenario {scenario.number}: {len(chunks)} of {len(scenario.steps)}")
    steps, previous = [], None
    for command, chunk in zip(scenario.steps, chunks, strict=True):
        parts = _sections(chunk)
        codes = [int(c) for c in parts.get("exit", "255").split()]
        pipe = parse_step(command)
        codes = [codes[i] for i in pipe.recorded if i < len(codes)]
        state = None
        if observes_state(pipe):
            listed = parts.get("list", "")
            files = files_by_dataset(listed, parts.get("files", ""))
            state = state_lines(listed, parts.get("props", ""), files, norm)
        lines, previous = step_lines(
            codes, parts.get("out", ""), parts.get("err", ""), state, previous
        )
        steps.append(Step(command, tuple(lines)))
    return Recording(scenario, tuple(steps))


def upload_data(exec_prefix: Sequence[str]) -> None:
    """Put the blobs and the key into ``DATA_DIR`` on the host."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in data_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    script = f"mkdir -p {DATA_DIR} && tar -x -C {DATA_DIR}"
    subprocess.run(
        [*exec_prefix, "sh", "-c", shlex.quote(script)],
        input=buffer.getvalue(),
        check=True,
        timeout=120,
    )


def record(
    exec_prefix: Sequence[str],
    scenarios: Sequence[Scenario],
    *,
    timeout: float = 1800,
    progress: Callable[[list[Recording]], None] | None = None,
) -> list[Recording]:
    """Run ``scenarios`` on the host, in batches; their recordings (also to ``progress`` after
    each batch, so a long recording keeps what it made)."""
    upload_data(exec_prefix)
    recordings = []
    for start in range(0, len(scenarios), BATCH):
        batch = scenarios[start : start + BATCH]
        script = batch_script(batch)
        put = "cat > /tmp/cz.sh"
        subprocess.run(
            [*exec_prefix, "sh", "-c", shlex.quote(put)],
            input=script.encode(),
            check=True,
            timeout=120,
        )
        done = subprocess.run(
            [*exec_prefix, "bash /tmp/cz.sh </dev/null"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout.decode(errors="replace")
        pieces = output.split("@@scenario ")[1:]
        if len(pieces) != len(batch):
            raise RuntimeError(f"batch at {start}: {done.stderr.decode(errors='replace')[-2000:]}")
        for scenario, piece in zip(batch, pieces, strict=True):
            recordings.append(recording_from(scenario, piece))
        if progress is not None:
            progress(recordings)
    return recordings


def corpus_text(recordings: Sequence[Recording]) -> str:
    return HEADER + "".join(r.text() for r in recordings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--lab", default="default", help="name of the lab (zfleet lab up --name)")
    parser.add_argument("--out", type=Path, default=CORPUS_FILE)
    args = parser.parse_args(argv)
    from workers.lab.lab import Lab
    from workers.lab.paths import state_root

    lab = Lab.load(state_root() / args.lab)
    if lab is None:
        print("no lab running in $ZFLEET_LAB_STATE (zfleet lab up 1)", file=sys.stderr)
        return 1
    host = lab.hosts[0]
    scenarios = generate(SEED, args.first + args.count - 1)[args.first - 1 :]
    started = time.monotonic()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(done: list[Recording]) -> None:
        args.out.write_text(corpus_text(done))

    recordings = record(host.exec_prefix, scenarios, progress=save)
    took = time.monotonic() - started
    print(f"recorded {len(recordings)} scenarios on {host.name} in {took:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
