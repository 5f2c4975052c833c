"""gaia's own workspace directories written by someone else: the store's ``tmp/``, restore
staging directories and swap journals are data, never paths to follow (issue 18's row
"workspace attacker: build/checkpoints/tmp a symlink; a hand-written swap journal")."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from counter_project import Project, run
from fifo_watchdog import watchdog  # noqa: F401  (a fixture)

from gaia_core.checkpoints import swap

HOURS_AGO = time.time() - 5 * 3600


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A directory outside the workspace whose entries look like old, ownerless litter."""
    victim = tmp_path / "host-dir"
    (victim / "old-dir").mkdir(parents=True)
    (victim / "old-dir" / "data").write_text("host data\n")
    (victim / "old-file").write_text("host file\n")
    for path in (victim / "old-dir" / "data", victim / "old-dir", victim / "old-file"):
        os.utime(path, (HOURS_AGO, HOURS_AGO))
    return victim


def snapshot(directory: Path) -> list[tuple[str, str]]:
    return sorted((str(p.relative_to(directory)), p.read_text() if p.is_file() else "/")
                  for p in directory.rglob("*"))


def age(path: Path) -> None:
    os.utime(path, (HOURS_AGO, HOURS_AGO), follow_symlinks=False)


def test_a_linked_store_tmp_is_never_listed_cleaned_or_written_through(gaia_cli, pm, project: Project, host_dir):
    project.write()
    project.store.mkdir(parents=True)
    os.symlink(host_dir, project.store / "tmp")
    before = snapshot(host_dir)

    report = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--json").json
    assert report["local"]["litter"] == []
    result = run(gaia_cli, pm, "run", project.build)

    assert snapshot(host_dir) == before
    assert not (project.store / "tmp").is_symlink() and (project.store / "tmp").is_dir()
    assert "is a symbolic link, not a directory; replacing it with one" in result.output
    assert len(project.objects()) == 1 and project.builds() == 1


def test_litter_in_tmp_is_removed_without_following_a_link_or_waiting_on_a_fifo(gaia_cli, pm, project: Project,
                                                                             host_dir, watchdog):
    project.write()
    tmp = project.store / "tmp"
    (tmp / "killed-staging").mkdir(parents=True)
    watchdog.make(tmp / "killed-staging" / ".gaia-owner.json")
    age(tmp / "killed-staging")
    os.symlink(host_dir, tmp / "evil")
    age(tmp / "evil")
    before = snapshot(host_dir)

    result = run(gaia_cli, pm, "run", project.build)

    assert watchdog.fired == []
    assert snapshot(host_dir) == before
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert f"removed {tmp / 'evil'} left in the store" in result.output


def test_a_killed_restores_staging_dir_with_a_fifo_owner_record_is_removed_without_waiting(gaia_cli, pm, project,
                                                                                          watchdog):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    leftover = project.out.with_name(f".{project.out.name}{swap.STAGING_INFIX}dead")
    (leftover / "tree").mkdir(parents=True)
    watchdog.make(leftover / ".gaia-owner.json")

    result = run(gaia_cli, pm, "run", project.build)

    assert watchdog.fired == []
    assert f"removed {leftover} left by an interrupted restore" in result.output
    assert not leftover.exists() and project.builds() == 1


def test_a_hand_written_swap_journal_naming_a_host_directory_is_dropped(gaia_cli, pm, project, host_dir):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    journal = swap.journal_path(project.out)
    journal.write_text(json.dumps({"final": str(project.out), "staged": str(host_dir / "old-dir"),
                                   "old": str(host_dir)}))
    before = snapshot(host_dir)
    shutil.rmtree(project.out)

    result = run(gaia_cli, pm, "run", project.build)

    assert snapshot(host_dir) == before
    assert f"dropped a swap journal {journal} that names paths outside" in result.output
    assert not journal.exists()


def test_a_link_named_like_a_restore_staging_dir_is_never_followed(gaia_cli, pm, project, host_dir):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    os.symlink(host_dir, project.out.with_name(f".{project.out.name}{swap.STAGING_INFIX}evil"))
    before = snapshot(host_dir)

    run(gaia_cli, pm, "run", project.build)

    assert snapshot(host_dir) == before
    assert (project.out / "value.txt").read_text() == "a"
