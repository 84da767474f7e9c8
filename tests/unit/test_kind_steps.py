"""`zfleet kind set|show`: the request checked before a job exists, the plan refusing a kind that
breaks the compartments, and the worker's property steps on the simulated backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import parse_config
from coordinator.kindjob import new_kind_job, plan_request
from protocol.addresses import parse_address
from protocol.errors import ConfigError, InvalidOperation, JobError
from protocol.kinds import KIND_PROPERTY
from protocol.kindsteps import GetPropertyArgs, SetPropertyArgs
from protocol.steps import args_from_data, args_to_data
from tests.unit.fleetfakes import dataset, graph_of
from tests.unit.test_kinds import kinded
from workers.steps import StepContext, run_step
from workers.zfs.sim import SimBackend

CONFIG = "[hosts.alpha]\n[hosts.beta]\n"


@pytest.mark.parametrize(("address", "kind", "message"), [
    ("alpha:tank/a", "hom", r"'hom' is not a dataset kind .*did you mean 'home'"),
    ("delta:tank/a", "home", r"unknown host 'delta'"),
    ("alpha:tank/a@s1", "home", r"snapshot"),
    ("alpha", "home", r"no ':' after the host"),
])  # fmt: skip
def test_a_bad_request_fails_before_any_job_exists(address: str, kind: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        new_kind_job(CONFIG, parse_config(CONFIG), "set", address, kind)


def test_a_job_inventories_the_pool_then_plans() -> None:
    job = new_kind_job(CONFIG, parse_config(CONFIG), "set", "alpha:tank/homes/a", "home")
    assert job.kind == "kind" and job.name == "kind set alpha:tank/homes/a home"
    assert {s.id: s.args.roots for s in job.steps.values() if s.host} == {
        "inventory-alpha": ("tank",)}
    assert list(job.steps["plan"].deps) == ["inventory-alpha"]


def test_set_plans_one_checked_property_step_and_show_a_read() -> None:
    g = graph_of(alpha=[dataset("tank/homes"), dataset("tank/homes/alice")])
    addr = parse_address("alpha:tank/homes")
    [step] = plan_request(g, addr, "set", "home").steps
    assert step.args == SetPropertyArgs(dataset="tank/homes", name=KIND_PROPERTY, value="home",
                                        guid=g.dataset("alpha", "tank/homes").guid)  # type: ignore[union-attr]
    [read] = plan_request(g, addr, "show", None).steps
    assert read.args == GetPropertyArgs(dataset="tank/homes", names=(KIND_PROPERTY,))
    with pytest.raises(JobError, match="alpha:tank/nope does not exist"):
        plan_request(g, parse_address("alpha:tank/nope"), "set", "home")


def test_a_kind_that_puts_a_home_inside_an_image_is_refused_unless_forced() -> None:
    g = graph_of(alpha=[kinded(dataset("tank/img"), "image"), dataset("tank/img/data"),
                        kinded(dataset("tank/homes/alice", ["s1"]), "home"),
                        dataset("tank/apps/copy", origin="tank/homes/alice@s1")])  # fmt: skip
    refused = plan_request(g, parse_address("alpha:tank/img/data"), "set", "home")
    assert refused.steps == () and "lies inside alpha:tank/img" in refused.refusals[0].reason
    # the other way round: making an image of a clone of a home
    copy = plan_request(g, parse_address("alpha:tank/apps/copy"), "set", "image")
    assert copy.steps == () and "is a clone of tank/homes/alice@s1 (home)" in str(copy.refusals)
    forced = plan_request(g, parse_address("alpha:tank/img/data"), "set", "home", force=True)
    assert len(forced.steps) == 1 and "set anyway" in forced.notes[0]


def test_the_property_steps_set_inherit_and_read_once_however_often_run(tmp_path: Path) -> None:
    backend = SimBackend(tmp_path / "h")
    backend.create_pool("tank")
    backend.create("tank/homes")
    backend.create("tank/homes/alice")
    ctx = StepContext(host="h", backend=backend)
    guid = int(backend.get("tank/homes", ["guid"])["guid"].value)
    args = SetPropertyArgs(dataset="tank/homes", name=KIND_PROPERTY, value="home", guid=guid)
    assert args_from_data(args_to_data(args)) == args
    first = run_step(ctx, args)
    assert first["changed"] is True and first["before"] is None and first["source"] == "local"
    assert run_step(ctx, args)["changed"] is False  # a second attempt changes nothing
    child = run_step(ctx, GetPropertyArgs(dataset="tank/homes/alice", names=(KIND_PROPERTY,)))
    assert child == {KIND_PROPERTY: "home", f"{KIND_PROPERTY}.source": "inherited from tank/homes"}
    cleared = run_step(ctx, SetPropertyArgs(dataset="tank/homes", name=KIND_PROPERTY, value=None))
    assert cleared["changed"] is True and cleared["value"] is None
    with pytest.raises(InvalidOperation, match="it was replaced since the plan"):
        run_step(ctx, SetPropertyArgs(dataset="tank/homes", name=KIND_PROPERTY, value="home",
                                      guid=guid + 1))  # fmt: skip
    with pytest.raises(InvalidOperation, match="'readonly' is not a user property"):
        run_step(ctx, SetPropertyArgs(dataset="tank/homes", name="readonly", value="on"))
    assert backend.get("tank/homes", ["readonly"])["readonly"].value == "off"


def test_a_new_container_gets_its_policy_mounts_after_the_named_ones() -> None:
    from coordinator.containerjob import make_spec
    from coordinator.kindjob import mounted_by_policy, with_policy_mounts

    config = parse_config(CONFIG + '[kinds.home]\nmounts = ["editor"]\n'
                          '[kinds.shared]\nmounts = ["editor", "browser"]\n')  # fmt: skip
    g = graph_of(alpha=[kinded(dataset("tank/homes"), "home"),
                        kinded(dataset("tank/homes/alice"), "home"),
                        kinded(dataset("tank/homes/bob"), "home"),
                        kinded(dataset("tank/team"), "shared")],
                 beta=[kinded(dataset("bk/team"), "shared")])  # fmt: skip
    spec = make_spec("editor", "tank/img@v1", home="tank/homes/alice")
    full = with_policy_mounts(spec, g, config, "alpha")
    assert [(m.kind, m.dataset, m.path) for m in full.mounts] == [
        ("home", "tank/homes/alice", "/home"),  # as the request named it
        ("home", "tank/homes/bob", "/home/bob"), ("shared", "tank/team", "/shared/team")]
    browser = with_policy_mounts(make_spec("browser", "tank/img@v1"), g, config, "alpha")
    assert [m.dataset for m in browser.mounts] == ["tank/team"]
    assert with_policy_mounts(make_spec("other", "tank/img@v1"), g, config, "alpha").mounts == ()
    # a replica is never mounted
    shared = with_policy_mounts(make_spec("browser", "bk/img@v1"), g, config, "beta",
                                replicas={("beta", "bk/team")})  # fmt: skip
    assert shared.mounts == ()
    assert mounted_by_policy(config, "browser") and not mounted_by_policy(config, "other")
