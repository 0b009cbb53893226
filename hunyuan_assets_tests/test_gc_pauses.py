"""Long-lived objects are out of the garbage collector's sight while a mesh step runs."""

import gc

from hunyuan_assets.core import gc_pauses
from hunyuan_assets.core.gc_pauses import long_lived_objects_frozen
from hunyuan_assets.integration.backfill import materialize_images
from hunyuan_assets_tests.helpers import partition_keys, pipeline_for


def test_frozen_while_anyone_needs_it_and_given_back_after() -> None:
    assert gc.get_freeze_count() == 0
    # (A frozen object can still be freed by reference counting: counts may drop a little.)
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 10_000  # the interpreter's, pytest's, Dagster's objects
        with long_lived_objects_frozen():  # nested (another step): still frozen
            assert gc.get_freeze_count() > 10_000
        assert gc.get_freeze_count() > 10_000  # the outer user still needs it
    assert gc.get_freeze_count() == 0  # nothing stays uncollectable


def test_a_freeze_made_by_the_process_itself_is_kept() -> None:
    gc.freeze()  # what a preloading server does before it forks
    try:
        with long_lived_objects_frozen():
            assert gc.get_freeze_count() > 10_000
        assert gc.get_freeze_count() > 10_000  # not unfrozen behind its back
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_a_mesh_step_runs_with_long_lived_objects_frozen(
    emulator, instance, images_dir, tmp_path, monkeypatch
) -> None:
    seen: list[str] = []
    freeze, unfreeze = gc.freeze, gc.unfreeze

    def recording_freeze() -> None:
        seen.append("freeze")
        freeze()

    def recording_unfreeze() -> None:
        seen.append(f"unfreeze after {emulator.stats()['submissions']} submissions")
        unfreeze()

    monkeypatch.setattr(gc_pauses.gc, "freeze", recording_freeze)
    monkeypatch.setattr(gc_pauses.gc, "unfreeze", recording_unfreeze)
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    assert all(r.success for r in materialize_images(instance, pipeline, partition_keys(pipeline)))
    assert seen == ["freeze", "unfreeze after 3 submissions"]
    assert gc.get_freeze_count() == 0
