"""A restored tree is up to date for make wherever it lands, for an anchor that knows
nothing about it: ``[maker]`` below compiles sources that live outside its out dir with a
real ``make`` (like an autotools plugin), and writes no code for mtimes.

Checked: a fresh workspace at another path whose every source is newer than the checkpoint
(0 objects rebuilt), a source checked out again with the same content while the tree is in
place (gaia moves the tree's mtimes after it), a changed source (a miss, and the
incremental build rebuilds that object only), and no mtime in the future.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mtime_order import filesystem_now, mtimes, ranks, touch_all

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.fingerprints import FingerprintSource, hash_tree
from gaia_core.plugins import get_plugin_manager
from gaia_core.tasks import Module, StrictModel, Task

MAKEFILE = """\
SRC ?= src
OBJS := $(patsubst $(SRC)/%.c,%.o,$(wildcard $(SRC)/*.c))
all: prog
%.o: $(SRC)/%.c $(SRC)/config.h
\tcp $< $@
\techo $@ >> compile.log
prog: $(OBJS)
\tcat $^ > $@
\techo $@ >> compile.log
"""


class MakerConfig(StrictModel):
    src: str = "src"


def out_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "maker-out"


def make_argv(build) -> list[str]:  # type: ignore[no-untyped-def]
    src = build.workspace.resolve(build.settings["maker"].src)
    return ["make", "-s", "-C", str(out_dir(build)), "-f", str(src / "Makefile"), f"SRC={src}"]


def build_maker(ctx) -> None:  # type: ignore[no-untyped-def]
    out_dir(ctx.build).mkdir(parents=True, exist_ok=True)
    ctx.run_cmd(make_argv(ctx.build))


class MakerModule(Module):
    table = "maker"
    config_model = MakerConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [Task("maker.build", run=build_maker, after=["core.init"], provides=["maker:built"])]


class MakerSources(FingerprintSource):
    kind = "maker.src"
    paths = ("maker.src",)

    def digest(self, build, path, value):  # type: ignore[no-untyped-def]
        return hash_tree(build.workspace.resolve(value))


class MakerAnchor(Anchor):
    task = "maker.build"
    default_fingerprint_paths = ("maker.src",)

    def targets(self) -> list[Target]:
        return [Target("maker_out", out_dir(self.build))]


class MakerPlugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [MakerModule]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [MakerAnchor]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        return [MakerSources]


BUILD = """\
[maker]

[checkpoints]
enabled = true

[checkpoints.backends.dir.team]
path = "{shared}"

[[checkpoints.points]]
id = "maker"
anchor_task = "maker.build"
backend = "dir:team"
upload_policy = "always"
"""


class Workspace:
    def __init__(self, root: Path, shared: Path):
        self.root = root
        self.build = root / "build.toml"
        self.src = root / "src"
        self.out = root / "build" / "maker-out"
        if not root.exists():
            self.src.mkdir(parents=True)
            self.build.write_text(BUILD.format(shared=shared))
            (self.src / "Makefile").write_text(MAKEFILE)
            (self.src / "config.h").write_text("#define N 1\n")
            for name in ("a", "b", "c"):
                (self.src / f"{name}.c").write_text(f"int {name};\n")

    def compiled(self) -> list[str]:
        log = self.out / "compile.log"
        return log.read_text().split() if log.exists() else []

    def make_is_up_to_date(self) -> bool:
        """``make -q``: exit 0 when make would run nothing."""
        argv = [a for a in make_argv_for(self) if a != "-s"]
        return subprocess.run([*argv, "-q"], capture_output=True).returncode == 0

    def marker(self) -> dict:
        return json.loads((self.out / ".gaia-checkpoint.json").read_text())


def make_argv_for(ws: Workspace) -> list[str]:
    return ["make", "-s", "-C", str(ws.out), "-f", str(ws.src / "Makefile"), f"SRC={ws.src}"]


@pytest.fixture
def pm():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MakerPlugin(), name="maker")
    return pm


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "team-cache"
    path.mkdir()
    return path


def gaia_run(gaia_cli, pm, ws: Workspace) -> str:  # type: ignore[no-untyped-def]
    result = gaia_cli("run", ws.build, pm=pm)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("held", [True, False], ids=["written-placed", "list-streamed-placed-by-a-walk"])
def test_a_fresh_workspace_whose_sources_are_newer_restores_up_to_date(gaia_cli, pm, tmp_path, shared, monkeypatch,
                                                                       held):
    from gaia_core.checkpoints import freshness, tree

    walks: list[int] = []
    place_mtimes = freshness.place_mtimes
    monkeypatch.setattr(freshness, "place_mtimes", lambda *a, **k: walks.append(1) or place_mtimes(*a, **k))
    if not held:  # an entry list too long to hold: streamed into the writer, then placed by a walk
        monkeypatch.setattr(tree, "HELD_ENTRIES", 0)
    first = Workspace(tmp_path / "home" / "laptop", shared)
    gaia_run(gaia_cli, pm, first)
    assert first.compiled() == ["a.o", "b.o", "c.o", "prog"]
    captured = mtimes(first.out)

    time.sleep(0.05)
    second = Workspace(tmp_path / "ci" / "runner-checkout", shared)  # a fresh clone: every file new
    shutil.copy(first.src / "Makefile", second.src / "Makefile")
    touch_all(second.src)
    first.root.rename(tmp_path / "parked")  # nothing may come from the first workspace
    newest_source = max(mtimes(second.src).values())
    assert newest_source > max(captured.values())

    output = gaia_run(gaia_cli, pm, second)
    assert "restored" in output and "SKIP: maker.build" in output, output
    assert second.make_is_up_to_date(), "make would rebuild the restored tree"
    subprocess.run(make_argv_for(second), check=True)
    assert second.compiled() == ["a.o", "b.o", "c.o", "prog"]  # the log came with the tree; nothing added
    restored = mtimes(second.out)
    assert ranks({k: v for k, v in restored.items() if k != "."}) == \
        ranks({k: v for k, v in captured.items() if k != "."})
    assert min(restored.values()) > newest_source
    assert max(restored.values()) <= filesystem_now(second.out)  # nothing in the future
    placed = second.marker()["mtimes"]["placed"]
    assert placed["entries"] == len(captured) and placed["at_ns"] <= filesystem_now(second.out)
    assert second.marker()["mtimes"]["inputs_ok_ns"] == placed["oldest_ns"]
    assert walks == ([] if held else [1])  # a held list: every entry was written with its placed mtime


def test_without_the_step_that_workspace_would_rebuild(gaia_cli, pm, tmp_path, shared):
    """The scenario above is a real one: the captured times are older than the new sources."""
    first = Workspace(tmp_path / "laptop", shared)
    gaia_run(gaia_cli, pm, first)
    copy = tmp_path / "copy-keeping-mtimes"
    shutil.copytree(first.out, copy, symlinks=True)  # what a restore kept before: cp -a
    touch_all(first.src)
    argv = ["make", "-C", str(copy), "-f", str(first.src / "Makefile"), f"SRC={first.src}", "-q"]
    assert subprocess.run(argv, capture_output=True).returncode != 0


def test_a_source_checked_out_again_in_place_moves_the_tree_after_it(gaia_cli, pm, tmp_path, shared):
    ws = Workspace(tmp_path / "ws", shared)
    gaia_run(gaia_cli, pm, ws)
    assert ws.marker()["mtimes"] == {"placed": None, "inputs_ok_ns": max(mtimes(ws.src).values())}
    quiet = gaia_run(gaia_cli, pm, ws)
    assert "already holds" in quiet and "an input was written" not in quiet  # nothing to do: nothing done

    before = mtimes(ws.out)
    time.sleep(0.01)
    touch_all(ws.src)  # git checkout other-branch && git checkout -: same content, new mtimes
    assert not ws.make_is_up_to_date()
    output = gaia_run(gaia_cli, pm, ws)
    assert "already holds" in output and "SKIP: maker.build" in output
    assert "an input was written at" in output and "after this tree was made" in output
    assert ws.make_is_up_to_date()
    after = mtimes(ws.out)
    assert ranks({k: v for k, v in after.items() if k != "."}) == ranks({k: v for k, v in before.items() if k != "."})
    assert min(after.values()) > max(mtimes(ws.src).values())
    assert ws.marker()["how"] == "captured" and ws.marker()["mtimes"]["placed"]["entries"] == len(before)
    again = gaia_run(gaia_cli, pm, ws)
    assert "an input was written" not in again


def test_a_changed_source_misses_and_make_rebuilds_only_what_it_decides(gaia_cli, pm, tmp_path, shared):
    ws = Workspace(tmp_path / "ws", shared)
    gaia_run(gaia_cli, pm, ws)
    shutil.rmtree(ws.out)
    gaia_run(gaia_cli, pm, ws)  # restored: placed at the time of this restore
    assert ws.marker()["how"] == "restored"
    time.sleep(0.01)
    (ws.src / "b.c").write_text("int b = 2;\n")
    output = gaia_run(gaia_cli, pm, ws)
    assert "restore miss (reason=inputs_changed:maker.src)" in output
    assert ws.compiled() == ["a.o", "b.o", "c.o", "prog", "b.o", "prog"]  # incremental: b.o and what needs it
    assert max(mtimes(ws.out).values()) <= filesystem_now(ws.out)


def test_the_fingerprint_knows_the_newest_input_its_sources_read(tmp_path):
    from gaia_core.fingerprints import _collect_input_times, hash_file, note_input

    (tmp_path / "tree").mkdir()
    for i, name in enumerate(["a", "b"]):
        (tmp_path / "tree" / name).write_text(name)
        os.utime(tmp_path / "tree" / name, ns=(1_600_000_000_000_000_000 + i,) * 2)
    (tmp_path / "single").write_text("s")
    os.utime(tmp_path / "single", ns=(1_500_000_000_000_000_000,) * 2)
    os.utime(tmp_path / "tree", ns=(1_700_000_000_000_000_000,) * 2)  # directories are not hashed
    note_input(tmp_path / "single")  # outside a computation: nothing to note into
    with _collect_input_times() as times:
        assert times.newest_ns is None
        hash_file(tmp_path / "single")
        assert times.newest_ns == 1_500_000_000_000_000_000
        hash_tree(tmp_path / "tree")
        assert times.newest_ns == 1_600_000_000_000_000_001
        note_input(tmp_path / "tree")
        note_input(tmp_path / "missing")
        assert times.newest_ns == 1_700_000_000_000_000_000


def _zombies() -> list[str]:
    """This process's children that ended and were not reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(stat.parent.name)
    return found


def test_inputs_noted_meanwhile_are_found_beside_the_computation(tmp_path):
    """A slow look for mtimes runs in a process of its own: the computation ends without
    waiting for it, the newest mtime waits, and the process is reaped once it answers."""
    from gaia_core.fingerprints import _collect_input_times, note_input, note_inputs_meanwhile

    (tmp_path / "a").write_text("a")
    os.utime(tmp_path / "a", ns=(1_500_000_000_000_000_000,) * 2)
    parent = os.getpid()

    def slow() -> int:
        assert os.getpid() != parent  # found in another process
        time.sleep(1.5)
        return 1_600_000_000_000_000_000

    started = time.monotonic()
    with _collect_input_times() as times:
        note_inputs_meanwhile(slow)
        note_input(tmp_path / "a")
        note_inputs_meanwhile(lambda: None)  # nothing found: counts for nothing
    assert time.monotonic() - started < 1.0
    assert times.newest_ns == 1_600_000_000_000_000_000
    assert time.monotonic() - started >= 1.5
    assert times.newest_ns == 1_600_000_000_000_000_000  # asked again: the same, at once
    time.sleep(0.2)
    assert _zombies() == []


def test_tasks_that_ask_for_the_newest_input_at_once_all_wait_for_the_looks():
    from gaia_core.fingerprints import _collect_input_times, note_inputs_meanwhile

    def slow() -> int:
        time.sleep(0.5)
        return 1_600_000_000_000_000_000

    with _collect_input_times() as times:
        note_inputs_meanwhile(slow)
    answers: list[int | None] = []
    askers = [threading.Thread(target=lambda: answers.append(times.newest_ns)) for _ in range(3)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert answers == [1_600_000_000_000_000_000] * 3


def test_a_look_holds_no_pipe_of_the_caller_open():
    """A caller that closes its end of a pipe to a helper sees the helper end at once: the
    look's process keeps none of the caller's descriptors."""
    from gaia_core.fingerprints import _collect_input_times, note_inputs_meanwhile

    read_end, write_end = os.pipe()
    try:
        def look() -> int:
            try:
                os.fstat(write_end)
            except OSError:
                return 2  # closed here
            return 1

        with _collect_input_times() as times:
            note_inputs_meanwhile(look)
        assert times.newest_ns == 2
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_look_whose_process_gives_no_answer_is_done_again_by_the_caller():
    from gaia_core.fingerprints import _collect_input_times, note_inputs_meanwhile

    parent = os.getpid()

    def dies_unless_in_the_caller() -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return 1_700_000_000_000_000_000

    with _collect_input_times() as times:
        note_inputs_meanwhile(dies_unless_in_the_caller)
        note_inputs_meanwhile(lambda: -5)  # before 1970: still an answer
    assert times.newest_ns == 1_700_000_000_000_000_000
    assert _zombies() == []


def test_a_checkout_known_by_its_commit_counts_its_directories_not_git_nor_links(tmp_path):
    from gaia_buildroot.fingerprint_sources import note_checkout

    from gaia_core.fingerprints import _collect_input_times

    src = tmp_path / "src"
    (src / "package" / "busybox").mkdir(parents=True)
    (src / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (src / "linked").symlink_to(tmp_path / "elsewhere")
    base = 1_600_000_000_000_000_000
    for offset, path in enumerate([src / "package" / "busybox", src / "package", src]):
        os.utime(path, ns=(base + offset,) * 2)
    os.utime(src / ".git" / "objects", ns=(base + 10,) * 2)
    os.utime(src / ".git", ns=(base + 11,) * 2)
    os.utime(tmp_path / "elsewhere", ns=(base + 12,) * 2)
    os.utime(src / "linked", ns=(base + 13,) * 2, follow_symlinks=False)
    os.utime(src, ns=(base + 2,) * 2)
    with _collect_input_times() as times:
        note_checkout(src)
    assert times.newest_ns == base + 2
    os.utime(src / "package" / "busybox", ns=(base + 5,) * 2)  # checked out again, deep down
    with _collect_input_times() as times:
        note_checkout(src)
    assert times.newest_ns == base + 5
