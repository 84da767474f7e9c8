"""The demo's later acts: a one-off clone by a short verb, then a failover and a rejoin.

The clone is `zfleet clone alpha:...@v3 gamma:...`, run as a user runs it (the CLI, an ad hoc
job). The failover goes the way monitoring drives it: the demo job gets a ``[jobs.demo.failover]``
table, alpha's worker is killed (SIGKILL: its heartbeat simply stops), and once the heartbeat has
expired (the coordinator's own evidence) an Alertmanager notification is POSTed to the
coordinator's ``/v1/alerts/alertmanager``. beta becomes the writable primary under epoch 1, takes
writes and replicates them; alpha comes back and rejoins, its unreplicated write kept aside and
only the increment sent to it. Every claim is a :class:`Check`.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from app.demo import scenario, verify
from app.demo.fleet import SOURCE_POOL, TARGET_POOL, DemoFleet, failover_toml
from app.demo.verify import Check, Replica
from bus import records
from coordinator import engine
from coordinator.config import parse_config
from coordinator.jobstore import JobStore
from coordinator.rejoin import submit_rejoin
from protocol.steps import TransferArgs
from workers.zfs.base import ObjType

if TYPE_CHECKING:
    from app.demo.run import JobRun, Narrator

JOB_TIMEOUT: Final = 120.0
BEAT_TIMEOUT: Final = 3.0 * records.HEARTBEAT_TTL
REPLICA_ROOT: Final = f"{TARGET_POOL}/alpha"
CLONE_SNAPSHOT: Final = f"{SOURCE_POOL}/images/base@v3"
CLONE_TARGET: Final = f"{TARGET_POOL}/try-v3"
LOST_FILE: Final = "alice/draft.txt"  # written on alpha after the last sync, never replicated
NEW_FILE: Final = "carol/after-failover.txt"  # written on beta once it is primary


def notification(host: str, *, started: str) -> bytes:
    """An Alertmanager webhook body (version 4) with one firing ``ZfleetWorkerDown`` alert."""
    alert = {
        "status": "firing", "labels": {"alertname": "ZfleetWorkerDown", "host": host},
        "annotations": {"summary": f"zfleet worker on {host} is down"}, "startsAt": started,
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
        "fingerprint": hashlib.sha256(host.encode()).hexdigest()[:16],
    }  # fmt: skip
    return json.dumps({
        "version": "4", "groupKey": '{}:{alertname="ZfleetWorkerDown"}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "zfleet", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid", "alerts": [alert],
    }).encode()  # fmt: skip


def post_alert(url: str, body: bytes, secret: str) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as Alertmanager does (bearer secret); the status and the JSON answer."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the demo only posts to its own coordinator, not {url}")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (checked above)
            return int(resp.status), dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read() or b"{}"))


def _wait_for(ready: Callable[[], bool], timeout: float, watch: Callable[[], None]) -> float:
    """Seconds until ``ready()``; raises TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not ready():
        watch()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def _mounted_dir(fleet: DemoFleet, host: str, dataset: str) -> Path:
    mp = fleet.backend(host).mountpoint(dataset)
    if mp is None:
        raise RuntimeError(f"{host}:{dataset} is not mounted")
    return Path(mp)


class LaterActs:
    """The acts after the regular syncs, on a running demo fleet."""

    def __init__(
        self, fleet: DemoFleet, say: Narrator, add: Callable[[Check], None],
        sync: Callable[[], JobRun], job: str,
    ) -> None:  # fmt: skip
        self.fleet = fleet
        self.say = say
        self.add = add
        self.sync = sync
        self.job = job
        self.store = JobStore(fleet.client())

    # -- the short verbs -------------------------------------------------------------------------
    def clone(self) -> None:
        """`zfleet clone alpha:tank/images/base@v3 gamma:backup/try-v3`: a clone of the same
        snapshot on another host (gamma has it already, as a replica: nothing is sent)."""
        src, dst = f"alpha:{CLONE_SNAPSHOT}", f"gamma:{CLONE_TARGET}"
        self.say.note(f"zfleet clone {src} {dst}")
        out = self.fleet.cli("clone", src, dst, "--json")
        gamma = self.fleet.backend("gamma")
        if out.returncode != 0 or not gamma.exists(CLONE_TARGET):
            self.add(Check(f"zfleet clone {src} {dst}", False,
                           f"exit {out.returncode}: {(out.stderr or out.stdout)[-300:]}"))
            return
        origin = str(gamma.get(CLONE_TARGET, ["origin"])["origin"].value)
        want = self.fleet.backend("alpha").get(CLONE_SNAPSHOT, ["guid"])["guid"].value
        got = gamma.get(origin, ["guid"])["guid"].value if gamma.exists(origin) else None
        self.add(Check(f"zfleet clone: gamma:{CLONE_TARGET} is a clone of {origin}, the same "
                       f"snapshot as {src}", got == want, f"origin guid {got} != {want}"))

    # -- failover --------------------------------------------------------------------------------
    def failover(self) -> dict[str, Any] | None:
        """Kill alpha's worker, alert, fail over to beta; the failover job's report or None."""
        fleet = self.fleet
        with fleet.config.open("a") as fh:
            fh.write(failover_toml(self.job))
        self.say.note(f'[jobs.{self.job}.failover] added: candidates beta, policy "auto"')
        home = _mounted_dir(fleet, "alpha", f"{SOURCE_POOL}/home")
        scenario.write(home, LOST_FILE, b"written on alpha after the last sync\n" * 100)
        self.say.note(f"alpha wrote tank/home/{LOST_FILE}, which no sync has carried yet")
        fleet.kill("worker-alpha")
        self.say.note("alpha's worker killed (SIGKILL)")
        waited = _wait_for(lambda: records.get_beat(fleet.client(), "alpha") is None,
                           BEAT_TIMEOUT, fleet.check_alive)  # fmt: skip
        self.say.note(f"alpha's heartbeat expired in Redis after {waited:.1f} s")
        url = f"{fleet.api_url}/v1/alerts/alertmanager"
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.say.note(f"Alertmanager-style POST {url} (ZfleetWorkerDown, host=alpha)")
        code, answer = post_alert(url, notification("alpha", started=started), fleet.alert_secret)
        started_ids = [str(f["id"]) for f in answer.get("failovers", [])
                       if f.get("outcome") == "started" and f.get("job") == self.job]  # fmt: skip
        self.add(Check(f"webhook answered {code}: failover of job {self.job} started",
                       code == 200 and len(started_ids) == 1, json.dumps(answer)[:300]))
        if code != 200 or len(started_ids) != 1:
            return None
        # Alertmanager repeats a notification: the repeat must start nothing new
        code, again = post_alert(url, notification("alpha", started=started), fleet.alert_secret)
        outcomes = [f.get("outcome") for f in again.get("failovers", [])]
        self.add(Check("the repeated notification started nothing new", outcomes == ["repeat"],
                       json.dumps(again)[:300]))
        done = self.say.follow(self.store, started_ids[0], JOB_TIMEOUT, fleet.check_alive)
        report = dict(done.report)
        ok = done.status == engine.JOB_SUCCEEDED and report.get("primary") == "beta"
        self.add(Check(f"failover job {done.id} {done.status}: beta is the primary",
                       ok, done.error or json.dumps(report)[:300]))
        if not ok:
            return None
        beta = fleet.backend("beta")
        datasets = [o.name for o in beta.list(REPLICA_ROOT)
                    if o.type in (ObjType.FILESYSTEM, ObjType.VOLUME)]  # fmt: skip
        closed = []
        for name in datasets:
            props = beta.get(name, ["readonly", "mounted"])
            if (props["readonly"].value, props["mounted"].value) != ("off", "yes"):
                closed.append(name)
        self.add(Check(f"beta: all {len(datasets)} datasets writable and mounted (readonly=off)",
                       bool(datasets) and not closed, ", ".join(closed[:5])))
        epoch = records.current_epoch(fleet.client(), self.job)
        self.add(Check(f"fencing epoch of job {self.job} is {epoch}", epoch == 1))
        writable = float(report.get("time_to_writable") or 0.0)
        window = report.get("data_loss_window")
        self.add(Check(f"alert to writable in {writable:.2f} s; data-loss window "
                       f"{float(window):.1f} s (age of the newest replicated snapshot)"
                       if window is not None else "data-loss window reported",
                       writable > 0 and window is not None and float(window) >= 0))
        return report

    def after_failover(self) -> None:
        """beta takes a write and replicates it: the job now runs from beta."""
        beta_home = _mounted_dir(self.fleet, "beta", f"{REPLICA_ROOT}/home")
        scenario.write(beta_home, NEW_FILE, b"written on beta, the new primary\n" * 200)
        self.say.note(f"beta wrote {REPLICA_ROOT}/home/{NEW_FILE}")
        time.sleep(1.1)  # the job's snapshot names have one-second resolution
        run = self.sync()
        job = self.store.load(run.id)
        snapped = sorted({str(s.host) for s in job.steps.values() if s.kind == "snapshot"})
        sent = sorted({str(s.host) for s in job.steps.values() if s.kind == "transfer"})
        self.add(Check(f"the job now runs from beta (snapshots on {', '.join(snapped)}, sends "
                       f"from {', '.join(sent)})", snapped == sent == ["beta"]))
        to_gamma = [s for s in job.steps.values() if s.kind == "transfer"
                    and isinstance(s.args, TransferArgs)
                    and any(t.host == "gamma" for t in s.args.targets)]  # fmt: skip
        full = [s.id for s in to_gamma if isinstance(s.args, TransferArgs)
                and not s.args.send.from_snap]  # fmt: skip
        self.add(Check(f"gamma received {len(to_gamma)} increments from beta, no full send",
                       bool(to_gamma) and not full, ", ".join(full[:5])))

    # -- rejoin ----------------------------------------------------------------------------------
    def rejoin(self, full_bytes: int) -> None:
        """alpha's worker returns; alpha rejoins as a replica by receiving only the increment."""
        fleet = self.fleet
        fleet.start_worker("alpha")
        _wait_for(lambda: records.get_beat(fleet.client(), "alpha") is not None,
                  BEAT_TIMEOUT, fleet.check_alive)  # fmt: skip
        self.say.note("alpha's worker is back; rejoining alpha (what `zfleet rejoin alpha` does)")
        text = fleet.config.read_text()
        config = parse_config(text, source=str(fleet.config))
        (job,) = submit_rejoin(self.store, text, config, "alpha", jobs=[self.job])
        done = self.say.follow(self.store, job.id, JOB_TIMEOUT, fleet.check_alive)
        ok = done.status == engine.JOB_SUCCEEDED
        self.add(Check(f"rejoin job {done.id} {done.status}", ok, done.error or ""))
        if not ok:
            return
        aside = [str(a) for a in done.report.get("aside", [])]
        kept = self._kept_aside(aside, done.id)
        self.add(Check(f"alpha's unreplicated write kept aside in {', '.join(aside) or '-'}",
                       kept, f"tank/home/{LOST_FILE} not found aside"))
        moved = int(done.report.get("bytes") or 0)
        self.add(Check(f"rejoin sent alpha {moved:,} bytes, the full sync {full_bytes:,} "
                       f"({moved / full_bytes:.1%})" if full_bytes else "rejoin bytes measured",
                       0 < moved * 5 < full_bytes))
        alpha = fleet.backend("alpha")
        ro = alpha.get(f"{SOURCE_POOL}/home", ["readonly"])["readonly"].value
        self.add(Check("alpha is a replica again (readonly=on)", ro == "on"))
        replicas = [Replica("alpha", alpha, SOURCE_POOL),
                    Replica("gamma", fleet.backend("gamma"), REPLICA_ROOT)]
        for check in verify.verify_replicas(fleet.backend("beta"), REPLICA_ROOT, replicas):
            self.add(Check(f"against beta: {check.name}", check.ok, check.detail))

    def _kept_aside(self, aside: list[str], job_id: str) -> bool:
        """Whether the aside home dataset's diverged snapshot holds alpha's lost write."""
        alpha = self.fleet.backend("alpha")
        for name in aside:
            if not name.startswith(f"{SOURCE_POOL}/home."):
                continue
            snap = f"{name}@zfleet-diverged-{job_id}"
            if not alpha.exists(snap):
                continue
            scratch = f"{SOURCE_POOL}/{verify.SCRATCH}"
            with verify.snapshot_files(alpha, snap, scratch) as root:
                if (root / LOST_FILE).is_file():
                    return True
        return False
