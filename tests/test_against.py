"""``status --explain --against HOST|FINGERPRINT``: why this machine misses what another host
last had (from the shared records) or a given object, value by value and file by file,
on the quickstart's Buildroot test tree and the counter project."""

from __future__ import annotations

import shutil

from counter_project import Project, run
from team_quickstart import gaia, team_quickstart

from gaia_core.checkpoints import recording


def test_against_a_host_names_the_file_that_differs(gaia_cli, tmp_path, monkeypatch):
    shared = tmp_path / "team"
    shared.mkdir()
    ci = team_quickstart(tmp_path / "ci", shared)
    with monkeypatch.context() as m:
        m.setattr(recording, "host_name", lambda: "ci-runner-7")
        gaia(gaia_cli, "run", ci)  # CI builds, uploads, and shares its record
    laptop = team_quickstart(tmp_path / "laptop", shared)
    defconfig = laptop.parent / "buildroot-tree" / "configs" / "gaia_qemu_defconfig"
    defconfig.write_text(defconfig.read_text() + "# tried something\n")
    text = gaia(gaia_cli, "checkpoints", "status", laptop, "--against", "ci-runner-7").output
    assert "host ci-runner-7 (" in text and "last ran base-os" in text
    assert "its object (dir:team) differs from this machine in" in text
    assert "buildroot.source_dir (contents): 1 changed" in text
    assert "    changed: configs/gaia_qemu_defconfig" in text
    data = gaia(gaia_cli, "checkpoints", "status", laptop, "--against", "ci-runner-7", "--json").json
    against = data["points"][0]["explain"]["against"]
    assert against["kind"] == "host" and against["where"] == "dir:team"
    files = next(d["files"] for d in against["diff"] if d["key"] == "buildroot.source_dir (contents)")
    assert files == {"added": [], "removed": [], "changed": ["configs/gaia_qemu_defconfig"]}
    assert not (laptop.parent / "build" / "checkpoints" / "records").exists()  # status wrote nothing


def test_against_an_object_by_fingerprint_prefix(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    fp = project.objects()[0].name
    project.write(value="b")
    text = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", fp[:10]).output
    assert f"object {fp[:12]} (local) differs from this machine in 1 value(s)" in text
    assert 'counter.value: "a" -> "b"' in text


def test_against_the_same_fingerprint_says_so(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    fp = project.objects()[0].name
    text = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", fp).output
    assert "the same inputs as this machine" in text


def test_against_a_host_whose_object_is_gone_uses_the_records_digests(gaia_cli, pm, project, tmp_path,
                                                                       monkeypatch):
    project.write(value="a")
    with monkeypatch.context() as m:
        m.setattr(recording, "host_name", lambda: "old-runner")
        run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.store / "points")  # its object was removed since
    project.write(value="b")
    text = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", "old-runner").output
    assert "its object is in no store" in text and "counter.value" in text
    assert "gaia.store_format" not in text.split("not how:")[1]  # only what differs


def test_against_an_unknown_host_lists_the_known_ones(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    text = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", "nobody").output
    assert "no record names a host 'nobody'" in text and "hosts in the records:" in text


def test_against_an_ambiguous_prefix_asks_for_more(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    twin = obj.parent / (obj.name[:8] + "0" * 56)  # another object whose fingerprint starts alike
    shutil.copytree(obj, twin)
    manifest = Project.manifest(twin)
    Project.write_manifest(twin, {**manifest, "fingerprint": twin.name})
    text = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", obj.name[:8]).output
    assert f"'{obj.name[:8]}' names 2 objects of base" in text and "give more of it" in text
    longer = run(gaia_cli, pm, "checkpoints", "status", project.build, "--against", twin.name[:12]).output
    assert f"object {twin.name[:12]} (local): the same inputs as this machine" in longer
