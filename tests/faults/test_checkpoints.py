"""Checkpoints that prove themselves: a manifest of sizes and SHA-256 hashes, verified on resume; a
damaged checkpoint is named and the previous one used; a full disk leaves the previous one intact."""

from __future__ import annotations

import errno
import shutil

import pytest
import torch
from fault_harness import kill_and_resume, run_forked, weight_differences
from fault_stages import dpo

from alignlab import checkpoints
from alignlab.checkpoints import CheckpointError, latest, problem, writing
from fixtures_rlhf import rlhf_inputs  # noqa: F401


def _save(ckpt, step: int, payload: bytes = b"weights") -> None:
    with writing(ckpt, step) as tmp:
        (tmp / "model.bin").write_bytes(payload * 100)
        (tmp / "trainer_state.json").write_text(f'{{"step": {step}}}')


def test_each_save_writes_a_manifest_and_keeps_the_one_before(tmp_path):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    _save(ckpt, 4)
    _save(ckpt, 6)
    assert checkpoints.step_of(ckpt) == 6 and checkpoints.step_of(tmp_path / "checkpoint.prev") == 4
    assert problem(ckpt) is None and problem(tmp_path / "checkpoint.prev") is None
    assert not (tmp_path / "checkpoint.tmp").exists()  # the 2nd-to-last is dropped: two are kept
    assert latest(ckpt) == ckpt


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:50]), "model.bin has 50 bytes, the manifest says 700 (truncated?)"),
        (lambda f: f.write_bytes(b"X" + f.read_bytes()[1:]), "model.bin does not match its SHA-256"),
        (lambda f: f.unlink(), "model.bin is missing"),
    ],
    ids=["truncated", "flipped byte", "deleted"],
)
def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, capsys, damage, named):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    _save(ckpt, 4)
    damage(ckpt / "model.bin")
    assert problem(ckpt).startswith(named)
    chosen = latest(ckpt)
    err = capsys.readouterr().err
    assert chosen == tmp_path / "checkpoint.prev" and checkpoints.step_of(chosen) == 2
    assert f"checkpoint {ckpt} is damaged: {named}" in err and "moved to checkpoint.corrupt" in err
    assert (tmp_path / "checkpoint.corrupt").is_dir() and not ckpt.exists()


def test_when_every_checkpoint_is_damaged_the_run_stops_instead_of_starting_over(tmp_path):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    _save(ckpt, 4)
    for folder in (ckpt, tmp_path / "checkpoint.prev"):
        (folder / "model.bin").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="no intact checkpoint to resume from .*checkpoint: model.bin has 0 bytes"
    ):
        latest(ckpt)


def test_a_checkpoint_from_before_manifests_is_still_resumed(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text('{"step": 3}')
    assert latest(ckpt) == ckpt
    assert "has no manifest (an older alignlab wrote it): not verified" in capsys.readouterr().err


def test_an_unfinished_write_is_discarded_and_a_finished_one_used(tmp_path):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    (tmp_path / "checkpoint.tmp").mkdir()  # killed mid-write: no manifest yet
    (tmp_path / "checkpoint.tmp" / "model.bin").write_bytes(b"half")
    assert latest(ckpt) == ckpt and not (tmp_path / "checkpoint.tmp").exists()
    # killed between the manifest and the rename: the finished write is newer, so it is the one used
    shutil.copytree(ckpt, tmp_path / "checkpoint.tmp")
    (tmp_path / "checkpoint.tmp" / "trainer_state.json").write_text('{"step": 4}')
    checkpoints.write_manifest(tmp_path / "checkpoint.tmp", 4)
    assert latest(ckpt) == tmp_path / "checkpoint.tmp"
    _save(ckpt, 6)  # the next save replaces it
    assert checkpoints.step_of(ckpt) == 6 and checkpoints.step_of(tmp_path / "checkpoint.prev") == 2


def test_other_ranks_choose_the_same_checkpoint_without_moving_anything(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    _save(ckpt, 4)
    (ckpt / "model.bin").write_bytes(b"")
    assert latest(ckpt, tidy=False) == tmp_path / "checkpoint.prev" and ckpt.is_dir()  # read only
    assert capsys.readouterr().err == ""  # the main process reports it, once
    assert latest(ckpt) == tmp_path / "checkpoint.prev" and not ckpt.exists()


def test_a_full_disk_leaves_the_previous_checkpoint_intact_and_says_so(tmp_path):
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 2)
    with pytest.raises(CheckpointError) as e:
        with writing(ckpt, 4) as tmp:
            (tmp / "model.bin").write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value) == (
        f"saving the checkpoint of step 4 into {ckpt} failed: No space left on device; "
        f"the previous checkpoint {ckpt} (step 2) is intact"
    )
    assert problem(ckpt) is None and checkpoints.step_of(ckpt) == 2 and not (tmp_path / "checkpoint.tmp").exists()


def test_a_stage_resumes_past_a_corrupted_checkpoint_to_the_same_weights(rlhf_inputs, tmp_path, capsys):  # noqa: F811
    run = dpo(rlhf_inputs)
    assert run_forked(lambda: run(tmp_path / "whole", False)) == 0
    out = tmp_path / "damaged"
    assert kill_and_resume(run, out, [("step", 7)]) == 1  # killed after step 7: checkpoints of steps 6 and 4
    shutil.rmtree(out)
    assert run_forked(lambda: run(out, False), kill=("step", 7)) == -9
    assert checkpoints.step_of(out / "checkpoint") == 6 and checkpoints.step_of(out / "checkpoint.prev") == 4
    weights = out / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a torn write the rename did not catch
    capsys.readouterr()
    assert run_forked(lambda: run(out, True)) == 0
    assert not weight_differences(tmp_path / "whole", out)


def test_a_stage_stops_on_a_full_disk_with_its_last_checkpoint_intact(rlhf_inputs, tmp_path, monkeypatch):  # noqa: F811
    saves = []
    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            saves.append(f)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(
        CheckpointError, match=r"step 4 .* No space left on device; the previous checkpoint .* \(step 2\) is intact"
    ):
        dpo(rlhf_inputs)(tmp_path / "run", False)
    assert problem(tmp_path / "run" / "checkpoint") is None
    assert (
        checkpoints.step_of(tmp_path / "run" / "checkpoint") == 2 and not (tmp_path / "run" / "checkpoint.tmp").exists()
    )
