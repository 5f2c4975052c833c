"""Fingerprints from effective values, and a status that never guesses and never writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blake3
import pytest
from checkpoint_plugin import CounterConfig, CounterPlugin
from counter_project import Project, run, status
from hostile import pack_files, stored_entries

from gaia_core import hookimpl
from gaia_core.backends import Backend, BackendConfig
from gaia_core.errors import BackendUnavailable


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size, p.read_bytes() if p.is_file() else None)
    return out


# -- fingerprints -------------------------------------------------------------------------


def test_writing_a_default_out_explicitly_keeps_the_fingerprint(gaia_cli, pm, project):
    project.write()  # value = "a" written out; "a" is also the model default
    explicit = status(gaia_cli, pm, project)["fingerprint"]
    text = project.build.read_text().replace('value = "a"\n', "")
    project.build.write_text(text)
    assert status(gaia_cli, pm, project)["fingerprint"] == explicit


def test_changing_a_plugins_default_changes_the_fingerprint(gaia_cli, pm, project):
    from checkpoint_plugin import CounterModule

    from gaia_core.plugins import get_plugin_manager

    class NewDefaults(CounterConfig):
        value: str = "b"

    class NewModule(CounterModule):
        config_model = NewDefaults

    class NewPlugin(CounterPlugin):
        @hookimpl
        def gaia_register_modules(self):  # type: ignore[no-untyped-def]
            return [NewModule]

    upgraded = get_plugin_manager(load_entrypoints=False)
    upgraded.register(NewPlugin(), name="counter")
    project.write()
    project.build.write_text(project.build.read_text().replace('value = "a"\n', ""))
    before = status(gaia_cli, pm, project)
    after = status(gaia_cli, upgraded, project)
    assert after["fingerprint"] != before["fingerprint"]


def test_a_fingerprint_from_typo_is_a_config_error_naming_file_and_key(gaia_cli, pm, project):
    project.write(point='fingerprint_from = ["counter.valeu", "counter.value", "nosuch.table"]')
    result = run(gaia_cli, pm, "checkpoints", "status", project.build, code=2)
    assert f"{project.build}: checkpoints.points[0].fingerprint_from[0]: 'counter.valeu' names no field of [counter]" \
        in result.output
    assert "fingerprint_from[2]: 'nosuch.table' names no config field" in result.output
    assert "fingerprint_from[1]" not in result.output


def test_a_path_inside_a_field_is_a_valid_fingerprint_path(gaia_cli, pm, project):
    project.write(point='fingerprint_from = ["counter.value", "counter.link_to"]')
    assert status(gaia_cli, pm, project)["fingerprint"] != "unknown"


def test_salt_keys_are_namespaced_by_the_anchor(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    inputs = Project.manifest(project.objects()[0])["fingerprint_inputs"]
    assert set(inputs) == {"counter.value", "counter.source", "gaia.store_format"}
    assert not any(str(project.root) in json.dumps(v) for v in inputs.values())


def test_an_object_of_an_older_store_format_reads_as_format_changed(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    manifest = Project.manifest(obj)
    manifest["format"] = manifest["version"] = 1
    old = obj.with_name("0" * 64)
    obj.rename(old)
    manifest["fingerprint"] = old.name
    Project.write_manifest(old, manifest)
    shutil.rmtree(project.out)
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "format_changed" and st["will_rebuild"] is True


# -- status -------------------------------------------------------------------------------


def test_before_the_fetch_the_fingerprint_is_unknown_with_what_it_waits_for(gaia_cli, pm, project):
    (project.root / "src.txt").write_text("one")
    project.write(source="src.txt")
    st = status(gaia_cli, pm, project)
    assert st["fingerprint"] == "unknown" and st["pending"] == "needs counter.fetch"
    assert st["will_use"] is None and st["will_rebuild"] is None and st["exists"] is None
    text = run(gaia_cli, pm, "checkpoints", "status", project.build).output
    assert "fingerprint=unknown (needs counter.fetch)" in text
    cold = run(gaia_cli, pm, "run", project.build)
    assert "fingerprint=unknown (needs counter.fetch)" in cold.output
    [obj] = project.objects()
    assert status(gaia_cli, pm, project)["fingerprint"] == obj.name  # known once fetched
    (project.root / "src.txt").write_text("two")
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2  # the fetched content is in the fingerprint


def test_a_missing_prerequisite_is_a_miss_everywhere(gaia_cli, pm, project, tmp_path):
    toolchain = tmp_path / "opt" / "toolchain"
    toolchain.mkdir(parents=True)
    project.write(link_to=str(toolchain))
    run(gaia_cli, pm, "run", project.build)
    assert Project.manifest(project.objects()[0])["prerequisites"] == [str(toolchain)]
    shutil.rmtree(project.out)
    shutil.rmtree(toolchain)
    st = status(gaia_cli, pm, project)
    assert st["reason"] == f"missing_prerequisite:{toolchain}" and st["will_rebuild"] is True
    result = run(gaia_cli, pm, "run", project.build)
    assert f"missing_prerequisite:{toolchain}" in result.output and project.builds() == 2
    project.write(link_to=str(toolchain), point='use_policy = "required"')
    shutil.rmtree(project.out)
    failed = run(gaia_cli, pm, "run", project.build, code=1)
    assert f"missing_prerequisite:{toolchain}" in failed.output


def test_messages_say_what_happened(gaia_cli, pm, project):
    project.write()
    cold = run(gaia_cli, pm, "run", project.build)
    assert "the restored checkpoint was used" not in cold.output
    warm = run(gaia_cli, pm, "run", project.build)
    assert "nothing to capture: the tree was already in place" in warm.output


def test_status_and_list_write_nothing_even_with_a_corrupt_queue(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    (project.store / "upload-queue.json").write_text("[[[")
    (project.store / "index.json").unlink()
    before = snapshot(project.root), snapshot(project.shared)
    status_result = run(gaia_cli, pm, "checkpoints", "status", project.build)
    run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote")
    run(gaia_cli, pm, "checkpoints", "status", project.build, "--json", "--explain")
    assert (snapshot(project.root), snapshot(project.shared)) == before
    assert "corrupt" in status_result.output
    run(gaia_cli, pm, "run", project.build)  # a run repairs it
    assert list(project.store.glob("upload-queue.json.corrupt-*"))


def test_list_remote_exits_non_zero_when_a_backend_cannot_be_listed(gaia_cli, pm, project):
    project.write(backend=True, point='backend = "dir:shared"')  # the shared dir does not exist
    result = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", code=5)
    assert "error: backend dir:shared is unavailable: " in result.output
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", "--json", code=5)
    row = json.loads(listed.stdout)["points"][0]
    assert "is not available" in row["remote_error"]


def test_a_queue_file_with_an_unknown_alias_is_a_config_error_naming_file_and_key(gaia_cli, pm, project):
    project.write(checkpoints='queue_file = "@nope/q.json"')
    result = run(gaia_cli, pm, "checkpoints", "status", project.build, code=2)
    assert f"{project.build}: checkpoints.queue_file: unknown path alias '@nope'" in result.output


# -- a backend that timed out is skipped for the rest of the run ---------------------------


class HungConfig(BackendConfig):
    pass


class HungBackend(Backend):
    """Times out on every call, counting them."""

    kind = "hung"
    config_model = HungConfig
    calls: list[str] = []

    def _hang(self, call: str) -> BackendUnavailable:
        HungBackend.calls.append(call)
        return BackendUnavailable(f"{self.ref}: no answer within {self.probe_timeout:.0f}s")

    def exists(self, key: str) -> bool:
        raise self._hang(f"exists {key}")

    def download(self, key, dest, *, progress=None):  # type: ignore[no-untyped-def]
        raise self._hang(f"download {key}")

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        raise self._hang(f"read_range {key}")

    def upload(self, key, source, *, progress=None):  # type: ignore[no-untyped-def]
        raise self._hang(f"upload {key}")

    def publish(self, key, source):  # type: ignore[no-untyped-def]
        raise self._hang(f"publish {key}")

    def delete(self, key: str) -> None:
        raise self._hang(f"delete {key}")

    def list_entries(self, point_id: str):  # type: ignore[no-untyped-def]
        raise self._hang(f"list_entries {point_id}")

    def list_files(self, prefix: str):  # type: ignore[no-untyped-def]
        raise self._hang(f"list_files {prefix}")

    def list_dirs(self, prefix: str):  # type: ignore[no-untyped-def]
        raise self._hang(f"list_dirs {prefix}")

    def publish(self, key, source):  # type: ignore[no-untyped-def]
        self.upload(key, source)

    def delete(self, key):  # type: ignore[no-untyped-def]
        HungBackend.calls.append(f"delete {key}")
        raise BackendUnavailable(f"{self.ref}: stalled")

    def list_entries(self, point_id):  # type: ignore[no-untyped-def]
        HungBackend.calls.append(f"list {point_id}")
        raise BackendUnavailable(f"{self.ref}: no answer within {self.probe_timeout:.0f}s")


class HungPlugin:
    @hookimpl
    def gaia_register_backends(self):  # type: ignore[no-untyped-def]
        return [HungBackend]


def test_a_backend_that_timed_out_is_not_asked_again_in_the_same_run(gaia_cli, project):
    from gaia_core.plugins import get_plugin_manager

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(CounterPlugin(), name="counter")
    pm.register(HungPlugin(), name="hung")
    HungBackend.calls.clear()
    project.write(point='backend = "hung:h"\nupload_policy = "always"',
                  checkpoints="[checkpoints.backends.hung.h]\n")
    result = run(gaia_cli, pm, "run", project.build)
    assert len(HungBackend.calls) == 1, HungBackend.calls  # the preamble's probe, nothing after it
    assert "skipped for the rest of this run" in result.output
    queue = json.loads((project.store / "upload-queue.json").read_text())
    assert queue["entries"][0]["state"] == "failed"
    assert project.builds() == 1


def test_pack_names_derive_from_their_blake3(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    manifest = Project.manifest(obj)
    for store in (project.store, project.shared):  # the local packs, and those uploaded
        packs = pack_files(store)
        assert packs
        for pack_id, pack in packs.items():
            assert pack.name == f"{blake3.blake3(pack.read_bytes()).hexdigest()}.pack" == f"{pack_id}.pack"
            assert pack.with_suffix(".idx").is_file()
    tree = manifest["tree"]
    assert tree["entries"] == len(stored_entries(project.store, manifest)) > 0
    assert tree["size"] > 0 and tree["files"] > 0 and 0 < tree["packed"] <= sum(
        p.stat().st_size for p in pack_files(project.store).values())


@pytest.mark.parametrize("value", ["2", "maybe"])
def test_a_bad_read_only_env_value_is_named(gaia_cli, pm, project, monkeypatch, value):
    monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", value)
    project.write()
    result = run(gaia_cli, pm, "checkpoints", "status", project.build, code=2)
    assert "GAIA_CHECKPOINTS_READ_ONLY" in result.output
