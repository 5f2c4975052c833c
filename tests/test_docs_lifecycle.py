"""docs/lifecycle.md is what a plugin sees: a recording plugin runs the build of the page and
each ``<!-- lifecycle: NAME -->`` block's lines appear, in order, in that run's output; the
statements about target directories (marker, incremental miss, whole-tree restore, what a
restore keeps) are checked on real runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import click
import pytest
from mtime_order import filesystem_now, touch_all
from pydantic import model_validator

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.fingerprints import FingerprintSource, InputPending, hash_tree
from gaia_core.tasks import Module, StrictModel, Task

DOC = (Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md").read_text()
MARKER = ".gaia-checkpoint.json"
RECEIPT = ".gaia-receipt.jsonl.zst"


def say(text: str) -> None:
    click.echo(f"plugin: {text}")


class ToolchainConfig(StrictModel):
    source: str = "src"
    upstream: str = "upstream"

    @model_validator(mode="after")
    def _seen(self) -> ToolchainConfig:
        say("ToolchainConfig validated")
        return self


def output_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "toolchain"


def fetch(ctx) -> None:  # type: ignore[no-untyped-def]
    say("task toolchain.fetch runs")
    settings = ctx.build.settings["toolchain"]
    source = ctx.build.workspace.resolve(settings.source)
    if not source.exists():
        shutil.copytree(ctx.build.workspace.resolve(settings.upstream), source)


def build_toolchain(ctx) -> None:  # type: ignore[no-untyped-def]
    out = output_dir(ctx.build)
    previous = "kept" if (out / "tool").exists() else "absent"
    marker = "present" if (out / MARKER).exists() else "absent"
    say(f"task toolchain.build runs; previous output {previous}, marker {marker}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ctx.build.workspace.resolve("src/tool.sh"), out / "tool")


def install(ctx) -> None:  # type: ignore[no-untyped-def]
    say("task toolchain.install runs")


class ToolchainModule(Module):
    table = "toolchain"
    config_model = ToolchainConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        say("Module.plan(build, settings)")
        return [
            Task("toolchain.fetch", run=fetch, after=["core.init"]),
            Task("toolchain.build", run=build_toolchain, after=["toolchain.fetch"], provides=["toolchain:built"]),
            Task("toolchain.install", run=install, after=["toolchain:built"]),
        ]


class ToolchainAnchor(Anchor):
    task = "toolchain.build"
    default_fingerprint_paths = ("toolchain.source",)
    restore_after = ("toolchain.fetch",)

    def __init__(self, build):  # type: ignore[no-untyped-def]
        super().__init__(build)
        say("Anchor(build)")

    def targets(self):  # type: ignore[no-untyped-def]
        say("Anchor.targets()")
        return [Target("toolchain", output_dir(self.build))]

    def inactive_reason(self):  # type: ignore[no-untyped-def]
        say("Anchor.inactive_reason()")
        return None

    def fingerprint_salt(self):  # type: ignore[no-untyped-def]
        say("Anchor.fingerprint_salt()")
        return {}

    def relocation_roots(self):  # type: ignore[no-untyped-def]
        say("Anchor.relocation_roots()")
        return super().relocation_roots()


class ToolchainSources(FingerprintSource):
    kind = "toolchain-sources"
    paths = ("toolchain.source",)

    def digest(self, build, path, value):  # type: ignore[no-untyped-def]
        source = build.workspace.resolve(value)
        if not source.exists():
            say(f"FingerprintSource.digest(build, {path!r}, {value!r}) -> InputPending")
            raise InputPending("toolchain.fetch", f"{value} is not fetched yet")
        say(f"FingerprintSource.digest(build, {path!r}, {value!r})")
        return hash_tree(source)


class Recorder:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        say("gaia_register_modules()")
        return [ToolchainModule]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        say("gaia_register_anchors()")
        return [ToolchainAnchor]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        say("gaia_register_fingerprint_sources()")
        return [ToolchainSources]

    @hookimpl
    def gaia_register_backends(self):  # type: ignore[no-untyped-def]
        say("gaia_register_backends()")

    @hookimpl
    def gaia_register_config_tables(self):  # type: ignore[no-untyped-def]
        say("gaia_register_config_tables()")

    @hookimpl
    def gaia_validate_config(self, build):  # type: ignore[no-untyped-def]
        say("gaia_validate_config(build)")
        return []

    @hookimpl
    def gaia_extend_plan(self, build, tasks):  # type: ignore[no-untyped-def]
        say("gaia_extend_plan(build, tasks)")
        return []

    @hookimpl
    def gaia_run_preamble(self, build, dry_run):  # type: ignore[no-untyped-def]
        say(f"gaia_run_preamble(build, dry_run={dry_run})")
        return []

    @hookimpl
    def gaia_register_commands(self, cli):  # type: ignore[no-untyped-def]
        say("gaia_register_commands(cli)")


BUILD = """
[toolchain]

[checkpoints]
enabled = true

[[checkpoints.points]]
id = "toolchain"
anchor_task = "toolchain.build"
"""


def doc_block(name: str) -> list[str]:
    match = re.search(rf"<!-- lifecycle: {re.escape(name)} -->\n```text\n(.*?)```", DOC, re.S)
    assert match, f"docs/lifecycle.md has no block '{name}'"
    return [line for line in match.group(1).splitlines() if line.strip()]


def pattern(line: str) -> re.Pattern[str]:
    regex = re.escape(line)
    for placeholder, replacement in (("<fp>", "[0-9a-f]{12}"), ("<path>", r"\S+"), (r"\.\.\.", ".*")):
        regex = regex.replace(re.escape(placeholder) if placeholder.startswith("<") else placeholder, replacement)
    return re.compile(regex)


def assert_in_order(block: list[str], output: str) -> None:
    lines = output.splitlines()
    at = 0
    for expected in block:
        regex = pattern(expected)
        while at < len(lines) and not regex.fullmatch(lines[at]):
            at += 1
        assert at < len(lines), f"'{expected}' does not come next in the output:\n{output}"
        at += 1


@pytest.fixture
def run(gaia_cli, gaia_core_pm, write_build, capsys):  # type: ignore[no-untyped-def]
    gaia_core_pm.register(Recorder(), name="recorder")
    write_build("upstream/tool.sh", "#!/bin/sh\necho 1.0\n")
    build = write_build("build.toml", BUILD)

    def run() -> str:
        capsys.readouterr()
        result = gaia_cli("run", build, pm=gaia_core_pm)
        assert result.exit_code == 0, result.output
        return capsys.readouterr().out + result.output  # the CLI is built before it runs

    return run


def test_the_runs_of_the_page(run, tmp_path):
    assert_in_order(doc_block("first run"), run())
    assert_in_order(doc_block("second run"), run())
    shutil.rmtree(tmp_path / "build" / "toolchain")
    assert_in_order(doc_block("target removed"), run())
    touch_all(tmp_path / "src")
    assert_in_order(doc_block("sources checked out again"), run())
    (tmp_path / "src" / "tool.sh").write_text("#!/bin/sh\necho 2.0\n")
    assert_in_order(doc_block("source changed"), run())


def test_the_order_check_fails_on_a_wrong_order():
    with pytest.raises(AssertionError):
        assert_in_order(["b", "a"], "a\nb\n")
    assert_in_order(["captured <fp> ..."], "x\ncaptured 0123456789ab (1 KiB) in 0.1s\n")


def test_the_marker_names_the_checkpoint_and_a_miss_removes_only_the_marker(run, tmp_path):
    run()
    target = tmp_path / "build" / "toolchain"
    marker = json.loads((target / MARKER).read_text())
    assert set(marker) == {"point", "anchor_task", "fingerprint", "how", "at", "mtimes"}
    assert (marker["point"], marker["anchor_task"], marker["how"]) == ("toolchain", "toolchain.build", "captured")
    newest_source = max(p.lstat().st_mtime_ns for p in (tmp_path / "src").rglob("*"))
    assert marker["mtimes"] == {"placed": None, "inputs_ok_ns": newest_source}

    (target / "left-by-the-last-build.o").write_text("object")
    (tmp_path / "src" / "tool.sh").write_text("#!/bin/sh\necho 2.0\n")
    output = run()
    assert "plugin: task toolchain.build runs; previous output kept, marker absent" in output
    assert (target / "left-by-the-last-build.o").read_text() == "object"  # incremental: kept on a miss
    assert json.loads((target / MARKER).read_text())["fingerprint"] != marker["fingerprint"]


def test_a_restore_replaces_the_target_as_a_whole(run, tmp_path):
    run()
    target = tmp_path / "build" / "toolchain"
    (target / "extra.txt").write_text("not in the checkpoint")
    (target / MARKER).unlink()  # the next run must restore
    output = run()
    assert "restored" in output and "SKIP: toolchain.build" in output
    assert not (target / "extra.txt").exists()
    assert json.loads((target / MARKER).read_text())["how"] == "restored"
    assert not [p for p in target.parent.iterdir() if ".gaia-restore-" in p.name]


def test_a_restore_keeps_the_order_of_times_to_the_nanosecond_modes_links_and_hard_links(run, tmp_path):
    run()
    target = tmp_path / "build" / "toolchain"
    (target / "sub").mkdir()
    (target / "sub" / "stamp").write_text("done")
    os.chmod(target / "sub" / "stamp", 0o640)
    os.link(target / "sub" / "stamp", target / "hard")
    os.symlink("sub/stamp", target / "link")
    os.symlink("/usr/bin/env", target / "outside")
    for i, path in enumerate([target / "sub" / "stamp", target / "sub"]):
        os.utime(path, ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_123_456_789 + i))
    os.utime(target / "link", ns=(1_500_000_000_987_654_321,) * 2, follow_symlinks=False)
    (target / MARKER).unlink()
    (tmp_path / "src" / "tool.sh").write_text("#!/bin/sh\necho 3.0\n")  # a new fingerprint: capture this tree
    run()
    before = {p: os.lstat(target / p) for p in ("sub", "sub/stamp", "link", "hard", "outside")}
    shutil.rmtree(target)
    output = run()
    assert "restored" in output, output
    after = {p: os.lstat(target / p) for p in before}
    placed = json.loads((target / MARKER).read_text())["mtimes"]["placed"]
    # 1 ns apart before, one step apart now: the order survives, the times end at the restore
    assert after["sub"].st_mtime_ns - after["sub/stamp"].st_mtime_ns == placed["step_ns"] == 1000
    assert after["link"].st_mtime_ns < after["sub/stamp"].st_mtime_ns
    assert placed["oldest_ns"] == after["link"].st_mtime_ns
    # (the target dir itself got the marker after the placement)
    assert max(os.lstat(p).st_mtime_ns for p in target.rglob("*") if p.name not in (MARKER, RECEIPT)) == \
        placed["at_ns"]
    assert placed["at_ns"] <= filesystem_now(target)
    assert oct(after["sub/stamp"].st_mode & 0o7777) == "0o640"
    assert os.readlink(target / "link") == "sub/stamp"
    assert os.readlink(target / "outside") == "/usr/bin/env"
    assert after["hard"].st_ino == after["sub/stamp"].st_ino
    assert after["sub/stamp"].st_uid == os.geteuid()


def test_a_restore_is_newer_than_sources_written_just_before_it(run, tmp_path):
    """The fresh clone: every input newer than the checkpoint, the restored tree newer still."""
    run()
    target = tmp_path / "build" / "toolchain"
    shutil.rmtree(target)
    touch_all(tmp_path / "src")
    run()
    newest_source = max(p.lstat().st_mtime_ns for p in (tmp_path / "src").rglob("*"))
    marker = json.loads((target / MARKER).read_text())
    assert marker["how"] == "restored"
    assert marker["mtimes"]["inputs_ok_ns"] == marker["mtimes"]["placed"]["oldest_ns"] > newest_source
    assert min(p.lstat().st_mtime_ns for p in target.rglob("*") if p.name != MARKER) > newest_source


def test_a_link_out_of_the_tree_is_a_prerequisite(run, tmp_path, gaia_cli, gaia_core_pm):
    opt = tmp_path.parent / f"{tmp_path.name}-opt"  # outside the workspace (tmp_path) and every target
    (opt / "bin").mkdir(parents=True)
    run()
    target = tmp_path / "build" / "toolchain"
    os.symlink(opt / "bin" / "cc", target / "cc")
    (target / MARKER).unlink()
    (tmp_path / "src" / "tool.sh").write_text("#!/bin/sh\necho 4.0\n")
    run()
    shutil.rmtree(opt)
    shutil.rmtree(target)  # a restore is needed, and it would create a link to nowhere
    status = gaia_cli("checkpoints", "status", tmp_path / "build.toml", "--json", pm=gaia_core_pm)
    report = json.loads(status.stdout[status.stdout.index("{"):])  # after the recorder's lines
    assert report["points"][0]["reason"] == f"missing_prerequisite:{opt / 'bin'}"
