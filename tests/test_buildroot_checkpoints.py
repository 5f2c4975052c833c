"""Checkpoints of ``buildroot.build`` on the quickstart and the Buildroot-compatible test tree."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gaia_core.checkpoints.store import Store
from gaia_core.checkpoints.tree import raw_entries

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
CHECKPOINTS = """
[checkpoints]
enabled = true

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
{point}
"""


class Quickstart:
    def __init__(self, root: Path):
        self.root = root
        self.build = root / "build.toml"
        self.out = root / "build" / "buildroot" / "output"
        self.store = root / "build" / "checkpoints"
        self.images = root / "out" / "build" / "images"

    def compile_log(self) -> list[str]:
        log = self.out / "build" / "fake-compile.log"
        return log.read_text().splitlines() if log.exists() else []

    def post_image_runs(self) -> int:
        log = self.out / "build" / "fake-post-image.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def image_names(self) -> set[str]:
        with tarfile.open(self.images / "rootfs.tar") as tar:
            return {m.name.lstrip("./") for m in tar.getmembers()}

    def image_file(self, name: str) -> str:
        with tarfile.open(self.images / "rootfs.tar") as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == name)
            return tar.extractfile(member).read().decode()  # type: ignore[union-attr]

    def add_stage_file(self, dst: str, content: str) -> None:
        with open(self.build, "a") as f:
            f.write(f'\n[[stage.files]]\ndst = "{dst}"\ncontent = "{content}"\n')


def make_quickstart(dest: Path, point: str = "") -> Quickstart:
    shutil.copytree(
        QUICKSTART, dest, symlinks=True, ignore=shutil.ignore_patterns("build", "out")
    )
    with open(dest / "build.toml", "a") as f:
        f.write(CHECKPOINTS.format(point=point))
    return Quickstart(dest)


def gaia(gaia_cli, *args, code: int = 0):
    result = gaia_cli(*[str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def status(gaia_cli, qs: Quickstart, *sets: str) -> dict:
    args = [x for s in sets for x in ("--set", s)]
    return gaia(gaia_cli, "checkpoints", "status", qs.build, "--json", *args).json[
        "points"
    ][0]


def captured_paths(qs: Quickstart, fingerprint: str) -> set[str]:
    """The paths of the entries the object of ``fingerprint`` lists."""
    store = Store(qs.store)
    try:
        obj = store.get("base-os", fingerprint)
        assert obj is not None
        return {entry.path for entry in raw_entries(store.packs, obj.manifest)}
    finally:
        store.packs.close()


@pytest.fixture
def qs(tmp_path) -> Quickstart:
    return make_quickstart(tmp_path / "qs")


@pytest.mark.parametrize("parallel", ["1", "4"])
def test_cold_run_captures_and_warm_run_restores(gaia_cli, qs, parallel):
    cold = gaia(gaia_cli, "run", qs.build, "--max-parallel", parallel)
    compiled = qs.compile_log()
    assert compiled, "the cold run compiled nothing"
    assert "captured" in cold.output
    [obj] = list((qs.store / "points" / "base-os").iterdir())
    assert [p.name for p in obj.iterdir()] == ["manifest.json"]  # its chunks are in the store's packs
    # capture ran before collect touched the out dir: no stage file, no images in the captured tree
    assert "etc/motd" in qs.image_names()
    captured = captured_paths(qs, obj.name)
    assert "buildroot_out_dir/target/etc/os-release" in captured
    assert "buildroot_out_dir/target/etc/motd" not in captured
    assert not [p for p in captured if p.startswith("buildroot_out_dir/images/")]
    gaias_own = {"buildroot_out_dir/.gaia-checkpoint.json", "buildroot_out_dir/.gaia-receipt.jsonl.zst"}
    assert not captured & gaias_own and not [p for p in captured if ".gaia-stage-overlay" in p]
    assert all((qs.out / name.partition("/")[2]).exists() for name in gaias_own)  # on disk, never captured

    shutil.rmtree(qs.out.resolve())  # the padded out dir behind the link
    qs.add_stage_file("/etc/added-after-capture", "new stage file")
    warm = gaia(gaia_cli, "run", qs.build, "--max-parallel", parallel)
    assert (
        "SKIP: buildroot.configure" in warm.output
        and "SKIP: buildroot.build" in warm.output
    )
    assert "restored" in warm.output
    assert qs.compile_log() == compiled, "restore must not recompile anything"
    assert qs.post_image_runs() >= 1, "collect must still run target-post-image"
    assert "etc/added-after-capture" in qs.image_names()
    assert qs.image_file("etc/added-after-capture") == "new stage file"


def test_removing_the_out_dir_link_starts_the_out_dir_over_from_the_checkpoint(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    compiled = qs.compile_log()
    padded = qs.out.resolve()
    assert status(gaia_cli, qs)["materialized"] is True
    qs.out.unlink()  # rm -rf build/buildroot/output, as users start an out dir over
    st = status(gaia_cli, qs)
    assert st["materialized"] is False and st["reason"] == "hit"
    again = gaia(gaia_cli, "run", qs.build)
    assert f"{qs.out} was removed: {padded} behind it is started over" in again.output
    assert "restored" in again.output and "already holds" not in again.output
    assert qs.out.resolve() == padded and qs.compile_log() == compiled


def test_after_restore_make_compiles_nothing(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    compiled = qs.compile_log()
    shutil.rmtree(qs.out.resolve())  # the padded out dir behind the link
    gaia(gaia_cli, "run", qs.build)
    subprocess.run(
        [
            "make",
            "-C",
            str(qs.root / "buildroot-tree"),
            f"O={qs.out}",
            "target-finalize",
        ],
        check=True,
        capture_output=True,
    )
    assert qs.compile_log() == compiled, (
        "mtimes were not kept: make rebuilt packages after the restore"
    )


def test_stage_only_change_keeps_the_checkpoint(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    qs.add_stage_file("/etc/other", "x")
    st = status(gaia_cli, qs)
    assert st["will_use"] is True and st["will_rebuild"] is False


def test_a_removed_stage_file_disappears_after_restore(gaia_cli, qs):
    qs.add_stage_file("/etc/temporary", "soon gone")
    gaia(gaia_cli, "run", qs.build)
    assert "etc/temporary" in qs.image_names()
    text = qs.build.read_text().replace(
        '\n[[stage.files]]\ndst = "/etc/temporary"\ncontent = "soon gone"\n', ""
    )
    qs.build.write_text(text)
    gaia(gaia_cli, "run", qs.build)
    assert "etc/temporary" not in qs.image_names()


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Quickstart:
    """One cold run whose checkpoint every fingerprint case compares against."""
    from click.testing import CliRunner

    from gaia_core.cli import make_cli
    from gaia_core.plugins import get_plugin_manager

    qs = make_quickstart(tmp_path_factory.mktemp("captured") / "qs")
    (qs.root / "ext").mkdir()
    (qs.root / "board").mkdir()
    (qs.root / "board" / "config.txt").write_text("arm_64bit=1\n")
    (qs.root / "board" / "cmdline.txt").write_text("console=ttyAMA0\n")
    result = CliRunner().invoke(make_cli(get_plugin_manager()), ["run", str(qs.build)])
    assert result.exit_code == 0, result.output
    return qs


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ('buildroot.version="2026.02"', "buildroot.version"),
        ('buildroot.defconfig="gaia_rpi_defconfig"', "buildroot.defconfig"),
        ("buildroot.packages.dropbear=true", "buildroot.packages"),
        ('buildroot.package_versions.htop="9.9"', "buildroot.package_versions"),
        ('buildroot.symbols.TARGET_GENERIC_HOSTNAME="renamed"', "buildroot.symbols"),
        ('buildroot.external=["ext"]', "buildroot.external"),
        ('buildroot.starting_point.source_label="other"', "buildroot.starting_point"),
        ('buildroot.rpi.arch="arm64"', "buildroot.rpi.arch"),
        ('buildroot.rpi.board="cm5"', "buildroot.rpi.board"),
        ('buildroot.rpi.defconfig="gaia_rpi_defconfig"', "buildroot.rpi.defconfig"),
    ],
)
def test_each_default_fingerprint_path_invalidates(gaia_cli, captured, override, path):
    assert status(gaia_cli, captured)["reason"] in ("hit", "materialized")
    st = status(gaia_cli, captured, override)
    assert st["will_rebuild"] is True
    assert st["reason"].startswith("inputs_changed:") and path in st["reason"].split(
        ":", 1
    )[1].split(",")


def test_defconfig_file_content_change_invalidates(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    defconfig = qs.root / "buildroot-tree" / "configs" / "gaia_qemu_defconfig"
    defconfig.write_text(defconfig.read_text() + "BR2_PACKAGE_DROPBEAR=y\n")
    st = status(gaia_cli, qs)
    assert st["reason"].startswith("inputs_changed:")
    assert "buildroot.defconfig" in st["reason"].split(":", 1)[1].split(",")
    gaia(gaia_cli, "run", qs.build)
    assert any(line.startswith("dropbear ") for line in qs.compile_log())


@pytest.mark.parametrize(
    "override",
    [
        'buildroot.rpi.overlay="board"',
        'buildroot.rpi.config_file="board/config.txt"',
        'buildroot.rpi.cmdline_file="board/cmdline.txt"',
    ],
)
def test_rpi_board_files_reach_the_image_through_the_stage_and_keep_the_checkpoint(
    gaia_cli, captured, override
):
    """They are copied into the stage, which only collect applies: no Buildroot input.

    (Turning ``[buildroot.rpi]`` on is an input of its own: its effective ``arch`` goes from
    none to ``aarch64``; so both sides have the table.)"""
    rpi = 'buildroot.rpi.arch="aarch64"'
    without = status(gaia_cli, captured, rpi)
    with_file = status(gaia_cli, captured, rpi, override)
    assert with_file["fingerprint"] == without["fingerprint"]
    assert with_file["reason"] == without["reason"]


def test_rpi_config_file_content_counts_when_a_point_names_it(gaia_cli, tmp_path):
    qs = make_quickstart(
        tmp_path / "qs", point='fingerprint_from = ["buildroot.rpi.config_file"]'
    )
    (qs.root / "board").mkdir()
    (qs.root / "board" / "config.txt").write_text("arm_64bit=1\n")
    wanted = 'buildroot.rpi.config_file="board/config.txt"'
    before = status(gaia_cli, qs, wanted)["fingerprint"]
    (qs.root / "board" / "config.txt").write_text("arm_64bit=0\n")
    assert status(gaia_cli, qs, wanted)["fingerprint"] != before


def test_required_with_an_empty_store_fails(gaia_cli, tmp_path):
    qs = make_quickstart(tmp_path / "qs", point='use_policy = "required"')
    result = gaia(gaia_cli, "run", qs.build, code=1)
    assert "required checkpoint 'base-os'" in result.output
    assert qs.compile_log() == []


def test_off_always_rebuilds(gaia_cli, tmp_path):
    qs = make_quickstart(tmp_path / "qs", point='use_policy = "off"')
    gaia(gaia_cli, "run", qs.build)
    first = len(qs.compile_log())
    shutil.rmtree(qs.out.resolve())  # the padded out dir behind the link
    gaia(gaia_cli, "run", qs.build)
    assert len(qs.compile_log()) == first  # a fresh out dir compiled everything again
    assert "restore skipped (use_policy=off)" in gaia(gaia_cli, "run", qs.build).output


def test_starting_point_makes_restore_and_capture_no_ops(gaia_cli, tmp_path):
    qs = make_quickstart(tmp_path / "qs")
    seed = qs.root / "seed-rootfs"
    (seed / "etc").mkdir(parents=True)
    (seed / "etc" / "from-seed.txt").write_text("seed\n")
    result = gaia(
        gaia_cli,
        "run",
        qs.build,
        "--set",
        "buildroot.starting_point.enabled=true",
        "--set",
        'buildroot.starting_point.rootfs_dir="seed-rootfs"',
    )
    assert (
        "checkpoint restore skipped for buildroot.build (buildroot.starting_point.enabled=true)"
        in result.output
    )
    assert (
        "checkpoint capture skipped for buildroot.build (buildroot.starting_point.enabled=true)"
        in result.output
    )
    assert not (qs.store / "points").exists()
    st = status(
        gaia_cli,
        qs,
        "buildroot.starting_point.enabled=true",
        'buildroot.starting_point.rootfs_dir="seed-rootfs"',
    )
    assert st["exists"] is False and st["reason"].startswith("inactive:")


def test_an_edit_in_an_override_source_tree_misses_and_rebuilds_that_package(
    gaia_cli, qs
):
    src = qs.root / "src" / "htop"
    src.mkdir(parents=True)
    (src / "htop").write_text("#!/bin/sh\necho mine\n")
    (qs.root / "local.mk").write_text(f"HTOP_OVERRIDE_SRCDIR = {src}\n")
    symbol = f"buildroot.symbols.PACKAGE_OVERRIDE_FILE='{qs.root / 'local.mk'}'"
    gaia(gaia_cli, "run", qs.build, "--set", symbol)
    assert qs.image_file("usr/bin/htop") == "#!/bin/sh\necho mine\n"
    assert status(gaia_cli, qs, symbol)["will_use"] is True

    (src / "htop").write_text("#!/bin/sh\necho edited\n")
    st = status(gaia_cli, qs, symbol)
    assert st["will_rebuild"] is True
    assert "buildroot.symbols" in st["reason"].split(":", 1)[1].split(",")
    gaia(gaia_cli, "run", qs.build, "--set", symbol)
    assert qs.image_file("usr/bin/htop") == "#!/bin/sh\necho edited\n"
    assert qs.compile_log().count("htop custom rsync") == 2
    assert qs.compile_log().count("busybox 1.37.0 build") == 1  # only htop was rebuilt

    # the checkpoint captured by that run holds the new build
    shutil.rmtree(qs.out.resolve())  # the padded out dir behind the link
    warm = gaia(gaia_cli, "run", qs.build, "--set", symbol)
    assert "SKIP: buildroot.build" in warm.output
    assert qs.image_file("usr/bin/htop") == "#!/bin/sh\necho edited\n"
