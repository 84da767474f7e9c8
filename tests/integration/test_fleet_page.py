"""The live fleet page in real headless Chromium, against a running fleet of real processes.

alpha, beta and gamma run real ``zfleet worker`` processes and a coordinator; the API runs beside
them (``serve_api``). One job replicates alpha to beta, slowed down (a bandwidth limit) so that it
is still sending when the browser looks; another aims at a pool gamma does not have, so it fails
with OpenZFS's message. Chromium loads ``/`` with the token in the fragment and runs its script: the
test then reads the DOM it built (hosts with their datasets, the running job's progress bar and
throughput, the failure and its message, the fleet picture) and saves a screenshot.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from coordinator import engine
from coordinator.api import ApiHandle, serve_api
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.services.chromium import chromium_binary, dump_dom, screenshot
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "page-token-for-tests-0123456789"
HOSTS = ("alpha", "beta", "gamma")
JOBS = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
[jobs.broken]
source = "alpha:tank/logs"
targets = ["gamma:nopool/logs"]
"""


class Node:
    """An element of the dumped DOM: tag, attributes, children, text."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.texts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, tag: str = "*", cls: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if ((tag in ("*", c.tag)) and (cls is None or cls in c.classes())
                    and all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                out.append(c)
            out.extend(c.find(tag, cls, **attrs))
        return out

    def by_id(self, ident: str) -> Node:
        (found,) = [n for n in self.find() if n.attrs.get("id") == ident]
        return found


class _Builder(HTMLParser):
    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "path", "circle",
                      "line", "rect", "stop", "use"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.texts.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    chromium_binary()  # skip (or fail in CI) before starting anything
    with running_fleet(tmp_path, redis_server, HOSTS, JOBS) as f:
        alpha = f.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/img")
        alpha.create("tank/img/base")
        alpha.create("tank/logs")
        mp = alpha.mountpoint("tank/img/base")
        assert mp is not None
        # incompressible, so the bandwidth limit keeps the transfer running for a while
        Path(mp, "big").write_bytes(os.urandom(12 * 1024 * 1024))  # about 40 s at 300 KiB/s
        alpha.snapshot(["tank/img@s1", "tank/img/base@s1", "tank/logs@s1"])
        alpha.clone("tank/img/base@s1", "tank/img/app")
        f.backend("beta").create_pool("bk")
        f.backend("gamma").create_pool("other")
        f.start_worker("alpha", ZFLEET_BWLIMIT="300K")
        f.start_worker("beta")
        f.start_worker("gamma")
        f.start_coordinator()
        yield f


@pytest.fixture
def api(fleet: Fleet) -> Iterator[ApiHandle]:
    handle = serve_api(fleet.client(), config_path=fleet.config, token=TOKEN)
    try:
        yield handle
    finally:
        handle.stop()


def submit(fleet: Fleet, name: str) -> str:
    out = fleet.cli("sync", name, "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr + fleet.logs()
    return str(json.loads(out.stdout)["id"])


def test_page_shows_hosts_a_running_job_and_a_failure(
    fleet: Fleet, api: ApiHandle, tmp_path: Path
) -> None:
    store = JobStore(fleet.client())
    broken = wait_job(store, submit(fleet, "broken"), timeout=90)
    assert broken.status == engine.JOB_FAILED, (broken.status, fleet.logs())
    (failed,) = [s for s in broken.steps.values() if s.status == engine.FAILED]
    assert failed.error
    running = submit(fleet, "img")
    deadline = time.monotonic() + 90
    while not any(p.get("done", 0) > 200 * 1024 for p in store.progress(running).values()):
        assert time.monotonic() < deadline, f"no transfer started\n{fleet.logs()}"
        assert not store.load(running).done, store.load(running).error
        time.sleep(0.2)

    url = f"{api.url}/#token={TOKEN}&interval=700"
    dom = parse(dump_dom(url, budget_ms=5000))
    assert store.load(running).status == engine.JOB_RUNNING, "the job ended before the page looked"
    body = dom.find("body")[0]
    assert int(body.attrs["data-updates"]) >= 2  # it polled again by itself
    assert dom.by_id("conn").text == "live"

    hosts = {n.attrs["data-host"]: n for n in dom.find(cls="host")}
    assert set(hosts) == set(HOSTS)
    assert all(h.attrs["data-alive"] == "yes" for h in hosts.values())
    alpha_ds = {n.attrs["data-dataset"]: n for n in hosts["alpha"].find(cls="dataset")}
    assert {"tank/img", "tank/img/base", "tank/img/app"} <= set(alpha_ds)
    assert "clone of tank/img/base@s1" in alpha_ds["tank/img/app"].text

    rows = dom.by_id("running").find("tr", cls="job", data_job_id=running)
    sending = [(r, b) for r in rows for b in r.find(role="progressbar")
               if 0 < int(b.attrs.get("aria-valuenow", "0")) < 100]  # fmt: skip
    assert sending, [r.text for r in rows]  # one transfer target part-way, shown as such
    row, bar = sending[0]
    assert "MiB" in bar.text or "KiB" in bar.text
    (rate,) = row.find(cls="rate")
    assert rate.text.endswith("/s"), rate.text

    failures = dom.by_id("failures").find(cls="failure", data_job_id=broken.id)
    assert failures, dom.by_id("failures").text
    messages = [f.find(cls="error")[0].text for f in failures]
    assert any(failed.error in m for m in messages), (failed.error, messages)

    graph = dom.by_id("graph")
    assert graph.find("svg"), "the fleet picture is missing"
    assert "tank/img/app" in graph.text and "beta" in graph.text

    shot = screenshot(url, tmp_path / "fleet-page.png", budget_ms=5000)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # cancelled through the API, the running job stops at its next check (and the fleet with it)
    req = urllib.request.Request(f"{api.url}/v1/jobs/{running}/cancel", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
    stopped = wait_job(store, running, timeout=60)
    assert stopped.status == engine.JOB_CANCELLED, (stopped.status, fleet.logs())


def test_page_with_a_wrong_token_asks_for_one(redis_server: RedisServer,  # noqa: F811
                                              tmp_path: Path) -> None:  # fmt: skip
    chromium_binary()
    config = tmp_path / "fleet.toml"
    config.write_text('[hosts.alpha]\nbackend = "sim"\n')
    handle = serve_api(redis_server.client(), config_path=config, token=TOKEN)
    try:
        dom = parse(dump_dom(f"{handle.url}/#token=not-the-token-at-all", budget_ms=2000))
    finally:
        handle.stop()
    assert "display: block" in dom.by_id("login").attrs.get("style", "")
    assert "display: none" in dom.by_id("main").attrs.get("style", "")
    assert not dom.find(cls="host")  # nothing was shown without the right token
