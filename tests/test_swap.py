"""The swap of a restored tree: the target is the old tree or the new one at every instant,
and a run killed between the steps is completed or cleaned up by the next one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fifo_watchdog import watchdog  # noqa: F401  (a fixture)

from gaia_core.checkpoints import swap
from gaia_core.owner import write_owner


def make_tree(path: Path, content: str) -> None:
    path.mkdir(parents=True)
    (path / "which").write_text(content)


def staged_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    final = tmp_path / "output"
    make_tree(final, "old")
    staging = tmp_path / f".output{swap.STAGING_INFIX}x"
    staging.mkdir()
    write_owner(staging, "test")
    make_tree(staging / "tree" / "out", "new")
    return final, staging, staging / "tree" / "out"


def test_exchange_swaps_in_one_step(tmp_path):
    final, _, staged = staged_pair(tmp_path)
    swap.swap_in(staged, final)
    assert (final / "which").read_text() == "new"
    assert (staged / "which").read_text() == "old"


def test_a_missing_target_is_simply_renamed_into_place(tmp_path):
    staged = tmp_path / "staged"
    make_tree(staged, "new")
    swap.swap_in(staged, tmp_path / "output")
    assert (tmp_path / "output" / "which").read_text() == "new"


def test_without_renameat2_two_journaled_renames_do_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(swap, "exchange", lambda a, b: False)
    final, _, staged = staged_pair(tmp_path)
    swap.swap_in(staged, final)
    assert (final / "which").read_text() == "new" and (staged / "which").read_text() == "old"
    assert not swap.journal_path(final).exists()


KILL_AFTER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from gaia_core.checkpoints import swap
    calls = {{"n": 0}}
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        calls["n"] += 1
        if calls["n"] == {after}:
            os.kill(os.getpid(), signal.SIGKILL)
    swap.exchange = lambda a, b: False
    os.rename = rename
    swap.swap_in(Path(sys.argv[1]), Path(sys.argv[2]))
""")


@pytest.mark.parametrize("after", [1, 2])
def test_a_kill_between_the_journaled_renames_is_completed_by_the_next_run(tmp_path, after):
    final, staging, staged = staged_pair(tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER.format(after=after), str(staged), str(final)])
    assert proc.returncode == -9
    assert swap.journal_path(final).exists()
    done = swap.recover(final)
    assert done and (final / "which").read_text() == "new"
    assert not swap.journal_path(final).exists()
    assert not (staged.with_name(staged.name + ".old")).exists()


KILL_BEFORE_CLEANUP = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from gaia_core.checkpoints import swap
    swap.swap_in(Path(sys.argv[1]), Path(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGKILL)  # before the old tree is removed
""")


def test_the_old_tree_a_killed_restore_left_is_removed_by_the_next_run(tmp_path):
    final = tmp_path / "output"
    make_tree(final, "old")
    staging = tmp_path / f".output{swap.STAGING_INFIX}killed"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from gaia_core.owner import write_owner
        from gaia_core.checkpoints import swap
        staging = Path({str(staging)!r}); staging.mkdir()
        write_owner(staging, "restore")
        (staging / "tree" / "out").mkdir(parents=True); (staging / "tree" / "out" / "which").write_text("new")
        swap.swap_in(staging / "tree" / "out", Path({str(final)!r}))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert (final / "which").read_text() == "new"
    assert swap.leftovers(final) == [staging]


def test_a_staging_dir_of_a_live_restore_is_not_a_leftover(tmp_path):
    final, staging, _ = staged_pair(tmp_path)
    assert swap.leftovers(final) == []
    assert staging.exists()


def test_recover_without_a_journal_does_nothing(tmp_path):
    final = tmp_path / "output"
    make_tree(final, "old")
    assert swap.recover(final) is None
    assert (final / "which").read_text() == "old"


def test_the_next_run_finishes_a_journaled_swap_and_removes_what_a_killed_restore_left(gaia_cli, pm, project):
    from counter_project import run

    project.write()
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    leftover = project.out.with_name(f".{project.out.name}{swap.STAGING_INFIX}dead")
    (leftover / "tree" / "counter_out").mkdir(parents=True)
    (leftover / ".gaia-owner.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 9}))
    result = run(gaia_cli, pm, "run", project.build)
    assert f"removed {leftover} left by an interrupted restore" in result.output
    assert not leftover.exists() and project.builds() == 1


def test_a_journal_whose_staging_dir_is_a_link_is_dropped_and_nothing_is_removed(tmp_path):
    final = tmp_path / "output"
    make_tree(final, "current")
    host = tmp_path / "host"
    make_tree(host / "tree" / "output.old", "host data")
    staging = tmp_path / f".output{swap.STAGING_INFIX}evil"
    os.symlink(host, staging)
    swap.journal_path(final).write_text(json.dumps(
        {"final": str(final), "staged": str(staging / "tree" / "output"), "old": str(staging / "tree" / "output.old")}))

    done = swap.recover(final)

    assert done and done.startswith("dropped a swap journal") and "symbolic link" in done
    assert (host / "tree" / "output.old" / "which").read_text() == "host data"
    assert (final / "which").read_text() == "current"
    assert not swap.journal_path(final).exists()


@pytest.mark.parametrize("entry", ["../output.old", "tree/output.old", "/etc", ".output.gaia-restore-x/../../etc"])
def test_a_journal_entry_outside_a_staging_dir_beside_the_target_is_refused(tmp_path, entry):
    final = tmp_path / "output"
    make_tree(final, "current")
    value = entry if entry.startswith("/") else str(tmp_path / entry)
    swap.journal_path(final).write_text(json.dumps({"staged": value, "old": value}))
    assert "names paths outside" in (swap.recover(final) or "")
    assert (final / "which").read_text() == "current"


def test_a_fifo_in_place_of_the_journal_is_dropped_without_waiting(tmp_path, watchdog):
    final = tmp_path / "output"
    make_tree(final, "current")
    watchdog.make(swap.journal_path(final))
    assert swap.recover(final) == f"dropped an unreadable swap journal {swap.journal_path(final)}"
    assert watchdog.fired == [] and not swap.journal_path(final).exists()
