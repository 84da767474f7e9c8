"""A small compartmentalised desktop against the same as independent images: disk, wire, store.

The desktop (one base, 6 application images, 3 homes, logs), laid out two ways on host alpha of
a simulated fleet (real redis-server, a ``zfleet worker`` per host, a coordinator):

- **compartments** (zfleet's kinds): ``tank/desk/base`` (kind ``base``) is the Debian minbase
  tree of bench/debimages.py; each of the 6 application images (kind ``image``) is imported as
  its own debootstrap tree and re-based onto ``base@v1`` with keep-content, so it is a clone
  carrying only what differs; 3 homes (kind ``home``), each its own dataset that the policy
  mounts into the applications that use it; one log dataset (kind ``log``).
- **orthogonal** (as Qubes OS templates and VM images are laid out): the base and every
  application image a full, independent image; each application that uses a home holds its own
  copy of it in its private volume; the same logs.

The file trees are equal between the two layouts (the bench checks each image's tree hash). One
sync job per layout replicates it to beta and to an object store of its own (``store:``, a
``dir`` repository), through the fleet. Figures, each beside the orthogonal baseline, with the
ratio: bytes on disk on alpha (the layout's ``used``), bytes replicated (the transfer steps'
stream bytes), bytes on disk on beta afterwards, and bytes in the store (the repository's files).

    .venv/bin/python bench/compartments.py [--home-mib 24] [--log-mib 8] [--tmp DIR]

Homes and logs are generated (seeded): documents, pictures (incompressible), a mail folder; log
lines with timestamps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import debimages  # noqa: E402
from rebase import copy_tree, listing, sent_by  # noqa: E402

from workers.rebase.collection import Cluster, Proposal, rebase_collection  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402

MIB = 1 << 20
APPS = ("web", "db", "python", "build", "cache", "tools")
# who uses which home: alice's home is mounted into three applications, bob's into two, carol's one
HOMES = {"alice": ("web", "python", "tools"), "bob": ("db", "build"), "carol": ("cache",)}


def home_tree(root: Path, user: str, mib: int, seed: int) -> None:
    rng = random.Random(f"{seed}-{user}")
    left = mib * MIB
    i = 0
    while left > 0:
        kind = rng.choice(("doc", "pic", "mail"))
        size = min(left, {"doc": rng.randint(2_000, 60_000), "pic": rng.randint(200_000, 2 * MIB),
                          "mail": rng.randint(1_000, 20_000)}[kind])  # fmt: skip
        if kind == "pic":
            data = rng.randbytes(size)
        else:
            words = [rng.randbytes(rng.randint(2, 6)).hex() for _ in range(400)]
            text = " ".join(rng.choice(words) for _ in range(size // 6)).encode()
            data = (text + b"\n")[:size]
        sub = {"doc": "Documents", "pic": "Pictures", "mail": "Mail/INBOX/cur"}[kind]
        path = root / sub / f"{kind}{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        left -= size
        i += 1
    os.chown(root, 1000, 1000)


def log_tree(root: Path, mib: int, seed: int) -> None:
    rng = random.Random(f"{seed}-logs")
    apps = list(APPS)
    for day in range(7):
        lines = []
        size = 0
        t = 1_764_806_400 + day * 86_400
        while size < mib * MIB // 7:
            t += rng.randint(0, 3)
            line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t))} {rng.choice(apps)}"
                    f"[{rng.randint(100, 30000)}]: request {rng.randbytes(8).hex()} "
                    f"{rng.choice(('200', '200', '304', '404', '500'))} {rng.randint(1, 9999)}ms")
            lines.append(line)
            size += len(line) + 1
        (root / f"desktop-{day}.log").write_text("\n".join(lines) + "\n")


def used(sim: SimBackend, name: str) -> int:
    return int(sim.get(name, ["used"])["used"].value)


def store_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def jobs(vault_desk: Path, vault_orth: Path) -> str:
    return f"""
[stores.desk]
kind = "dir"
path = "{vault_desk}"

[stores.orth]
kind = "dir"
path = "{vault_orth}"

[kinds.home]
mounts = {json.dumps(sorted({a for apps in HOMES.values() for a in apps}))}

[jobs.desk]
source = "alpha:tank/desk"
targets = ["beta:bk/desk", "store:desk"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.orth]
source = "alpha:tank/orth"
targets = ["beta:bk/orth", "store:orth"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def build(alpha: SimBackend, trees: dict[str, Path], args: argparse.Namespace) -> dict[str, str]:
    """Both layouts on alpha; returns each image's tree hash (the same in both)."""
    hashes: dict[str, str] = {}
    for top in ("tank/desk", "tank/desk/apps", "tank/desk/homes", "tank/orth"):
        alpha.create(top)

    def fill(name: str, src: Path | None = None, home: str | None = None) -> Path:
        alpha.create(name)
        where = Path(str(alpha.mountpoint(name)))
        if src is not None:
            copy_tree(src, where)
        elif home is not None:
            home_tree(where, home, args.home_mib, args.seed)
        else:
            log_tree(where, args.log_mib, args.seed)
        return where

    # compartments: base, images imported whole and re-based onto the base, homes, logs
    hashes["base"] = listing(fill("tank/desk/base", trees["minbase"]))
    alpha.snapshot(["tank/desk/base@v1"])
    for app in APPS:
        hashes[app] = listing(fill(f"tank/desk/apps/{app}", trees[app]))
    apps = Cluster("tank/desk/base@v1", tuple(f"tank/desk/apps/{a}" for a in APPS))
    report = rebase_collection(alpha, Proposal((apps,)), drop_old=True)
    assert not report.failed, report.failed
    for user in HOMES:
        fill(f"tank/desk/homes/{user}", home=user)
    fill("tank/desk/logs")
    # orthogonal: every image whole, a copy of a home in every application using it, the logs
    assert listing(fill("tank/orth/base", trees["minbase"])) == hashes["base"]
    for app in APPS:
        assert listing(fill(f"tank/orth/{app}", trees[app])) == hashes[app]
    for user, apps in HOMES.items():
        for app in apps:
            fill(f"tank/orth/{app}-home-{user}", home=user)
    fill("tank/orth/logs")
    for app in APPS:  # the rebase kept every image's tree
        assert listing(Path(str(alpha.mountpoint(f"tank/desk/apps/{app}")))) == hashes[app]
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--home-mib", type=int, default=24)
    parser.add_argument("--log-mib", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tmp", help="where the simulated pools and stores live")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from app.demo.verify import snapshot_files
    from tests.services.fleet import PASSPHRASE, running_fleet
    from tests.services.redis import redis_binary, running_redis
    from workers.cloud.blobstore import LocalBlobStore
    from workers.cloud.repo import RepoKey, Repository

    trees = debimages.ensure(["minbase", *APPS])
    binary = redis_binary()
    if binary is None:
        sys.exit("compartments.py needs redis-server")
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-desk-", dir=args.tmp) as tmp:
        vaults = {n: Path(tmp) / f"vault-{n}" for n in ("desk", "orth")}
        for v in vaults.values():
            v.mkdir()
            Repository.init(LocalBlobStore(v), RepoKey(passphrase=PASSPHRASE), scrypt_n=2**10)
        empty_store = {n: store_bytes(v) for n, v in vaults.items()}
        config = jobs(vaults["desk"], vaults["orth"])
        where = Path(tmp) / "fleet"
        with running_redis(binary) as srv, \
                running_fleet(where, srv, ("alpha", "beta"), config) as fleet:  # fmt: skip
            alpha, beta = fleet.backend("alpha"), fleet.backend("beta")
            alpha.create_pool("tank", size=256 << 30)
            beta.create_pool("bk", size=256 << 30)
            t0 = time.perf_counter()
            hashes = build(alpha, trees, args)
            built_s = time.perf_counter() - t0
            for host in ("alpha", "beta"):
                fleet.start_worker(host)
            fleet.start_coordinator()

            def zfleet(*argv: str) -> dict[str, Any]:
                out = fleet.cli(*argv, "--config", str(fleet.config), "--json", timeout=3600)
                if out.returncode != 0:
                    sys.exit(f"zfleet {' '.join(argv)}: exit {out.returncode}\n{out.stderr}"
                             f"{out.stdout[-2000:]}\n{fleet.logs()}")  # fmt: skip
                return dict(json.loads(out.stdout)) if out.stdout.strip() else {}

            for name, kind in (("tank/desk/base", "base"), ("tank/desk/apps", "image"),
                               ("tank/desk/homes", "home"), ("tank/desk/logs", "log"),
                               ("tank/orth", "image")):  # fmt: skip
                zfleet("kind", "set", f"alpha:{name}", kind)
            mounts = zfleet("kind", "mounts", "web")["mounts"]
            figures: dict[str, dict[str, int]] = {}
            for layout in ("desk", "orth"):
                disk = used(alpha, f"tank/{layout}")
                t0 = time.perf_counter()
                sent = sent_by(zfleet("sync", layout, "--wait"))
                seconds = time.perf_counter() - t0
                figures[layout] = {
                    "disk": disk, "sent": sent, "beta": used(beta, f"bk/{layout}"),
                    "store": store_bytes(vaults[layout]) - empty_store[layout],
                    "seconds": int(seconds),
                }  # fmt: skip
            origin = beta.get("bk/desk/apps/web", ["origin"])["origin"].value
            report(args, built_s, mounts, origin, figures)
            for app in APPS:  # the replicas (unmounted) hold the same trees: their newest snapshots
                for layout in (f"bk/desk/apps/{app}", f"bk/orth/{app}"):
                    snaps = [o for o in beta.list(layout) if o.name.startswith(layout + "@")]
                    newest = max(snaps, key=lambda o: o.createtxg)
                    with snapshot_files(beta, newest.name, "bk/scratch") as mp:
                        assert listing(Path(mp)) == hashes[app], f"{layout} differs on beta"
        print("every image's tree is equal in both layouts, on alpha and on beta")


def report(args: argparse.Namespace, built_s: float, mounts: list[dict[str, str]], origin: str,
           figures: dict[str, dict[str, int]]) -> None:  # fmt: skip
    print(f"desktop: base (Debian minbase) + {len(APPS)} application images "
          f"({', '.join(APPS)}), 3 homes of {args.home_mib} MiB "
          f"(used by {', '.join(f'{u}: {len(a)}' for u, a in HOMES.items())} applications), "
          f"logs {args.log_mib} MiB; built in {built_s:.0f} s")  # fmt: skip
    shown = ", ".join(f"{m['dataset']} -> {m['target']}" for m in mounts)
    print(f"web mounts by policy: {shown}"
          f"; bk/desk/apps/web is a clone of {origin}")  # fmt: skip
    print(f"{'figure':30s} {'compartments':>14s} {'orthogonal':>14s} {'ratio':>7s}")
    rows = (("bytes on disk (alpha, used)", "disk"), ("bytes replicated (streams)", "sent"),
            ("bytes on disk (beta, used)", "beta"),
            ("bytes in the store", "store"))  # fmt: skip
    for label, key in rows:
        d, o = figures["desk"][key], figures["orth"][key]
        print(f"{label:30s} {d / MIB:10.1f} MiB {o / MIB:10.1f} MiB {d / o:7.3f}")
    print(f"sync time: compartments {figures['desk']['seconds']} s, orthogonal "
          f"{figures['orth']['seconds']} s")


if __name__ == "__main__":
    main()
