"""Backups under preemption: periodic backups of a killed run, backups after a whole call of
several steps, backups counted in steps, and damaged backups and checkpoints set aside. Every
restarted run ends with the weights of a run never interrupted, bit for bit."""

import re

import pytest

from conftest import run_cli
from preemption_runs import (STEPS, assert_same_weights, backup_position, interrupt, sets, train,
                             uninterrupted)  # noqa: F401 - uninterrupted is a fixture
from trainer.training.preemption import RESTART_EXIT_CODE

def test_periodic_backups_let_a_killed_run_resume_mid_epoch(tmp_path, uninterrupted):
    every = "train.backup_every_steps=25"
    cut = interrupt(tmp_path, "p", "SIGKILL", STEPS + 28, extra=[every])
    assert cut.returncode == -9
    done = run_cli("--output_dir", str(tmp_path), *sets("p"), "--set", every)
    assert done.returncode == 0, done.stderr[-3000:]
    # Killed after batch 28 of epoch 2 (1-based); the last backup came fewer than 25
    # batches before, and the run resumes at the batch after it.
    batch, steps = map(int, re.search(r"from its backup in epoch 2, at batch (\d+) of (\d+)",
                                      done.stdout).groups())
    killed_after = STEPS + 28 - steps
    assert killed_after - 25 < batch <= killed_after
    assert_same_weights(tmp_path / "p" / "model.h5", uninterrupted)


def test_several_steps_per_call_back_up_after_a_whole_call_and_resume_exactly(tmp_path,
                                                                              uninterrupted):
    per_call = ["--set", "train.steps_per_execution=4"]
    cut = interrupt(tmp_path, "spe", "SIGTERM", 3, extra=per_call[1:])  # after 3 calls: 12 batches
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    # The signal comes inside the fourth call (batches 13-16); the backup stands for its end.
    assert backup_position(cut.stdout) == (1, 16, STEPS)
    done = run_cli("--output_dir", str(tmp_path), *sets("spe"), *per_call)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"from its backup in epoch 1, at batch 17 of {STEPS}" in done.stdout
    # four steps per call train exactly as one step per call does
    assert_same_weights(tmp_path / "spe" / "model.h5", uninterrupted)


def test_periodic_backups_count_steps_not_calls(tmp_path, uninterrupted):
    every = ["train.backup_every_steps=24", "train.steps_per_execution=8"]
    cut = interrupt(tmp_path, "pc", "SIGKILL", 11, extra=every)  # 11 calls: 40 into epoch 2
    assert cut.returncode == -9
    done = run_cli("--output_dir", str(tmp_path), *sets("pc"), *(a for e in every for a in ("--set", e)))
    assert done.returncode == 0, done.stderr[-3000:]
    # Calls end at batches 8, 16, 24, 32, 40, 42 of each epoch (the last call is short) and a
    # backup follows every 24 steps, counted on across epochs: batch 24 of epoch 1 (step 24),
    # then 8 and 32 of epoch 2 (steps 50 and 74; killed after 40, step 82, before the next
    # was due).
    assert f"from its backup in epoch 2, at batch 33 of {STEPS}" in done.stdout
    assert_same_weights(tmp_path / "pc" / "model.h5", uninterrupted)


@pytest.mark.parametrize("damage", ["flip bytes in the data", "truncate the index"])
def test_a_damaged_backup_is_set_aside_with_a_warning(tmp_path, uninterrupted, damage):
    cut = interrupt(tmp_path, "d", "SIGTERM", 10)
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    backup = tmp_path / "d" / "checkpoints" / "backup"
    if damage.startswith("flip"):
        path = next(backup.glob("ckpt-*.data-*"))
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(raw))
    else:
        path = next(backup.glob("ckpt-*.index"))
        path.write_bytes(path.read_bytes()[:40])

    resumed = train(tmp_path, "d")
    assert "is damaged" in resumed.stdout and "resuming from the last epoch checkpoint" in resumed.stdout
    # The epoch checkpoint carries everything too, so even this restart ends bit for bit equal.
    assert_same_weights(tmp_path / "d" / "model.h5", uninterrupted)


def test_a_damaged_epoch_checkpoint_starts_over_with_a_warning(tmp_path, uninterrupted):
    cut = interrupt(tmp_path, "s", "SIGKILL", STEPS + 18)  # in epoch 2
    assert cut.returncode == -9
    (tmp_path / "s" / "checkpoints" / "state.json").write_text('{"epoch": 1, "hist')
    resumed = train(tmp_path, "s")
    assert "is damaged" in resumed.stdout and "starting the run over" in resumed.stdout
    assert_same_weights(tmp_path / "s" / "model.h5", uninterrupted)
