"""What encryption costs on the simulated backend, each figure beside its plain baseline.

    .venv/bin/python bench/keys.py [--size-mib 32]

- bytes of a full send of one dataset of --size-mib MiB (incompressible files of 1 MiB and a few
  small ones): plain (``zfs send``) against raw (``zfs send -w``, what an encrypted dataset
  replicates as). The simulation's raw records carry 28 bytes more (nonce and tag) but are
  padded to 8 bytes where plain small records are padded to 512, so small files make raw the
  smaller; real OpenZFS sends raw blocks at their on-disk (512-byte) size.
- ``zfs change-key`` on that dataset (a rewrap: independent of the data's size) against
  ``zfs unload-key`` + ``load-key`` (the simulation turns data at rest into ciphertext and back).
- sealed boxes (protocol/sealed.py): seal and open per second, and a box's size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.sealed import KeyPair, open_box, seal  # noqa: E402
from workers.zfs.base import SendSpec  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402


def send_size(be: SimBackend, spec: SendSpec) -> int:
    stream = be.send(spec)
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    stream.close()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        be = SimBackend(Path(tmp))
        be.create_pool("tank")
        key = os.urandom(32).hex().encode()
        be.create("tank/e", props={"encryption": "on", "keyformat": "hex"}, key=key)
        where = Path(str(be.mountpoint("tank/e")))
        for i in range(args.size_mib):
            (where / f"f{i}").write_bytes(os.urandom(1 << 20))
        for i in range(100):
            (where / f"small{i}").write_bytes(os.urandom(100 + i))
        be.snapshot(["tank/e@s"])
        plain = send_size(be, SendSpec("tank/e@s"))
        raw = send_size(be, SendSpec("tank/e@s", raw=True))
        print(f"full send of {args.size_mib} MiB: plain {plain:,} B, raw {raw:,} B, "
              f"raw overhead {raw - plain:,} B ({100 * (raw - plain) / plain:.2f} %)")  # fmt: skip
        t0 = time.perf_counter()
        be.change_key("tank/e", key=os.urandom(32).hex().encode(), props={"keyformat": "hex"})
        t1 = time.perf_counter()
        new = os.urandom(32).hex().encode()
        be.change_key("tank/e", key=new, props={"keyformat": "hex"})
        be.unload_key("tank/e")
        t2 = time.perf_counter()
        be.load_key("tank/e", key=new)
        t3 = time.perf_counter()
        print(f"change-key {1000 * (t1 - t0):.1f} ms; unload-key {t2 - t1:.2f} s, load-key "
              f"{t3 - t2:.2f} s for {args.size_mib} MiB (the sim re-seals data at rest)"
              )  # fmt: skip
    pair, secret, n = KeyPair.generate(), os.urandom(64), 2000
    t0 = time.perf_counter()
    boxes = [seal(pair.public, secret, "bench") for _ in range(n)]
    t1 = time.perf_counter()
    for box in boxes:
        open_box(pair, box, "bench")
    t2 = time.perf_counter()
    print(f"sealed boxes: {n / (t1 - t0):,.0f} seals/s, {n / (t2 - t1):,.0f} opens/s, "
          f"{len(boxes[0])} B for a 64-byte secret")  # fmt: skip


if __name__ == "__main__":
    main()
