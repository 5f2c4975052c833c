"""Nothing a restored tree holds can make later steps write outside it, signed or not: the
paths an anchor declares in ``Target.writes`` must not lead out of the tree through a link,
and a manifest's relocation roots are checked as it is read (issue 18, item 3)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import checkpoint_plugin
import pytest
from counter_project import Project, run, status

from gaia_core.checkpoints import containment
from gaia_core.checkpoints.containment import escaping_writes

# -- the check on hand-built trees -------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "rootfs" / "etc").mkdir(parents=True)
    (out / "rootfs" / "run").mkdir()
    return out


def test_plain_directories_and_paths_still_to_be_made_are_inside(tree):
    assert escaping_writes(tree, ["sub", "sub/*", "sub/deep/x", "images/rootfs.tar", "missing/dir/file"]) == []


@pytest.mark.parametrize(("link", "to", "declared"), [
    ("sub", "/etc", "sub/x"),                       # an absolute link on the way
    ("sub/deep", "../../..", "sub/deep/x"),          # a relative one climbing out
    ("rootfs/etc/hostname", "/etc/hostname", "rootfs/etc/hostname"),  # the declared path itself
    ("sub/deep", "../../elsewhere/../..", "sub/*"),  # found through a glob
])
def test_a_link_leading_outside_is_named(tree, link, to, declared):
    if (tree / link).is_dir():
        shutil.rmtree(tree / link)
    os.symlink(to, tree / link)
    assert escaping_writes(tree, [declared]) == [f"{link}: {link} -> {to} leads outside the tree"]


def test_links_that_stay_inside_are_fine_wherever_they_point(tree, tmp_path):
    os.symlink("../run/resolv.conf", tree / "rootfs" / "etc" / "resolv.conf")  # dangling, inside
    os.symlink("../proc/self/mounts", tree / "rootfs" / "etc" / "mtab")
    os.symlink(str(tree / "sub" / "deep"), tree / "abs-inside")   # absolute, into the tree's own path
    os.symlink("sub", tree / "chain1")
    os.symlink("chain1/deep", tree / "chain2")
    declared = ["rootfs/etc/resolv.conf", "rootfs/etc/mtab", "abs-inside/x", "chain2/x"]
    assert escaping_writes(tree, declared, [tree]) == []
    # the same absolute link, when the tree is staged elsewhere: inside only through its final name
    staged = tmp_path / "staging" / "out"
    staged.parent.mkdir()
    tree.rename(staged)
    assert escaping_writes(staged, ["abs-inside/x"], [tree]) == []
    assert escaping_writes(staged, ["abs-inside/x"]) != []


def test_a_link_loop_is_refused(tree):
    os.symlink("b", tree / "a")
    os.symlink("a", tree / "b")
    (problem,) = escaping_writes(tree, ["a/x"])
    assert "too many levels of links" in problem


def test_a_declared_path_must_be_relative_and_below_the_target(tree):
    with pytest.raises(ValueError):
        escaping_writes(tree, ["../x"])


# -- end to end with the counter anchor ---------------------------------------------------


def hostile_producer(gaia_cli, pm, monkeypatch, tmp_path: Path, host: Path) -> Project:
    """A producer (an older gaia, or an attacker with write access) whose uploaded, unsigned
    object holds ``sub -> <host>``."""
    real_build = checkpoint_plugin.build_counter

    def build_with_a_link(ctx) -> None:  # type: ignore[no-untyped-def]
        real_build(ctx)
        out = checkpoint_plugin.out_dir(ctx.build)
        for item in (out / "sub").iterdir():
            item.unlink()
        (out / "sub").rmdir()
        os.symlink(host, out / "sub")

    project = Project(tmp_path / "producer", shared=tmp_path / "shared")
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_plugin, "build_counter", build_with_a_link)
        patch.setattr(containment, "check_in_place", lambda targets: None)
        run(gaia_cli, pm, "run", project.build)
    assert len(project.remote_objects()) == 1
    return project


@pytest.fixture
def host(tmp_path: Path) -> Path:
    victim = tmp_path / "host-dir"
    victim.mkdir()
    (victim / "data.bin").write_text("host file\n")
    return victim


def consumer(tmp_path: Path, producer: Project, policy: str = "auto") -> Project:
    project = Project(tmp_path / "consumer", shared=producer.shared)
    project.write(backend=True, point=f'backend = "dir:shared"\nupload_policy = "off"\nuse_policy = "{policy}"')
    return project


def test_a_restored_tree_whose_write_path_links_outside_is_refused_and_discarded(gaia_cli, pm, monkeypatch,
                                                                               tmp_path, host):
    producer = hostile_producer(gaia_cli, pm, monkeypatch, tmp_path, host)
    project = consumer(tmp_path, producer)

    result = run(gaia_cli, pm, "run", project.build)

    assert "restore miss (reason=unsafe_tree:counter_out/sub" in result.output
    assert "sub -> " in result.output and "leads outside the tree" in result.output
    assert "discarded local checkpoint base/" in result.output
    assert project.builds() == 1 and not (project.out / "sub").is_symlink()
    assert "checkpoint:base captured" in result.output  # its own build, in place of the discarded one
    assert sorted(p.name for p in host.iterdir()) == ["data.bin"]
    assert (host / "data.bin").read_text() == "host file\n"


def test_under_required_an_unsafe_tree_fails_the_run_with_the_reason(gaia_cli, pm, monkeypatch, tmp_path, host):
    producer = hostile_producer(gaia_cli, pm, monkeypatch, tmp_path, host)
    project = consumer(tmp_path, producer, policy="required")
    result = run(gaia_cli, pm, "run", project.build, code=1)
    assert "unsafe_tree:counter_out/sub" in result.output
    assert project.builds() == 0


def test_capture_refuses_a_tree_no_consumer_could_use(gaia_cli, pm, monkeypatch, project, host):
    real_build = checkpoint_plugin.build_counter

    def build_with_a_link(ctx) -> None:  # type: ignore[no-untyped-def]
        real_build(ctx)
        os.symlink(host / "consumed.txt", checkpoint_plugin.out_dir(ctx.build) / "consumed.txt")

    monkeypatch.setattr(checkpoint_plugin, "build_counter", build_with_a_link)
    project.write()
    result = run(gaia_cli, pm, "run", project.build)
    assert "capture failed: unsafe tree: in counter_out, consumed.txt: consumed.txt -> " in result.output
    assert project.objects() == []


# -- relocation roots, checked as the manifest is read ---------------------------------------


@pytest.fixture
def producer(gaia_cli, pm, tmp_path: Path) -> Project:
    project = Project(tmp_path / "producer", shared=tmp_path / "shared")
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', embed_root=True)
    run(gaia_cli, pm, "run", project.build)
    return project


@pytest.mark.parametrize(("roots", "why"), [
    ({"workspace": "/"}, "is not a normalised directory below '/'"),
    ({"workspace": "/tmp/../"}, "is not a normalised directory below '/'"),
    ({"workspace:real": "/"}, "is not a normalised directory below '/'"),
    ({"evil": "/usr"}, "relocation roots ['evil'] are not among the anchor's"),
])
def test_a_manifest_with_a_bad_relocation_root_is_a_refused_object_not_a_failed_run(gaia_cli, pm, tmp_path,
                                                                                    producer, roots, why):
    (obj,) = producer.remote_objects()
    manifest = json.loads((obj / "manifest.json").read_text())
    manifest["roots"].update(roots)
    (obj / "manifest.json").write_text(json.dumps(manifest))
    project = Project(tmp_path / "consumer", shared=producer.shared)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "off"', embed_root=True)

    point = status(gaia_cli, pm, project)
    result = run(gaia_cli, pm, "run", project.build)

    assert point["reason"] == "remote_invalid" and why in point["remote_error"]
    assert why in result.output and project.builds() == 1
