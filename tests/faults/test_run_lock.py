"""One writer per run folder: a second process is refused with the holder's PID; a lock left by a
dead process is recovered."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time

import pytest

from alignlab.run_lock import LOCK_NAME, RunFolderInUse, run_lock


def _hold(folder, ready):
    with run_lock(folder):
        ready.set()
        time.sleep(60)


@contextlib.contextmanager
def held_by_another_process(folder):
    """A live process holding ``folder``'s lock (its PID yielded), SIGKILLed on leaving: it dies holding it."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(folder, ready))
    holder.start()
    try:
        assert ready.wait(30)
        yield holder.pid
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holders_lock_recovered(tmp_path, capsys):
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(RunFolderInUse, match=rf"{tmp_path} is in use by process {pid} on .*started"):
            with run_lock(tmp_path):
                pass
    assert str(pid) in (tmp_path / LOCK_NAME).read_text()  # left behind by the killed holder
    with run_lock(tmp_path):
        assert str(os.getpid()) in (tmp_path / LOCK_NAME).read_text()
    assert f"recovered the lock left by process {pid}" in capsys.readouterr().err
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly


def test_the_same_folder_can_be_locked_again_after_a_clean_release(tmp_path, capsys):
    for _ in range(2):
        with run_lock(tmp_path):
            pass
    assert "recovered" not in capsys.readouterr().err


def test_the_cli_refuses_a_folder_in_use_in_one_line_and_writes_nothing(tmp_path, capsys):
    from alignlab.cli import main

    with held_by_another_process(tmp_path) as pid:
        assert main(["tokenizer", "--data", "corpus.jsonl", "--output_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"alignlab tokenizer: stopped: {tmp_path} is in use by process {pid}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # the holder's folder is untouched
