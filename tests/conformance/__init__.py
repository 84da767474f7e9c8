"""The backend conformance suite: the same ZFS scenarios against any ZfsBackend.

Each scenario is a plain function taking a :class:`tests.conformance.target.Subject` (a backend,
a dataset root it may fill, and access to the host's files). ``SCENARIOS`` lists them all;
``scenario_params`` turns them into pytest parameters, marking the ones a backend is known to
fail as ``xfail(strict=True)`` so that a fix is noticed.

Running it on a backend (the simulation, or real OpenZFS in the lab)::

    from tests.conformance import scenario_params
    from tests.conformance.target import CommandFiles, Subject

    @pytest.fixture
    def target(lab_host) -> Iterator[Subject]:
        backend = RealBackend(["ssh", "-o", "BatchMode=yes", f"root@{lab_host}"])
        root = f"{POOL}/conformance-{uuid4().hex[:8]}"
        backend.create(root)
        yield Subject(backend, root, CommandFiles(backend, ["ssh", f"root@{lab_host}"]))
        backend.destroy(root, recursive=True)

    @pytest.mark.parametrize("scenario", scenario_params())
    def test_conformance(scenario: Scenario, target: Subject) -> None:
        scenario(target)

For a backend whose mountpoints are on this machine use ``LocalFiles(backend, tmp_path)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from _pytest.mark import ParameterSet

from tests.conformance import admin, fidelity, keys, kinds, sends
from tests.conformance.target import Subject

Scenario = Callable[[Subject], None]

SCENARIOS: tuple[Scenario, ...] = (
    sends.full_send,
    sends.incremental_send,
    sends.intermediate_send,
    sends.clone_arrives_as_clone,
    sends.resume_after_truncated_receive,
    sends.divergence_detected_and_forced,
    sends.diverged_target_snapshot_forced,
    sends.noop_target_snapshot_accepted,
    sends.incremental_source_missing_on_target,
    sends.bookmark_as_incremental_source,
    sends.raw_encrypted_send,
    keys.change_key_rewraps_root_and_children,
    keys.change_key_makes_a_new_encryption_root,
    keys.change_key_refused_on_clones_and_locked_keys,
    keys.raw_incremental_carries_the_new_key,
    keys.create_with_key_on_stdin,
    admin.promote_moves_origins,
    admin.holds_block_destroy,
    admin.dependent_clones_block_destroy,
    admin.rollback_needs_destroy_newer,
    admin.atomic_recursive_snapshot,
    admin.properties_set_get_inherit,
    kinds.kind_steps_set_inherit_and_read,
    kinds.labelled_replica_takes_increments,
    admin.space_shared_by_clones,
    admin.bad_names_refused,
    fidelity.full_stream_onto_existing_refused,
    fidelity.forced_full_stream_needs_no_snapshots,
    fidelity.send_from_itself_refused,
    fidelity.unmount_and_mount_keep_the_files,
)


def scenario_params(known_failures: Mapping[str, str] | None = None) -> list[ParameterSet]:
    """Every scenario as a pytest parameter (id = its name).

    ``known_failures`` maps a scenario's name to the reason it fails on this backend; those run
    as ``xfail(strict=True)``, so they are reported, never silently skipped.
    """
    known = dict(known_failures or {})
    unknown = set(known) - {s.__name__ for s in SCENARIOS}
    if unknown:
        raise ValueError(f"no such scenarios: {sorted(unknown)}")
    params = []
    for scenario in SCENARIOS:
        reason = known.get(scenario.__name__)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(scenario, id=scenario.__name__, marks=marks))
    return params
