"""Trust: signed checkpoints, write-once remote objects, a restore a hostile remote cannot turn
against the host. One test per attack, on crafted objects in a ``dir`` backend."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import zstandard
from counter_project import Project, run, status

from gaia_core.checkpoints.manifest import payload_file_name
from gaia_core.checkpoints.signing import generate, load_signing_key, sign

# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path, gaia_cli, pm):
    """A trusted key pair written by ``gaia checkpoints keygen``: (secret path, public line)."""
    result = run(gaia_cli, pm, "checkpoints", "keygen", "ci-main", "--dir", tmp_path / "keys")
    public = (tmp_path / "keys" / "ci-main.public").read_text().strip()
    assert f'trusted_public_keys = ["{public}"]' in result.output
    return tmp_path / "keys" / "ci-main.secret", public


def signed_config(public: str) -> str:
    return f'trusted_public_keys = ["{public}"]\nsigning_key_file_env = "GAIA_TEST_SIGNING_KEY"\n'


@pytest.fixture
def signer_env(keys, monkeypatch):
    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(keys[0]))
    return keys


def publish_and_wipe(gaia_cli, pm, project: Project, **write) -> Path:
    """Build once, upload, and wipe the local store and out dir: the next run must go remote."""
    project.shared.mkdir(exist_ok=True)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', **write)
    run(gaia_cli, pm, "run", project.build)
    [remote] = project.remote_objects()
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    return remote


def publish_unsigned_and_wipe(gaia_cli, pm, project: Project, public: str) -> Path:
    """An unsigned object in the backend (a writer without keys, or an attacker), then a build
    file that trusts ``public``: uploads of unsigned objects stop once keys are trusted."""
    remote = publish_and_wipe(gaia_cli, pm, project)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"',
                  checkpoints=signed_config(public))
    return remote


def replace_payload(obj: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], *, rehash: bool = True,
                    key=None) -> dict:  # type: ignore[no-untyped-def]
    """Write a crafted payload into ``obj`` and make the manifest consistent with it (an attacker's move)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    payload = zstandard.ZstdCompressor().compress(raw.getvalue())
    manifest = Project.manifest(obj)
    (obj / manifest["payload"]["file"]).unlink()
    sha = hashlib.sha256(payload).hexdigest()
    if rehash:
        manifest["payload"].update(sha256=sha, size=len(payload), file=payload_file_name(sha, "zstd"),
                                   unpacked_size=len(raw.getvalue()), entries=len(members))
    (obj / manifest["payload"]["file"]).write_bytes(payload)
    manifest.pop("signature", None)
    if key is not None:
        manifest = sign(manifest, key)
    Project.write_manifest(obj, manifest)
    return manifest


def member(name: str, data: bytes = b"", mode: int = 0o644, **attrs) -> tuple[tarfile.TarInfo, bytes | None]:  # type: ignore[no-untyped-def]
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 1_700_000_000
    for k, v in attrs.items():
        setattr(info, k, v)
    if info.type == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def trojan_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [member("counter_out", mode=0o755, type=tarfile.DIRTYPE),
            member("counter_out/value.txt", b"a"),
            member("counter_out/.config", b"$(shell touch /tmp/gaia-pwned)\n")]


# -- signatures ---------------------------------------------------------------------------


def test_keygen_writes_a_private_secret_and_a_public_line(keys):
    secret, public = keys
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert public.startswith("ci-main:") and len(public) > 40
    assert load_signing_key(secret, "test").public_line() == public


def test_keygen_never_overwrites_a_key(gaia_cli, pm, keys, tmp_path):
    before = keys[0].read_bytes()
    result = run(gaia_cli, pm, "checkpoints", "keygen", "ci-main", "--dir", tmp_path / "keys", code=1)
    assert "refusing to overwrite" in result.output
    assert keys[0].read_bytes() == before


def test_signed_capture_restores_from_the_backend_and_shows_the_signer(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    assert Project.manifest(remote)["signature"]["key"] == "ci-main"
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "remote_hit" and st["signer"] == "ci-main"
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--json").json["points"][0]
    assert listed["local"][0]["signer"] == "ci-main"


def test_unsigned_trojan_is_refused_when_keys_are_configured(gaia_cli, pm, project, keys, monkeypatch):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_payload(remote, trojan_members())
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "untrusted:unsigned" and st["will_rebuild"] is True
    result = run(gaia_cli, pm, "run", project.build)
    assert "untrusted:unsigned" in result.output
    assert project.builds() == 2
    assert not (project.out / ".config").exists()


def test_required_fails_on_an_untrusted_object(gaia_cli, pm, project, keys):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_payload(remote, trojan_members())
    project.write(backend=True, point='backend = "dir:shared"\nuse_policy = "required"',
                  checkpoints=signed_config(keys[1]))
    result = run(gaia_cli, pm, "run", project.build, code=1)
    assert "untrusted:unsigned" in result.output
    assert project.builds() == 1


def test_an_object_signed_by_an_untrusted_key_is_refused(gaia_cli, pm, project, keys, tmp_path):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    stranger = generate("stranger")
    replace_payload(remote, trojan_members(), key=stranger)
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "untrusted:key_not_trusted:stranger"
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2


def test_a_field_tampered_after_signing_breaks_the_signature(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    manifest = Project.manifest(remote)
    manifest["fingerprint_inputs"]["counter.value"] = "tampered"
    Project.write_manifest(remote, manifest)
    assert status(gaia_cli, pm, project)["reason"] == "untrusted:bad_signature:ci-main"


def test_a_tampered_payload_with_a_rehashed_manifest_is_refused(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    replace_payload(remote, trojan_members())  # re-hashed, signature dropped
    assert status(gaia_cli, pm, project)["reason"] == "untrusted:unsigned"
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and not (project.out / ".config").exists()


def test_without_keys_unsigned_objects_are_accepted_with_one_warning(gaia_cli, pm, project):
    publish_and_wipe(gaia_cli, pm, project)
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "remote_hit" and st["signer"] == "unsigned"
    result = run(gaia_cli, pm, "run", project.build)
    assert result.output.count("no trusted_public_keys are configured") == 1
    assert project.builds() == 1


def test_a_named_but_unset_signing_variable_means_unsigned_with_a_warning(gaia_cli, pm, project, keys):
    project.write(checkpoints=signed_config(keys[1]))
    result = run(gaia_cli, pm, "run", project.build)
    assert "GAIA_TEST_SIGNING_KEY is not set: checkpoints are captured unsigned" in result.output
    [obj] = project.objects()
    assert "signature" not in Project.manifest(obj)


def test_a_signing_variable_naming_no_file_is_a_config_error_in_every_command(gaia_cli, pm, project, keys,
                                                                               monkeypatch, tmp_path):
    project.write(checkpoints=signed_config(keys[1]))
    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(tmp_path / "no-such.secret"))
    for command in (["run"], ["plan"], ["checkpoints", "status"]):
        result = run(gaia_cli, pm, *command, project.build, code=2)
        assert ("environment: checkpoints.signing_key_file_env (env var 'GAIA_TEST_SIGNING_KEY') does not name "
                "an existing file") in result.output
    monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", "1")  # a read-only run never signs: no problem
    run(gaia_cli, pm, "checkpoints", "status", project.build)


def test_a_secret_key_readable_by_others_is_not_used(gaia_cli, pm, project, signer_env):
    os.chmod(signer_env[0], 0o644)
    project.write(checkpoints=signed_config(signer_env[1]))
    result = run(gaia_cli, pm, "run", project.build)
    assert "readable by group or others" in result.output
    assert "signature" not in Project.manifest(project.objects()[0])


def test_permissive_skips_the_signature_check_but_not_the_safety_checks(gaia_cli, pm, project, keys):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_payload(remote, [member("counter_out", mode=0o755, type=tarfile.DIRTYPE),
                             member("counter_out/../../escaped", b"x")])
    project.write(backend=True, point='backend = "dir:shared"', checkpoints=signed_config(keys[1]) +
                  'trust_mode = "permissive"\n')
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert not (project.root / "escaped").exists() and not (project.root.parent / "escaped").exists()


# -- status, list and verify tell the same truth ---------------------------------------------


def test_status_list_and_verify_name_the_signer_of_a_refused_remote_object(gaia_cli, pm, project, keys):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_payload(remote, trojan_members(), key=generate("stranger"))
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "untrusted:key_not_trusted:stranger"
    assert st["signer"] == st["remote_signer"] == "stranger"
    assert "signer=stranger remote_signer=stranger" in run(gaia_cli, pm, "checkpoints", "status", project.build).output

    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", "--json").json["points"][0]
    [item] = listed["remote"]
    assert (item["signer"], item["trust"], item["current"]) == ("stranger", "untrusted", True)
    text = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote").output
    assert "signer=stranger (untrusted: key_not_trusted:stranger) (current)" in text

    verified = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json", code=1).json
    assert (verified["ok"], verified["bad"], verified["untrusted"]) == (0, 0, 1)
    [obj] = verified["objects"]
    assert obj["state"] == "untrusted" and "signer: stranger" in obj["detail"]
    result = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", code=1)
    assert "ok=0 bad=0 untrusted=1" in result.output
    assert "1 remote object(s) are not signed by a trusted key" in result.output


def test_status_names_the_signer_of_a_local_object_and_the_remote_one_apart(gaia_cli, pm, project, signer_env):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"',
                  checkpoints=signed_config(signer_env[1]))
    run(gaia_cli, pm, "run", project.build)
    st = status(gaia_cli, pm, project)
    assert (st["reason"], st["signer"], st["remote_signer"]) == ("hit", "ci-main", "-")  # remote not asked
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", "--json").json["points"][0]
    assert listed["local"][0]["signer"] == listed["remote"][0]["signer"] == "ci-main"
    assert listed["remote"][0]["trust"] == "trusted"
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json").json["untrusted"] == 0


def test_no_upload_that_no_trusting_consumer_could_use(gaia_cli, pm, project, keys, monkeypatch):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"',
                  checkpoints=signed_config(keys[1]))  # GAIA_TEST_SIGNING_KEY unset: captures are unsigned
    st = status(gaia_cli, pm, project)
    assert st["will_rebuild"] is True and st["will_upload"] is False
    assert st["will_upload_reason"].startswith("unsigned: a capture here is unsigned (GAIA_TEST_SIGNING_KEY is not set)")
    text = run(gaia_cli, pm, "checkpoints", "status", project.build).output
    assert "will_upload=false" in text and "  no upload after a rebuild: unsigned:" in text

    result = run(gaia_cli, pm, "run", project.build)
    assert "kept locally, not uploaded: unsigned: the object is unsigned" in result.output
    assert project.remote_objects() == [] and project.objects()
    run(gaia_cli, pm, "run", project.build)  # a local hit is not uploaded either
    assert project.remote_objects() == []

    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(keys[0]))
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"\nuse_policy = "off"',
                  checkpoints=signed_config(keys[1]))
    st = status(gaia_cli, pm, project)
    assert st["will_upload"] is True and st["will_upload_reason"] is None


# -- read-only consumers -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "env"])
def test_read_only_restores_but_never_writes_to_the_backend_or_signs(gaia_cli, pm, project, signer_env,
                                                                     monkeypatch, how):
    publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    extra = signed_config(signer_env[1]) + ("read_only = true\n" if how == "config" else "")
    if how == "env":
        monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", "1")
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', checkpoints=extra)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1  # restored from the backend
    before = sorted(p.relative_to(project.shared) for p in project.shared.rglob("*"))
    project.write(value="b", backend=True, point='backend = "dir:shared"\nupload_policy = "always"',
                  checkpoints=extra)
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and "read-only" in result.output
    assert sorted(p.relative_to(project.shared) for p in project.shared.rglob("*")) == before
    new = [o for o in project.objects() if Project.manifest(o)["fingerprint_inputs"]["counter.value"] == "b"]
    assert "signature" not in Project.manifest(new[0])
    assert run(gaia_cli, pm, "checkpoints", "retry", project.build, code=2).output.count("read-only") == 1


# -- bounded, de-privileged restore ----------------------------------------------------------


def test_setuid_and_foreign_owner_are_restored_without(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    key = load_signing_key(signer_env[0], "test")
    replace_payload(remote, [member("counter_out", mode=0o755, type=tarfile.DIRTYPE),
                             member("counter_out/value.txt", b"a"),
                             member("counter_out/su", b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
                             member("counter_out/mine", b"x", mode=0o2755, uid=4242, gid=4242)], key=key)
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    for name in ("su", "mine"):
        st = (project.out / name).lstat()
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), name
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert "without their setuid/setgid bits" in result.output and "counter_out/su" in result.output


def test_a_zstd_bomb_stops_at_the_unpacked_size(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    key = load_signing_key(signer_env[0], "test")
    manifest = replace_payload(remote, [member("counter_out", mode=0o755, type=tarfile.DIRTYPE),
                                        member("counter_out/zeros", bytes(64 << 20))], key=None)
    manifest["payload"]["unpacked_size"] = 1 << 20  # the consistent-looking lie
    Project.write_manifest(remote, sign(manifest, key))
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2, result.output
    assert not (project.out / "zeros").exists()


def test_an_oversized_remote_payload_stops_the_download_early(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    manifest = Project.manifest(remote)
    payload = remote / manifest["payload"]["file"]
    with open(payload, "ab") as f:
        f.truncate(1 << 30)  # a 1 GiB (sparse) payload behind a manifest that says a few KB
    result = run(gaia_cli, pm, "run", project.build)
    assert "download stopped" in result.output
    assert project.builds() == 2
    assert not [p for p in (project.store / "tmp").rglob("*") if p.is_file() and p.stat().st_size > 64 << 20]


def test_a_killed_download_is_reclaimed_by_the_next_run(gaia_cli, pm, project):
    project.write()
    staging = project.store / "tmp" / "base-0123456789ab-dead"
    staging.mkdir(parents=True)
    (staging / "payload.partial").write_bytes(b"x" * 1000)
    (staging / ".gaia-owner.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 7,
                                                          "start": 1}))
    result = run(gaia_cli, pm, "run", project.build)
    assert not staging.exists() and "left in the store by an interrupted run" in result.output


def test_a_temporary_of_a_live_process_is_kept(gaia_cli, pm, project):
    from gaia_core.owner import write_owner

    project.write()
    staging = project.store / "tmp" / "base-live"
    staging.mkdir(parents=True)
    write_owner(staging, "a concurrent download")
    run(gaia_cli, pm, "run", project.build)
    assert staging.exists()


# -- write-once objects ------------------------------------------------------------------------


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from checkpoint_plugin import CounterPlugin
    from gaia_core.cli import main
    from gaia_core.plugins import get_plugin_manager
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(CounterPlugin(), name="counter")
    main(sys.argv[1:], pm=pm)
""")


def test_four_concurrent_writers_leave_exactly_one_valid_object(gaia_cli, pm, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent)))
    projects = [Project(tmp_path / f"machine{i}", shared=shared) for i in range(4)]
    for p in projects:
        p.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    procs = [subprocess.Popen([sys.executable, str(script), "run", str(p.build)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env) for p in projects]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    [remote] = projects[0].remote_objects()
    manifest = Project.manifest(remote)
    payload = remote / manifest["payload"]["file"]
    assert hashlib.sha256(payload.read_bytes()).hexdigest() == manifest["payload"]["sha256"]
    verified = run(gaia_cli, pm, "checkpoints", "verify", projects[1].build, "--remote", "--json").json
    assert verified["bad"] == 0 and any(o["where"] == "remote" and o["state"] == "ok" for o in verified["objects"])


def test_a_corrupt_remote_object_is_healed_by_the_next_run(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    manifest = Project.manifest(remote)
    payload = remote / manifest["payload"]["file"]
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert "is bad (payload_sha256); replacing it" in result.output
    [healed] = project.remote_objects()
    new = Project.manifest(healed)
    assert hashlib.sha256((healed / new["payload"]["file"]).read_bytes()).hexdigest() == new["payload"]["sha256"]
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2  # the healed object serves the next machine


def test_a_good_object_of_another_producer_is_never_replaced(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    before = (remote / "manifest.json").read_bytes()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"\nuse_policy = "off"')
    result = run(gaia_cli, pm, "run", project.build)
    assert "already in dir:shared (from another producer; kept)" in result.output
    assert (remote / "manifest.json").read_bytes() == before


def test_verify_finds_and_repairs_a_bad_remote_object_from_a_good_local_copy(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    [remote] = project.remote_objects()
    payload = remote / Project.manifest(remote)["payload"]["file"]
    payload.write_bytes(payload.read_bytes()[:-10] + b"0123456789")
    bad = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", code=1)
    assert "payload does not match the manifest's sha256" in bad.output
    run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--repair")
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json").json["bad"] == 0


def test_verify_discards_a_bad_local_object_and_fetches_it_again(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    payload = obj / Project.manifest(obj)["payload"]["file"]
    payload.write_bytes(b"corrupt")
    report = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--repair", "--json").json
    assert report["bad"] == 1 and report["repaired"] == 1
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json["bad"] == 0


def test_a_restore_that_would_not_fit_is_refused_before_extracting(gaia_cli, pm, project, monkeypatch):
    from gaia_core.checkpoints import restore

    project.write()
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    real = os.statvfs

    class Full:
        def __init__(self, st):  # type: ignore[no-untyped-def]
            self.f_frsize, self.f_bavail = st.f_frsize, 1  # one block free

    monkeypatch.setattr(restore.os, "statvfs", lambda path: Full(real(path)))
    result = run(gaia_cli, pm, "run", project.build)
    assert "free" in result.output and "could not be restored" in result.output
    assert project.builds() == 2
    assert len(project.objects()) == 1  # the object is fine: kept, not discarded
