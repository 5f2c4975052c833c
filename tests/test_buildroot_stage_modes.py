"""Stage modes reach the image exactly, although Buildroot's overlay copy (the test tree does
it as real Buildroot: ``rsync --chmod=u=rwX,go=rX``) runs after gaia's own sync of the stage;
modes that cannot reach the image are refused before anything builds."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_buildroot_checkpoints import gaia, make_quickstart

from gaia_buildroot.stage_modes import apply_modes, modes_to_apply

STAGE = """
[[stage.files]]
dst = "/etc/secret.key"
content = "a secret"
mode = 0o600

[[stage.files]]
dst = "/usr/libexec/private-tool"
content = "#!/bin/sh\\n"
mode = 0o700

[[stage.files]]
dst = "/usr/bin/public-tool"
content = "#!/bin/sh\\n"
mode = 0o755

[[stage.files]]
dst = "/usr/bin/setuid-tool"
content = "#!/bin/sh\\n"
mode = 0o4755

[[stage.files]]
dst = "/usr/bin/setgid-tool"
content = "#!/bin/sh\\n"
mode = 0o2711

[[stage.files]]
dst = "/etc/read-only"
content = "ro"
mode = 0o440

[[stage.files]]
dst = "/root/.ssh/authorized_keys"
content = "ssh-ed25519 AAAA user"
mode = 0o600

[[stage.files]]
dst = "/opt/vault"
src = "vault"
mode = 0o700
"""

WANTED = {
    "etc/secret.key": 0o600,
    "usr/libexec/private-tool": 0o700,
    "usr/bin/public-tool": 0o755,
    "usr/bin/setuid-tool": 0o4755,
    "usr/bin/setgid-tool": 0o2711,
    "etc/read-only": 0o440,
    "root/.ssh/authorized_keys": 0o600,
    "opt/vault": 0o700,
    "opt/vault/token": 0o600,  # a file of a src directory keeps its own mode
    "root": 0o700,  # only passed through by the stage: the mode Buildroot gave it
    "tmp": 0o1777,
}


def image_modes(images: Path) -> dict[str, int]:
    with tarfile.open(images / "rootfs.tar") as tar:
        return {m.name.removeprefix("./"): m.mode for m in tar.getmembers()}


def with_skeleton_dirs(tmp_path: Path) -> Path:
    """A post-build script of the user's making /root 0700 and /tmp 1777, as Buildroot's skeleton does."""
    script = tmp_path / "skeleton-modes.sh"
    script.write_text('#!/bin/sh\nmkdir -p "$1/root" "$1/tmp"\nchmod 0700 "$1/root"\nchmod 1777 "$1/tmp"\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def qs(tmp_path):  # type: ignore[no-untyped-def]
    qs = make_quickstart(tmp_path / "qs")
    (qs.root / "vault").mkdir()
    (qs.root / "vault" / "token").write_text("t")
    (qs.root / "vault" / "token").chmod(0o600)
    script = with_skeleton_dirs(tmp_path)
    (qs.root / "layers" / "packages.toml").write_text(
        (qs.root / "layers" / "packages.toml").read_text() + f'ROOTFS_POST_BUILD_SCRIPT = "{script}"\n'
    )
    with open(qs.build, "a") as f:
        f.write(STAGE)
    return qs


def test_every_mode_the_build_file_gives_is_the_mode_in_target_and_image(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    target = qs.out / "target"
    in_target = {rel: (target / rel).lstat().st_mode & 0o7777 for rel in WANTED}
    assert {k: oct(v) for k, v in in_target.items()} == {k: oct(v) for k, v in WANTED.items()}
    in_image = image_modes(qs.images)
    assert {k: oct(in_image[k] & 0o7777) for k in WANTED} == {k: oct(v) for k, v in WANTED.items()}
    assert in_image["etc/motd"] & 0o7777 == 0o644


def test_without_gaias_post_build_script_the_overlay_copy_loses_them(gaia_cli, qs, tmp_path):
    """What the image had before: the test tree copies overlays as Buildroot does."""
    gaia(gaia_cli, "run", qs.build)
    stage = qs.root / "build" / "stage" / "build" / "rootfs"
    target = tmp_path / "plain-target"
    (target / "etc").mkdir(parents=True)
    tree = qs.root / "buildroot-tree"
    subprocess.run(["python3", tree / "support" / "scripts" / "overlay-rsync.py", stage, target], check=True)
    assert (target / "etc" / "secret.key").stat().st_mode & 0o7777 == 0o644


def test_a_later_run_keeps_them_and_a_changed_mode_reaches_the_image(gaia_cli, qs):
    gaia(gaia_cli, "run", qs.build)
    qs.build.write_text(qs.build.read_text().replace("mode = 0o600\n", "mode = 0o640\n", 1))
    gaia(gaia_cli, "run", qs.build)
    assert image_modes(qs.images)["etc/secret.key"] & 0o7777 == 0o640
    assert (qs.out / "target" / "etc" / "secret.key").stat().st_mode & 0o7777 == 0o640


@pytest.mark.parametrize("mode", ["0o200", "0o044", "0o000"])
def test_a_mode_the_owner_cannot_read_is_a_config_error(gaia_cli, qs, mode):
    with open(qs.build, "a") as f:
        f.write(f'\n[[stage.files]]\ndst = "/etc/unreadable"\ncontent = "x"\nmode = {mode}\n')
    result = gaia(gaia_cli, "plan", qs.build, code=2)
    assert "gives the owner no read permission" in result.output
    assert "build.toml" in result.output and "stage" in result.output


def test_a_mode_on_a_link_or_a_closed_directory_is_a_config_error(gaia_cli, qs):
    os.symlink("vault/token", qs.root / "token-link")
    (qs.root / "closed").mkdir()
    with open(qs.build, "a") as f:
        f.write('\n[[stage.files]]\ndst = "/etc/link"\nsrc = "token-link"\nmode = 0o600\n'
                '\n[[stage.files]]\ndst = "/etc/closed"\nsrc = "closed"\nmode = 0o500\n')
    result = gaia(gaia_cli, "run", qs.build, code=2)
    assert f"{qs.build}: stage.files.10.mode: /etc/link: mode 0o600 is given but its src" in result.output
    assert "is a symlink, which has no mode of its own" in result.output
    assert f"{qs.build}: stage.files.11.mode: /etc/closed: mode 0o500 on a directory" in result.output
    assert not qs.compile_log(), "refused before Buildroot ran"


def test_a_program_install_mode_on_a_link_fails_its_install(gaia_cli, qs):
    with open(qs.build, "a") as f:
        f.write('\n[program.linker]\nsrc_dir = "programs/hello"\nbuild_command = "ln -sf greeting.txt out-link"\n'
                'install = [{ src = "out-link", dst = "/usr/bin/linked", mode = 0o755 }]\n')
    result = gaia(gaia_cli, "run", qs.build, code=1)
    assert "program.linker: install modes that cannot reach the image: /usr/bin/linked: mode 0o755 is given" in \
        result.output


def test_applying_modes_never_leaves_the_target(tmp_path):
    """A target whose /etc is an absolute link: resolved inside the target, as the image sees it."""
    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "passwd").write_text("host file")
    (host / "passwd").chmod(0o644)
    target = tmp_path / "target"
    (target / "real-etc").mkdir(parents=True)
    (target / "real-etc" / "passwd").write_text("image file")
    os.symlink("/real-etc", target / "etc")
    os.symlink(str(host / "passwd"), target / "real-etc" / "link")
    problems = apply_modes(target, [("etc/passwd", 0o600), ("etc/link", 0o600), ("etc/gone", 0o600)])
    assert (target / "real-etc" / "passwd").stat().st_mode & 0o7777 == 0o600
    assert (host / "passwd").stat().st_mode & 0o7777 == 0o644
    assert problems == ["/etc/link: a symlink in the target, the stage has a file there"]


def test_directories_the_stage_passes_through_keep_the_targets_mode(tmp_path):
    stage, target = tmp_path / "stage", tmp_path / "target"
    (stage / "root" / ".ssh").mkdir(parents=True)
    (stage / "root").chmod(0o755)
    (stage / "root" / ".ssh").chmod(0o755)
    (stage / "root" / ".ssh" / "keys").write_text("k")
    (stage / "root" / ".ssh" / "keys").chmod(0o600)
    (target / "root").mkdir(parents=True)
    (target / "root").chmod(0o700)
    assert modes_to_apply(stage, target) == [("root", 0o700), ("root/.ssh/keys", 0o600)]


def test_the_stages_own_parent_directories_are_0755_whatever_the_umask(tmp_path):
    from gaia_buildroot.stage import make_parents

    old = os.umask(0o077)
    try:
        make_parents(tmp_path / "stage" / "root" / ".ssh" / "authorized_keys")
    finally:
        os.umask(old)
    for rel in ("stage", "stage/root", "stage/root/.ssh"):
        assert (tmp_path / rel).stat().st_mode & 0o7777 == 0o755, rel
