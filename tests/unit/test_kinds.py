"""Dataset kinds: the property's values, the [kinds] policies, and the planner obeying them."""

from __future__ import annotations

import dataclasses
import re

import pytest

from coordinator.config import parse_config
from coordinator.fleetstatus import fleet_status
from coordinator.graph import FleetGraph
from coordinator.kinds import layout_problems, mounts_for
from coordinator.planner import PRUNE, Plan, plan_sync
from protocol.errors import ConfigError
from protocol.kinds import KEY_GROUP_PROPERTY, KIND_PROPERTY, KINDS, Kind, kind_of, parse_kind
from tests.unit.fleetfakes import dataset, graph_of
from workers.zfs.base import ZfsObject


def kinded(
    rows: list[ZfsObject], kind: str, *, encryption: str | None = None, group: str | None = None
) -> list[ZfsObject]:
    """``rows`` (fleetfakes.dataset) with the dataset's zfleet:kind (cipher, key group) set."""
    props = {KIND_PROPERTY: kind, **({KEY_GROUP_PROPERTY: group} if group else {})}
    head = dataclasses.replace(rows[0], user_props=props, encryption=encryption)
    return [head, *rows[1:]]


def fleet(kinds: str = "", *, job_extra: str = "", targets: str = "") -> str:
    targets = targets or '["beta:bk/t", "gamma:bk/t", "store:vault"]'
    return f"""
[hosts.alpha]
[hosts.beta]
[hosts.gamma]
[stores.vault]
kind = "dir"
path = "/tmp/vault"
[jobs.j]
source = "alpha:tank/t"
targets = {targets}
{job_extra}
{kinds}
"""


def where(plan: Plan) -> dict[str, set[str]]:
    """Per source dataset, the targets its transfers go to."""
    out: dict[str, set[str]] = {}
    for s in plan.transfers():
        out.setdefault(s.args.source, set()).update(t.label for t in s.args.targets)
    return out


def source(*parts: list[ZfsObject]) -> FleetGraph:
    return graph_of(alpha=parts, beta=[], gamma=[])


# -- the property --------------------------------------------------------------------------


def test_every_kind_parses_and_a_typo_names_the_kinds_and_the_likely_one() -> None:
    assert [parse_kind(k) for k in KINDS] == list(Kind)
    assert set(KINDS) == {"base", "image", "container", "home", "shared", "log", "ephemeral",
                          "temp"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"'hom' is not a dataset kind .*did you mean 'home'"):
        parse_kind("hom")
    with pytest.raises(ConfigError, match="kinds: base, image"):
        parse_kind("x" * 500)
    assert kind_of({KIND_PROPERTY: "log", "other:p": "1"}) is Kind.LOG
    assert kind_of({}) is None and kind_of({KIND_PROPERTY: "-"}) is None


# -- the policies in the fleet config --------------------------------------------------------


def test_a_kind_policy_is_read_whole_and_unset_kinds_follow_their_job() -> None:
    config = parse_config(fleet("""
[kinds.home]
hosts = ["beta"]
store = false
retention = { "zfleet-*" = 3 }
encryption = "required"
key_group = "team"
mounts = ["editor", "browser"]
"""))
    home = config.kinds[Kind.HOME]
    assert home.hosts == ("beta",) and home.store is False
    assert [(r.pattern, r.keep) for r in home.retention or ()] == [("zfleet-*", 3)]
    assert home.encryption == "required" and home.key_group == "team"
    assert home.mounts == ("editor", "browser") and home.mount_path == "/home"
    assert config.job("j").kinds is config.kinds
    image = config.kinds[Kind.IMAGE]
    assert image.hosts is None and image.store and image.retention is None and not image.mounts
    temp = config.kinds[Kind.TEMP]
    assert temp.hosts == () and temp.store is False and not temp.replicates
    assert home.describe()["key_group"] == "team"


@pytest.mark.parametrize(("kinds", "message"), [
    ("[kinds.homes]\nstore = false", r"kinds\.homes: 'homes' is not a dataset kind .*'home'"),
    ("[kinds.home]\nhosts = [\"delta\"]", r"kinds\.home\.hosts: unknown host 'delta'"),
    ("[kinds.temp]\nhosts = [\"beta\"]", r"kinds\.temp: temp never replicates"),
    ("[kinds.temp]\nstore = true", r"kinds\.temp: temp never replicates"),
    ("[kinds.base]\nkey_group = \"team\"", r"kinds\.base\.key_group: .*encryption = \"required\""),
    ("[kinds.base]\nencryption = \"yes\"", r"kinds\.base\.encryption: must be one of required"),
    ("[kinds.image]\nmounts = [\"editor\"]", r"kinds\.image\.mounts: a image is cloned"),
    ("[kinds.home]\nmount_path = \"/home\"", r"kinds\.home\.mount_path: needs mounts"),
    ("[kinds.home]\nmounts = [\"a\"]\nmount_path = \"/x/../etc\"", r"absolute path without"),
    ("[kinds.home]\nreplicate = true", r"kinds\.home\.replicate: unknown key \(known: encryption"),
    ("[kinds.home]\nretention = { \"z-*\" = 0 }", r"kinds\.home\.retention\.z-\*: keep must be"),
    ("[kinds.log]\nmounts = [\"a b\"]", r"kinds\.log\.mounts: 'a b' is not a name"),
    ("[kinds.temp]\nmounts = [\"a\"]", r"kinds\.temp\.mounts: a container mounts home, shared"),
])  # fmt: skip
def test_a_bad_kind_policy_is_refused_naming_the_line_and_key(kinds: str, message: str) -> None:
    text = fleet(kinds)
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(text, source="fleet.toml")
    line = int(re.search(r"fleet\.toml:(\d+):", str(err.value)).group(1))  # type: ignore[union-attr]
    assert text.splitlines()[line - 1].startswith(("[kinds", *(k.split(" =")[0] for k in
                                                              kinds.splitlines()[1:])))


# -- the planner obeys them ---------------------------------------------------------------------


def test_temp_never_replicates_and_the_rest_of_the_tree_still_does() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/scratch", ["s1"]), "temp"),
               kinded(dataset("tank/t/alice", ["s1"]), "home"))  # fmt: skip
    plan = plan_sync(g, parse_config(fleet()).job("j"), job_id="J")
    everywhere = {"beta:bk/t", "gamma:bk/t", "store:vault:tank/t"}
    assert where(plan)["tank/t"] == everywhere
    assert "tank/t/scratch" not in where(plan)
    assert len(where(plan)["tank/t/alice"]) == 3
    assert any("tank/t/scratch not sent" in n and "temp never replicates" in n for n in plan.notes)
    assert plan.refusals == ()
    # a `zfleet send` (a transient job, no policies) copies what it is asked to
    loose = dataclasses.replace(parse_config(fleet()).job("j"), kinds=None)
    assert "tank/t/scratch" in where(plan_sync(g, loose, job_id="J"))


def test_replicas_get_the_source_kind_once_where_they_would_not_inherit_it() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1"]), kinded(dataset("tank/t/homes", ["s1"]), "home"),
               kinded(dataset("tank/t/homes/alice", ["s1"]), "home"),
               kinded(dataset("tank/t/logs", ["s1", "s2"]), "log")],
        beta=[dataset("bk/t", ["s1"], guid_from="tank/t"),
              dataset("bk/t/logs", ["s1"], guid_from="tank/t/logs")],
        gamma=[dataset("bk/t", ["s1"], guid_from="tank/t"),
               kinded(dataset("bk/t/logs", ["s1"], guid_from="tank/t/logs"), "log")],
    )  # fmt: skip
    plan = plan_sync(g, parse_config(fleet(targets='["beta:bk/t", "gamma:bk/t"]')).job("j"),
                     job_id="J")  # fmt: skip
    labels = {(s.host, s.args.dataset, s.args.value): s for s in plan.steps
              if s.kind == "set-property"}  # fmt: skip
    # homes on both (alice inherits it there), logs on beta only (gamma's has it already)
    assert set(labels) == {("beta", "bk/t/homes", "home"), ("gamma", "bk/t/homes", "home"),
                           ("beta", "bk/t/logs", "log")}  # fmt: skip
    steps = {s.id: s for s in plan.steps}
    for label in labels.values():
        [dep] = label.deps
        assert steps[dep].kind == "transfer"
        assert label.host in {t.host for t in steps[dep].args.targets}
    # a `zfleet send` (no policies) labels nothing
    loose = dataclasses.replace(parse_config(fleet()).job("j"), kinds=None)
    assert not [s for s in plan_sync(g, loose, job_id="J").steps if s.kind == "set-property"]


def test_a_kind_goes_only_to_its_hosts_and_to_stores_only_when_allowed() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/alice", ["s1"]), "home"),
               kinded(dataset("tank/t/logs", ["s1"]), "log"))  # fmt: skip
    config = parse_config(fleet('[kinds.home]\nhosts = ["beta"]\nstore = false\n'
                                '[kinds.log]\nhosts = []\n'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    assert where(plan)["tank/t/alice"] == {"beta:bk/t/alice"}
    assert where(plan)["tank/t/logs"] == {"store:vault:tank/t/logs"}
    assert any("replicates to beta only" in n for n in plan.notes)
    assert any("does not go to stores" in n for n in plan.notes)


def test_a_kind_retention_replaces_the_job_rules_on_source_and_targets() -> None:
    snaps = [f"zfleet-{i}" for i in range(1, 7)]
    g = graph_of(
        alpha=[dataset("tank/t", snaps), kinded(dataset("tank/t/logs", snaps), "log")],
        beta=[dataset("bk/t", snaps, guid_from="tank/t"),
              dataset("bk/t/logs", snaps, guid_from="tank/t/logs")],
    )  # fmt: skip
    config = parse_config(fleet('[kinds.log]\nretention = { "zfleet-*" = 2 }',
                                job_extra='retention = { "zfleet-*" = 4 }',
                                targets='["beta:bk/t"]'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    doomed = {name for s in plan.steps if s.kind == PRUNE for name, _ in s.args.destroy}
    assert {d for d in doomed if d.startswith(("tank/t@", "bk/t@"))} == {
        f"{ds}@zfleet-{i}" for ds in ("tank/t", "bk/t") for i in (1, 2)}
    assert {d for d in doomed if "/logs@" in d} == {
        f"{ds}/logs@zfleet-{i}" for ds in ("tank/t", "bk/t") for i in (1, 2, 3, 4)}


def test_a_dataset_that_stays_home_is_still_pruned_there() -> None:
    snaps = [f"zfleet-{i}" for i in range(1, 6)]
    g = source(dataset("tank/t", snaps), kinded(dataset("tank/t/scratch", snaps), "temp"),
               kinded(dataset("tank/t/logs", snaps), "log"))  # fmt: skip
    config = parse_config(fleet('[kinds.log]\nhosts = []\nstore = false\n'
                                'retention = { "zfleet-*" = 1 }',
                                job_extra='retention = { "zfleet-*" = 3 }',
                                targets='["beta:bk/t"]'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    assert set(where(plan)) == {"tank/t"}
    doomed = {name for s in plan.steps if s.kind == PRUNE and s.host == "alpha"
              for name, _ in s.args.destroy}  # fmt: skip
    assert {d for d in doomed if "scratch" in d} == {"tank/t/scratch@zfleet-1",
                                                     "tank/t/scratch@zfleet-2"}  # the job's 3
    assert {d for d in doomed if "logs" in d} == {f"tank/t/logs@zfleet-{i}" for i in range(1, 5)}


def test_a_kind_that_requires_encryption_refuses_a_clear_dataset() -> None:
    g = source(dataset("tank/t", ["s1"]),
               kinded(dataset("tank/t/clear", ["s1"]), "base"),
               kinded(dataset("tank/t/sealed", ["s1"]), "base", encryption="aes-256-gcm",
                      group="team"))  # fmt: skip
    config = parse_config(fleet('[kinds.base]\nencryption = "required"\nkey_group = "team"',
                                targets='["beta:bk/t"]'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    assert set(where(plan)) == {"tank/t", "tank/t/sealed"}
    [refusal] = plan.refusals
    assert refusal.source == "alpha:tank/t/clear" and refusal.target == "beta:bk/t/clear"
    assert "kind base requires encryption" in refusal.reason


def test_a_kind_that_names_a_key_group_refuses_a_dataset_under_another_key() -> None:
    g = source(dataset("tank/t", ["s1"]),
               kinded(dataset("tank/t/team", ["s1"]), "home", encryption="aes-256-gcm",
                      group="team"),
               kinded(dataset("tank/t/ops", ["s1"]), "home", encryption="aes-256-gcm",
                      group="ops"),
               kinded(dataset("tank/t/own", ["s1"]), "home", encryption="aes-256-gcm"))  # fmt: skip
    config = parse_config(fleet('[kinds.home]\nencryption = "required"\nkey_group = "team"',
                                targets='["beta:bk/t"]'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    assert set(where(plan)) == {"tank/t", "tank/t/team"}
    reasons = {r.source: r.reason for r in plan.refusals}
    assert set(reasons) == {"alpha:tank/t/ops", "alpha:tank/t/own"}
    assert "requires the key of group team" in reasons["alpha:tank/t/ops"]
    assert "zfleet:keygroup=ops" in reasons["alpha:tank/t/ops"]
    assert "no zfleet:keygroup" in reasons["alpha:tank/t/own"]


def test_a_value_that_is_no_kind_is_refused_not_guessed() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/x", ["s1"]), "tmep"))
    plan = plan_sync(g, parse_config(fleet(targets='["beta:bk/t"]')).job("j"), job_id="J")
    assert set(where(plan)) == {"tank/t"}
    [refusal] = plan.refusals
    assert "alpha:tank/t/x: zfleet:kind: 'tmep' is not a dataset kind" in refusal.reason
    assert "did you mean 'temp'" in refusal.reason


def test_a_child_whose_parent_stays_behind_is_refused_unless_the_parent_is_there() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/tmp", ["s1"]), "temp"),
               kinded(dataset("tank/t/tmp/keep", ["s1"]), "shared"))  # fmt: skip
    config = parse_config(fleet(targets='["beta:bk/t"]'))
    [refusal] = plan_sync(g, config.job("j"), job_id="J").refusals
    assert refusal.source == "alpha:tank/t/tmp/keep"
    assert "its parent tank/t/tmp does not go to beta:bk/t" in refusal.reason
    g.add_inventory("beta", [*dataset("bk/t", ["s1"], guid_from="tank/t"),
                             *dataset("bk/t/tmp")])  # made by hand there  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    assert plan.refusals == () and "tank/t/tmp/keep" in where(plan)


def test_a_clone_whose_origin_stays_behind_goes_whole_to_that_target() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/base", ["b1"]), "base"),
               kinded(dataset("tank/t/app", ["a1"], origin="tank/t/base@b1"), "image"))
    config = parse_config(fleet('[kinds.base]\nhosts = ["beta"]',
                                targets='["beta:bk/t", "gamma:bk/t"]'))  # fmt: skip
    plan = plan_sync(g, config.job("j"), job_id="J")
    origins = {t.label: t.origin for s in plan.transfers() if s.args.source == "tank/t/app"
               for t in s.args.targets}  # fmt: skip
    assert origins == {"beta:bk/t/app": "bk/t/base@b1", "gamma:bk/t/app": None}
    assert plan.refusals == ()


# -- shared homes, layout, status ---------------------------------------------------------------


def test_homes_are_mounted_into_the_containers_their_policy_names() -> None:
    g = graph_of(
        alpha=[kinded(dataset("tank/homes"), "home"), kinded(dataset("tank/homes/alice"), "home"),
               kinded(dataset("tank/homes/bob"), "home"), kinded(dataset("tank/proj"), "shared"),
               kinded(dataset("tank/img/editor"), "image")],
        beta=[kinded(dataset("bk/homes/alice"), "home")],
    )  # fmt: skip
    policies = parse_config(fleet('[kinds.home]\nmounts = ["editor", "browser"]\n'
                                  '[kinds.shared]\nmounts = ["editor"]\n'
                                  'mount_path = "/srv/team"')).kinds  # fmt: skip
    editor = [(m.host, m.dataset, m.target) for m in mounts_for(g, policies, "editor")]
    assert editor == [
        ("alpha", "tank/homes/alice", "/home/alice"), ("alpha", "tank/homes/bob", "/home/bob"),
        ("alpha", "tank/proj", "/srv/team/proj"), ("beta", "bk/homes/alice", "/home/alice"),
    ]  # fmt: skip
    browser = mounts_for(g, policies, "browser", host="alpha")
    assert [m.dataset for m in browser] == ["tank/homes/alice", "tank/homes/bob"]
    assert mounts_for(g, policies, "nobody") == []


def test_a_home_inside_an_image_or_an_image_cloned_from_a_home_is_a_layout_problem() -> None:
    g = graph_of(alpha=[
        kinded(dataset("tank/img"), "image"), kinded(dataset("tank/img/home"), "home"),
        kinded(dataset("tank/homes/alice", ["s1"]), "home"),
        kinded(dataset("tank/apps/copy", origin="tank/homes/alice@s1"), "image"),
        kinded(dataset("tank/fine"), "home"),
    ])  # fmt: skip
    problems = layout_problems(g)
    assert len(problems) == 2
    assert "alpha:tank/img/home (home) lies inside alpha:tank/img" in problems[0]
    assert "alpha:tank/apps/copy (image) is a clone of tank/homes/alice@s1 (home)" in problems[1]


def test_status_rows_carry_each_dataset_kind() -> None:
    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/alice", ["s1"]), "home"))
    rows = fleet_status(g, parse_config(fleet(targets='["beta:bk/t"]')))
    assert {r["dataset"]: r["kind"] for r in rows} == {"tank/t": None, "tank/t/alice": "home"}


def test_status_groups_by_kind_and_says_what_each_policy_does() -> None:
    from app.cli.status import NO_KIND, by_kind, policy_line

    g = source(dataset("tank/t", ["s1"]), kinded(dataset("tank/t/alice", ["s1"]), "home"),
               kinded(dataset("tank/t/tmp", ["s1"]), "temp"),
               kinded(dataset("tank/t/odd", ["s1"]), "tmep"))  # fmt: skip
    config = parse_config(fleet('[kinds.home]\nhosts = ["beta"]\nstore = false\n'
                                'retention = { "zfleet-*" = 4 }\nencryption = "required"\n'
                                'key_group = "team"\nmounts = ["editor"]'))  # fmt: skip
    groups = by_kind(fleet_status(g, config))
    assert list(groups) == ["home", "temp", NO_KIND, "tmep"]
    assert [r["dataset"] for r in groups[NO_KIND]] == ["tank/t"]
    assert policy_line(config.kinds[Kind.HOME], "home") == (
        "to beta; not to stores; keep 4 zfleet-*; encrypted under team; mounted in editor at "
        "/home")
    assert policy_line(config.kinds[Kind.TEMP], "temp") == "never replicated"
    assert policy_line(config.kinds[Kind.IMAGE], "image") == "to every job target; and stores"
    assert "not a kind" in policy_line(None, "tmep")


def test_a_replica_is_never_mounted_and_after_a_failover_the_old_primary_is_one() -> None:
    from coordinator.kindjob import replica_roots

    config = parse_config(fleet('[kinds.home]\nmounts = ["editor"]',
                                targets='["beta:bk/t", "store:vault"]'))  # fmt: skip
    g = graph_of(alpha=[kinded(dataset("tank/t/alice"), "home")],
                 beta=[kinded(dataset("bk/t/alice"), "home")])  # fmt: skip
    now = replica_roots(config)
    assert now == {("beta", "bk/t")}
    assert [m.host for m in mounts_for(g, config.kinds, "editor", replicas=now)] == ["alpha"]
    after = replica_roots(config, {"j": "beta"})
    assert after == {("alpha", "tank/t")}
    assert [m.dataset for m in mounts_for(g, config.kinds, "editor", replicas=after)] == [
        "bk/t/alice"]


def test_replicas_get_the_source_key_group_so_a_failover_keeps_the_policy() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1"]),
               kinded(dataset("tank/t/vault", ["s1"]), "home", encryption="aes-256-gcm",
                      group="ops")],
        beta=[dataset("bk/t", ["s1"], guid_from="tank/t")],
        gamma=[dataset("bk/t", ["s1"], guid_from="tank/t"),
               kinded(dataset("bk/t/vault", ["s1"], guid_from="tank/t/vault"), "home",
                      encryption="aes-256-gcm", group="ops")],
    )  # fmt: skip
    kinds = '[kinds.home]\nencryption = "required"\nkey_group = "ops"\n'
    plan = plan_sync(g, parse_config(fleet(kinds, targets='["beta:bk/t", "gamma:bk/t"]')).job("j"),
                     job_id="J")  # fmt: skip
    labels = {(s.host, s.args.dataset, s.args.name, s.args.value) for s in plan.steps
              if s.kind == "set-property"}  # fmt: skip
    # gamma's replica holds both already; beta's new one gets the kind and the key group
    assert labels == {("beta", "bk/t/vault", KIND_PROPERTY, "home"),
                      ("beta", "bk/t/vault", KEY_GROUP_PROPERTY, "ops")}  # fmt: skip
    assert plan.refusals == ()  # the source holds its group: nothing refused on the way out
