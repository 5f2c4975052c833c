"""What ``target-post-image`` made in ``<out>/images`` is recorded, and removed before a build."""

from __future__ import annotations

import os
from pathlib import Path

from gaia_buildroot.post_image import image_files, record_outputs, remove_outputs


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_only_what_post_image_created_is_removed(tmp_path: Path):
    out = tmp_path / "out"
    kernel = write(out / "images" / "Image", "a kernel a package installed")
    firmware = write(out / "images" / "rpi-firmware" / "config.txt", "from rpi-firmware")
    before = image_files(out / "images")
    # target-post-image: rootfs images, a post-image script's card image and its edit
    write(out / "images" / "rootfs.tar", "stage inside")
    os.symlink("rootfs.tar", out / "images" / "rootfs.img")
    write(out / "images" / "sdcard.img", "stage inside too")
    firmware.write_text("from rpi-firmware\ndtoverlay=x\n")
    record_outputs(out, before)

    assert remove_outputs(out) == ["rootfs.img", "rootfs.tar", "sdcard.img"]
    assert image_files(out / "images") == {"Image", "rpi-firmware/config.txt"}
    assert kernel.is_file() and firmware.is_file()
    assert remove_outputs(out) == []  # the record went with them


def test_a_later_collect_keeps_the_earlier_outputs_on_record(tmp_path: Path):
    out = tmp_path / "out"
    record_outputs(out, image_files(out / "images"))
    write(out / "images" / "rootfs.tar", "first")
    record_outputs(out, set())
    # the next collect (no build between): rootfs.tar existed before it, it is still ours
    before = image_files(out / "images")
    write(out / "images" / "rootfs.tar", "second")
    record_outputs(out, before)
    assert remove_outputs(out) == ["rootfs.tar"]


def test_recorded_paths_never_leave_images_or_pass_a_link(tmp_path: Path):
    out = tmp_path / "out"
    victim = write(tmp_path / "victim", "keep")
    outside = write(tmp_path / "elsewhere" / "f", "keep")
    (out / "images").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", out / "images" / "link")
    (out / ".gaia-post-image-outputs.json").write_text(
        '{"entries": ["../../victim", "/etc/passwd", "link/f"]}'
    )
    assert remove_outputs(out) == []
    assert victim.read_text() == "keep" and outside.read_text() == "keep"
