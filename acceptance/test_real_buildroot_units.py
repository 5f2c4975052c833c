"""Buildroot packages as checkpoint units, on real Buildroot (issue 20).

The busybox build of ``shared/real-buildroot`` (tag ``gaia-acceptance-busybox``,
``gaiatest_busybox_defconfig``) with ``BR2_PER_PACKAGE_DIRECTORIES`` and ``BR2_REPRODUCIBLE``
set through ``buildroot.symbols``, a point with ``units = true`` and a ``dir`` backend, and the
user's BR2_EXTERNAL tree with a busybox config fragment:

0. workspace A builds cold: the whole tree and every package as its own unit are captured
   and uploaded;
1. (a) one busybox option changed (the fragment): ``status`` in A says one unit is built and
   the rest kept; workspace B, new, at another path, restores every other package from the
   backend and builds busybox only; its image is identical in content (paths, modes,
   sha256) to the image of workspace C, a cold build with the same config;
2. (b) in B, a symbol only ``ifupdown-scripts`` reads (``BR2_SYSTEM_DHCP``), a package
   nothing depends on: only that package runs;
3. (c) in B, a toolchain symbol (``BR2_TARGET_OPTIMIZATION``, Toolchain menu): every package runs.

Environment: ``GAIA_REAL_BUILDROOT_REPO`` (required); ``GAIA_REAL_BUILDROOT_DL_DIR`` (default
``/opt/br-offline-src/dl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared helpers' dir
from test_real_buildroot import POINT, REPO, Run, gaia  # noqa: E402
from test_real_buildroot_fresh_clone import seconds  # noqa: E402

pytestmark = pytest.mark.real_buildroot

VERSION = "gaia-acceptance-busybox"
DEFCONFIG = "gaiatest_busybox_defconfig"
DL_DIR = os.environ.get("GAIA_REAL_BUILDROOT_DL_DIR", "/opt/br-offline-src/dl")

BUILD_TOML = """\
[buildroot]
repo = "{repo}"
version = "{version}"
defconfig = "{defconfig}"
download_dir = "{dl_dir}"
external = ["br2-external"]

[buildroot.symbols]
TARGET_GENERIC_HOSTNAME = "gaia-units"
PER_PACKAGE_DIRECTORIES = true
REPRODUCIBLE = true
PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES = "$(BR2_EXTERNAL_GAIATEST_PATH)/board/busybox.fragment"
{symbols}
[checkpoints]
enabled = true

[checkpoints.backends.dir.remote]
path = "{remote}"

[[checkpoints.points]]
id = "{point}"
anchor_task = "buildroot.build"
{point_settings}

[[stage.files]]
dst = "/etc/motd"
content = "units acceptance\\n"
mode = 0o644
"""

UNITS_POINT = 'backend = "dir:remote"\nupload_policy = "always"\nunits = true'
COLD_POINT = 'use_policy = "off"'  # C: a cold build, checkpoints neither used nor uploaded
FRAGMENT = "CONFIG_FEATURE_EDITING_HISTORY=64\n"
FRAGMENT_CHANGED = "CONFIG_FEATURE_EDITING_HISTORY=128\n"
_STEP = re.compile(r">>> (?! )(\S+)")
_UNITS = re.compile(r"units: (\d+) kept, (\d+) restored, (\d+) to build")
_CAPTURED = re.compile(r"captured [0-9a-f]{12} \(\d+ entries, [^;]+; ([\d.]+ \w+) new in")
_UNITS_CAPTURED = re.compile(r"captured (\d+) unit\(s\) from [0-9a-f]{12} \(([\d.]+ \w+) new")


def workspace(base: Path, name: str, remote: Path, *, fragment: str = FRAGMENT, symbols: str = "",
              point: str = UNITS_POINT) -> Path:
    ws = base / name
    ext = ws / "br2-external"
    (ext / "board").mkdir(parents=True)
    (ext / "external.desc").write_text("name: GAIATEST\ndesc: the user's own tree (gaia acceptance)\n")
    (ext / "Config.in").write_text("")
    (ext / "external.mk").write_text("")
    (ext / "board" / "busybox.fragment").write_text(fragment)
    write_build(ws, remote, symbols=symbols, point=point)
    return ws


def write_build(ws: Path, remote: Path, *, symbols: str = "", point: str = UNITS_POINT) -> None:
    (ws / "build.toml").write_text(BUILD_TOML.format(
        repo=REPO, version=VERSION, defconfig=DEFCONFIG, dl_dir=DL_DIR, remote=remote, point=POINT,
        symbols=symbols, point_settings=point))


def packages_run(run: Run) -> set[str]:
    return {m.group(1) for line in run.package_steps if (m := _STEP.search(line))}


def unit_counts(run: Run) -> tuple[int, int, int]:
    found = _UNITS.search(run.text)
    assert found, run.text[-4000:]
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def image_content(ws: Path) -> dict[str, tuple]:
    found = {}
    with tarfile.open(ws / "out" / "build" / "images" / "rootfs.tar") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            found[member.name.removeprefix("./")] = (
                member.type, member.mode, member.uid, member.gid, member.linkname, hashlib.sha256(data).hexdigest())
    return found


def stored(run: Run) -> str:
    """What a run's capture stored: the whole tree's new chunks and the units' entry lists."""
    whole = _CAPTURED.search(run.text)
    units = _UNITS_CAPTURED.search(run.text)
    return (f"whole tree {whole.group(1) if whole else '-'} new, "
            f"{units.group(1) if units else 0} unit(s) {units.group(2) if units else '-'} new")


@dataclasses.dataclass
class Units:
    base: Path
    remote: Path
    ws_a: Path
    cold: Run
    packages: set[str]


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory, measured: list[str]) -> Units:
    base = tmp_path_factory.mktemp("units")
    remote = base / "remote"
    remote.mkdir()
    ws_a = workspace(base, "ws-a", remote)
    cold = gaia(ws_a, "run", "build.toml").ok()
    captured = _UNITS_CAPTURED.search(cold.text)
    assert captured, cold.text[-4000:]
    assert f"uploaded {captured.group(1)} unit(s) via dir:remote" in cold.text, cold.text[-4000:]
    packages = packages_run(cold)
    assert "busybox" in packages and "ifupdown-scripts" in packages
    measured.append(f"units A cold: {cold.seconds:.1f} s, {len(cold.package_steps)} package steps of "
                    f"{len(packages)} packages, build {seconds(cold, 'buildroot.build')} s, capture "
                    f"{seconds(cold, 'checkpoints.capture.buildroot-build')} s; {stored(cold)}")
    return Units(base, remote, ws_a, cold, packages)


def test_a_busybox_option_builds_busybox_only_and_the_image_is_a_cold_builds(units: Units,
                                                                             measured: list[str]) -> None:
    fragment = units.ws_a / "br2-external" / "board" / "busybox.fragment"
    fragment.write_text(FRAGMENT_CHANGED)
    status = json.loads(gaia(units.ws_a, "checkpoints", "status", "build.toml", "--json").ok().out)["points"][0]
    assert status["units"]["state"] == "known", status
    assert (status["units"]["keep"], status["units"]["build"]) == (len(units.packages) - 1, 1), status["units"]
    explained = gaia(units.ws_a, "checkpoints", "status", "build.toml", "--explain").ok().text
    assert "BR2_PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES" in explained, explained

    ws_b = workspace(units.base, "ws-b-a-fresh-checkout-at-a-longer-path", units.remote, fragment=FRAGMENT_CHANGED)
    run = gaia(ws_b, "run", "build.toml").ok()
    assert packages_run(run) == {"busybox"}, run.package_steps
    assert unit_counts(run) == (0, len(units.packages) - 1, 1)
    ws_c = workspace(units.base, "ws-c", units.remote, fragment=FRAGMENT_CHANGED, point=COLD_POINT)
    cold_c = gaia(ws_c, "run", "build.toml").ok()
    image_b, image_c = image_content(ws_b), image_content(ws_c)
    assert image_b == image_c, sorted(k for k in set(image_b) | set(image_c) if image_b.get(k) != image_c.get(k))
    measured.append(
        f"units (a) busybox option, fresh workspace B: {run.seconds:.1f} s against {units.cold.seconds:.1f} s cold "
        f"(C, same config: {cold_c.seconds:.1f} s); {len(run.package_steps)} package steps "
        f"({', '.join(sorted(packages_run(run)))}) against {len(units.cold.package_steps)}; "
        f"{unit_counts(run)[1]} units restored in {seconds(run, 'checkpoints.units.buildroot-build')} s, build "
        f"{seconds(run, 'buildroot.build')} s, capture {seconds(run, 'checkpoints.capture.buildroot-build')} s; "
        f"second capture stored: {stored(run)}; image identical to C's ({len(image_b)} members)")


def test_a_symbol_of_a_package_nothing_depends_on_builds_that_package_only(units: Units,
                                                                          measured: list[str]) -> None:
    ws_b = units.base / "ws-b-a-fresh-checkout-at-a-longer-path"
    write_build(ws_b, units.remote, symbols='SYSTEM_DHCP = "eth0"\n')
    run = gaia(ws_b, "run", "build.toml").ok()
    assert packages_run(run) == {"ifupdown-scripts"}, run.package_steps
    assert unit_counts(run) == (len(units.packages) - 1, 0, 1)
    with tarfile.open(ws_b / "out" / "build" / "images" / "rootfs.tar") as tar:
        interfaces = tar.extractfile("./etc/network/interfaces").read().decode()  # type: ignore[union-attr]
    assert "iface eth0 inet dhcp" in interfaces
    measured.append(f"units (b) BR2_SYSTEM_DHCP (read by ifupdown-scripts only), in B: {run.seconds:.1f} s, "
                    f"{len(run.package_steps)} package steps (ifupdown-scripts), {unit_counts(run)[0]} units kept; "
                    f"stored: {stored(run)}")


def test_a_toolchain_symbol_builds_every_package(units: Units, measured: list[str]) -> None:
    ws_b = units.base / "ws-b-a-fresh-checkout-at-a-longer-path"
    write_build(ws_b, units.remote, symbols='SYSTEM_DHCP = "eth0"\nTARGET_OPTIMIZATION = "-pipe"\n')
    run = gaia(ws_b, "run", "build.toml").ok()
    assert packages_run(run) == units.packages, sorted(units.packages ^ packages_run(run))
    assert unit_counts(run) == (0, 0, len(units.packages))
    measured.append(f"units (c) BR2_TARGET_OPTIMIZATION (toolchain), in B: {run.seconds:.1f} s, "
                    f"{len(run.package_steps)} package steps of {len(packages_run(run))} packages (all)")
