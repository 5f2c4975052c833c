"""Trust: signed checkpoints, write-once remote objects, a restore a hostile remote cannot turn
against the host, and a shared store its writers cannot turn against its readers. One test
per attack, on objects crafted in a ``dir`` backend with the toolkit of :mod:`hostile`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard
from counter_project import Project, run, status
from hostile import (
    UNSIGNED,
    Frames,
    corrupt_chunk,
    craft_tree,
    d,
    f,
    find_chunk,
    forge,
    hard,
    link,
    manifest_for,
    object_dirs,
    read_manifest,
    rewrite_pack,
    slots,
    stored_entries,
    trojan,
    write_manifest,
)

from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.entries import Entry
from gaia_core.checkpoints.packs import compress
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


OWN_SLOT = "manifest.key.ci-main.json"
BACKEND = 'backend = "dir:shared"\nupload_policy = "always"'


@pytest.fixture
def signer_env(keys, monkeypatch):
    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(keys[0]))
    return keys


def publish_and_wipe(gaia_cli, pm, project: Project, **write) -> Path:
    """Build once, upload, and wipe the local store and out dir: the next run must go remote.
    Returns the object's directory in the shared store (``points/base/<fp>``)."""
    project.shared.mkdir(exist_ok=True)
    project.write(backend=True, point=BACKEND, **write)
    run(gaia_cli, pm, "run", project.build)
    [remote] = object_dirs(project.shared)
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    return remote


def replace_tree(project: Project, remote: Path, entries: list[Entry], contents: list[bytes] = (), *,
                 key=None, name: str | None = None, **lies) -> dict:  # type: ignore[no-untyped-def]
    """The attacker's move: a new tree for the object in ``remote`` (chunks in a new pack of
    the shared store), under a copy of its manifest, signed by ``key`` or unsigned, written
    into slot ``name`` (default: the signer's), every other slot removed."""
    [current] = slots(remote)
    base = read_manifest(remote, current)
    (remote / current).unlink()
    return forge(remote, base, craft_tree(project.shared, entries, contents, **lies), key=key, name=name)


def publish_unsigned_and_wipe(gaia_cli, pm, project: Project, public: str) -> Path:  # type: ignore[no-untyped-def]
    """An unsigned object in the backend (a writer without keys, or an attacker), then a build
    file that trusts ``public``: uploads of unsigned objects stop once keys are trusted."""
    remote = publish_and_wipe(gaia_cli, pm, project)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"',
                  checkpoints=signed_config(public))
    return remote


def assert_untouched(project: Project, host: Path) -> None:
    """The anchor ran again (the hostile tree was not used) and nothing reached the host."""
    assert project.builds() == 2
    assert (project.out / "value.txt").read_text() == "a"
    assert not (project.out / ".config").exists()
    assert sorted(host.iterdir()) == [host / "victim"] and (host / "victim").read_text() == "host file"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory of the host that a hostile tree aims at, with one file in it."""
    path = tmp_path / "host"
    path.mkdir()
    (path / "victim").write_text("host file")
    return path


def fingerprint_of(gaia_cli, pm, project: Project) -> str:  # type: ignore[no-untyped-def]
    return status(gaia_cli, pm, project, "--no-remote")["fingerprint"]


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
    assert slots(remote) == [OWN_SLOT]  # the signer's own slot
    assert read_manifest(remote, OWN_SLOT)["signature"]["key"] == "ci-main"
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "remote_hit" and st["signer"] == "ci-main"
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--json").json["points"][0]
    assert listed["local"][0]["signer"] == "ci-main"


def test_unsigned_trojan_is_refused_when_keys_are_configured(gaia_cli, pm, project, keys, host):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])  # env unset: unsigned
    assert slots(remote) == [UNSIGNED]
    replace_tree(project, remote, *trojan())
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "untrusted:unsigned" and st["will_rebuild"] is True
    result = run(gaia_cli, pm, "run", project.build)
    assert "untrusted:unsigned" in result.output
    assert_untouched(project, host)


def test_required_fails_on_an_untrusted_object(gaia_cli, pm, project, keys):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_tree(project, remote, *trojan())
    project.write(backend=True, point='backend = "dir:shared"\nuse_policy = "required"',
                  checkpoints=signed_config(keys[1]))
    result = run(gaia_cli, pm, "run", project.build, code=1)
    assert "untrusted:unsigned" in result.output
    assert project.builds() == 1


def test_an_object_signed_by_an_untrusted_key_is_refused(gaia_cli, pm, project, keys, host):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_tree(project, remote, *trojan(), key=generate("stranger"))
    assert slots(remote) == ["manifest.key.stranger.json"]
    st = status(gaia_cli, pm, project)
    assert st["reason"] == "untrusted:key_not_trusted:stranger"
    run(gaia_cli, pm, "run", project.build)
    assert_untouched(project, host)


def test_a_field_tampered_after_signing_breaks_the_signature(gaia_cli, pm, project, signer_env):
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    manifest = read_manifest(remote, OWN_SLOT)
    manifest["fingerprint_inputs"]["counter.value"] = "tampered"
    write_manifest(remote, manifest)
    assert status(gaia_cli, pm, project)["reason"] == "untrusted:bad_signature:ci-main"


@pytest.mark.parametrize("signature", ["kept", "dropped"])
def test_a_tree_replaced_in_the_signers_slot_is_refused(gaia_cli, pm, project, signer_env, host, signature):
    """The trojan goes into the producer's own slot: with its old signature (which no longer
    covers the tree) or with none (it claims the slot of a key that did not sign it)."""
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    old = read_manifest(remote, OWN_SLOT)
    manifest = replace_tree(project, remote, *trojan(), name=OWN_SLOT)
    if signature == "kept":
        write_manifest(remote, {**manifest, "signature": old["signature"]}, OWN_SLOT)
    assert status(gaia_cli, pm, project)["reason"] == "untrusted:bad_signature:ci-main"
    run(gaia_cli, pm, "run", project.build)
    assert_untouched(project, host)


def test_a_tampered_chunk_behind_a_genuine_signature_is_refused(gaia_cli, pm, project, signer_env, host):
    """The signed manifest is the producer's; the pack serves other bytes under the id of one
    of its chunks (the trojan's content where value.txt's was)."""
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    manifest = read_manifest(remote, OWN_SLOT)
    value = next(e for e in stored_entries(project.shared, manifest) if e.path == "counter_out/value.txt")
    path, entry = find_chunk(project.shared, value.digest)
    evil = compress(b"b")  # same length as the genuine "a", other content
    data = bytearray(path.read_bytes())
    data[entry.offset:entry.offset + entry.clen] = evil.ljust(entry.clen, b"\0")[:entry.clen]
    rewrite_pack(project.shared, path, bytes(data))
    assert status(gaia_cli, pm, project)["reason"] == "remote_hit"  # the manifest is fine; its chunks are not
    result = run(gaia_cli, pm, "run", project.build)
    assert f"chunk {value.digest.hex()[:16]} does not match its id" in result.output, result.output
    assert_untouched(project, host)


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


def test_permissive_skips_the_signature_check_but_not_the_safety_checks(gaia_cli, pm, project, keys, host):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_tree(project, remote, [d("counter_out"), f("counter_out/../../escaped", b"x")], [b"x"], sort=False)
    project.write(backend=True, point='backend = "dir:shared"', checkpoints=signed_config(keys[1]) +
                  'trust_mode = "permissive"\n')
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert not (project.root / "escaped").exists() and not (project.root.parent / "escaped").exists()


# -- hostile entries: every safety rule of extraction, on an object nobody's key is asked about


def _hostile_entries(host: Path) -> dict[str, tuple[list[Entry], bool]]:
    """name -> (entries, whether they come in the attacker's order rather than sorted)."""
    victim = str(host / "victim")
    top = [d("counter_out"), f("counter_out/value.txt", b"a")]
    return {
        "dotdot": (top + [f("counter_out/../../escaped", b"x")], True),
        "absolute": ([*top, f(f"{host}/escaped", b"x")], True),
        "through-a-link": (top + [link("counter_out/lnk", str(host)), f("counter_out/lnk/escaped", b"x")], False),
        "through-a-link-to-a-dir": (top + [link("counter_out/lnk", str(host)), d("counter_out/lnk/sub"),
                                           f("counter_out/lnk/sub/escaped", b"x")], False),
        "replaces-a-link": (top + [link("counter_out/x", victim), f("counter_out/x", b"x")], True),
        "hard-link-outside": (top + [hard("counter_out/h", victim)], False),
        "hard-link-to-a-link": (top + [link("counter_out/a", victim), hard("counter_out/b", "counter_out/a")], False),
        "device": (top + [Entry("counter_out/dev", "c", 0o644, 0)], False),
        "empty-link": (top + [link("counter_out/l", "")], False),
        "second-root": (top + [d("elsewhere"), f("elsewhere/escaped", b"x")], False),
    }


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "through-a-link", "through-a-link-to-a-dir",
                                    "replaces-a-link", "hard-link-outside", "hard-link-to-a-link", "device",
                                    "empty-link", "second-root"])
def test_hostile_entries_are_refused_before_anything_is_written(gaia_cli, pm, project, host, attack):
    remote = publish_and_wipe(gaia_cli, pm, project)  # no keys: unsigned objects are accepted
    entries, verbatim = _hostile_entries(host)[attack]
    replace_tree(project, remote, entries, [b"a", b"x"], sort=not verbatim)
    result = run(gaia_cli, pm, "run", project.build)
    assert "building instead" in result.output, result.output  # refused at download or at restore
    assert_untouched(project, host)
    assert not list(project.root.parent.rglob("escaped"))


def test_a_link_out_of_the_tree_is_restored_as_data_and_nothing_is_written_through_it(gaia_cli, pm, project, host):
    remote = publish_and_wipe(gaia_cli, pm, project)
    replace_tree(project, remote, [d("counter_out"), f("counter_out/value.txt", b"a"),
                                   link("counter_out/to-host", str(host))], [b"a"])
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    assert os.readlink(project.out / "to-host") == str(host)
    assert sorted(host.iterdir()) == [host / "victim"] and (host / "victim").read_text() == "host file"


# -- hostile packs and lying manifests -----------------------------------------------------


LIE = b"only in the lying pack"


def _lying_object(project: Project, remote: Path, lie: str) -> None:
    """Replace the object with a small honest-looking tree whose store lies in one way (its
    content is found in no other pack, so nothing genuine can stand in for the lie)."""
    good = [d("counter_out"), f("counter_out/value.txt", LIE)]
    frames = Frames()
    if lie == "chunk-not-its-id":  # the pack files other content under value.txt's id
        frames.add_frame(chunk_id(LIE), compress(LIE.upper()), len(LIE))
        replace_tree(project, remote, good, frames=frames)
    elif lie == "index-offsets":  # the index points a few bytes off, still inside the pack
        replace_tree(project, remote, good, [LIE])
        _shift_index_of(project.shared, chunk_id(LIE), 3)
    elif lie == "chunk-in-no-pack":  # the entry names a chunk nobody stored
        replace_tree(project, remote, good + [f("counter_out/ghost", b"never stored")], [LIE])
    elif lie == "frame-inflates":  # a pack bomb: a tiny frame of 64 MiB filed under value.txt's chunk
        frames.add_frame(chunk_id(LIE), compress(bytes(64 << 20)), len(LIE))
        replace_tree(project, remote, good, frames=frames)
    elif lie == "frame-without-size":  # a frame that does not say what it inflates to
        frames.add_frame(chunk_id(LIE), zstandard.ZstdCompressor(write_content_size=False).compress(LIE), len(LIE))
        replace_tree(project, remote, good, frames=frames)
    elif lie == "fewer-entries":  # the totals say 2 entries, the list holds 3
        replace_tree(project, remote, [*good, f("counter_out/extra", b"x")], [LIE, b"x"])
        manifest = read_manifest(remote)
        manifest["tree"]["entries"] = manifest["tree"]["parts"][0]["entries"] = 2
        write_manifest(remote, manifest)
    elif lie == "more-entries":  # the totals promise more than the list holds
        replace_tree(project, remote, good, [LIE])
        manifest = read_manifest(remote)
        manifest["tree"]["entries"] = manifest["tree"]["parts"][0]["entries"] = 3
        write_manifest(remote, manifest)
    elif lie == "file-size":  # the entry says one byte less than its chunk holds
        entry = f("counter_out/value.txt", LIE)
        entry.size -= 1
        replace_tree(project, remote, [d("counter_out"), entry], [LIE])
    else:
        raise AssertionError(lie)


def _shift_index_of(root: Path, chunk: bytes, by: int) -> None:
    from gaia_core.checkpoints.packs import IndexEntry, decode_index, encode_index

    path, _ = find_chunk(root, chunk)
    idx = path.with_suffix(".idx")
    entries = decode_index(idx.read_bytes(), None, str(idx))
    idx.write_bytes(encode_index(IndexEntry(e.chunk, e.offset + by, e.clen, e.plen) if e.chunk == chunk else e
                                 for e in entries))


LIES = ["chunk-not-its-id", "index-offsets", "chunk-in-no-pack", "frame-inflates", "frame-without-size",
        "fewer-entries", "more-entries", "file-size"]


@pytest.mark.parametrize("lie", LIES)
def test_a_store_that_lies_is_never_used(gaia_cli, pm, project, host, lie):
    remote = publish_and_wipe(gaia_cli, pm, project)
    _lying_object(project, remote, lie)
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2, result.output
    assert (project.out / "value.txt").read_text() == "a" and not (project.out / "extra").exists()
    # nothing the lie described was kept: every local object verifies
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json["bad"] == 0


@pytest.mark.parametrize("lie", [*LIES, "dotdot", "through-a-link"])
def test_verify_remote_reports_a_store_that_lies(gaia_cli, pm, project, host, lie):
    """No consumer can use such an object: verify says so, as it does of a local one."""
    remote = publish_and_wipe(gaia_cli, pm, project)
    if lie in LIES:
        _lying_object(project, remote, lie)
    else:
        entries, verbatim = _hostile_entries(host)[lie]
        replace_tree(project, remote, entries, [b"a", b"x"], sort=not verbatim)
    report = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json", code=1).json
    assert [o["state"] for o in report["objects"] if o["where"] == "remote"] == ["bad"]


# -- status, list and verify tell the same truth ---------------------------------------------


def test_status_list_and_verify_name_the_signer_of_a_refused_remote_object(gaia_cli, pm, project, keys, host):
    remote = publish_unsigned_and_wipe(gaia_cli, pm, project, keys[1])
    replace_tree(project, remote, *trojan(), key=generate("stranger"))
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
    assert object_dirs(project.shared) == [] and project.objects()
    run(gaia_cli, pm, "run", project.build)  # a local hit is not uploaded either
    assert object_dirs(project.shared) == []

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
    project.write(backend=True, point=BACKEND, checkpoints=extra)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1  # restored from the backend
    before = sorted(p.relative_to(project.shared) for p in project.shared.rglob("*"))
    project.write(value="b", backend=True, point=BACKEND, checkpoints=extra)
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and "read-only" in result.output
    assert sorted(p.relative_to(project.shared) for p in project.shared.rglob("*")) == before
    new = [o for o in project.objects() if Project.manifest(o)["fingerprint_inputs"]["counter.value"] == "b"]
    assert "signature" not in Project.manifest(new[0])
    assert run(gaia_cli, pm, "checkpoints", "retry", project.build, code=2).output.count("read-only") == 1


# -- bounded, de-privileged restore ----------------------------------------------------------


def test_setuid_bits_are_restored_without(gaia_cli, pm, project, signer_env):
    """A trusted producer's tree with set-id files (format 4 has no owners to restore at all)."""
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    key = load_signing_key(signer_env[0], "test")
    replace_tree(project, remote, [d("counter_out"), f("counter_out/value.txt", b"a"),
                                   f("counter_out/su", b"#!/bin/sh\n", mode=0o4755),
                                   f("counter_out/mine", b"y", mode=0o2755)],
                 [b"a", b"#!/bin/sh\n", b"y"], key=key)
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    for name in ("su", "mine"):
        st = (project.out / name).lstat()
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), name
        assert stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert "without their setuid/setgid bits" in result.output and "counter_out/su" in result.output


def test_a_zstd_bomb_stops_at_the_unpacked_size(gaia_cli, pm, project, signer_env):
    """64 MiB of zeros in a pack of a few KB, behind a signed tree that says 1 MiB."""
    remote = publish_and_wipe(gaia_cli, pm, project, checkpoints=signed_config(signer_env[1]))
    key = load_signing_key(signer_env[0], "test")
    zeros = bytes(64 << 20)
    replace_tree(project, remote, [d("counter_out"), f("counter_out/zeros", zeros)], [zeros], key=key, size=1 << 20)
    assert sum(p.stat().st_size for p in (project.shared / "packs").glob("*.pack")) < 8 << 20
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2, result.output
    assert not (project.out / "zeros").exists()
    assert not [p for p in project.root.rglob("*") if p.is_file() and p.stat().st_size > 8 << 20]


def test_an_oversized_remote_manifest_stops_the_download_early(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    with open(remote / UNSIGNED, "ab") as out:
        out.truncate(1 << 30)  # a 1 GiB (sparse) manifest
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert "larger than" in result.output, result.output
    assert not [p for p in project.store.rglob("*") if p.is_file() and p.stat().st_size > 64 << 20]
    # the bad manifest was in the producer's slot: this run's good object replaced it
    assert (remote / UNSIGNED).stat().st_size < 1 << 20 and read_manifest(remote)["fingerprint"] == remote.name


def test_an_oversized_pack_moves_only_the_chunks_wanted(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    for pack in (project.shared / "packs").glob("*.pack"):
        with open(pack, "ab") as out:
            out.truncate(1 << 30)  # 1 GiB (sparse) of whatever behind the genuine frames
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1  # the chunks the manifest names are all there, and good
    assert not [p for p in project.store.rglob("*") if p.is_file() and p.stat().st_size > 64 << 20]
    assert read_manifest(remote)["fingerprint"] == remote.name


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
        p.write(backend=True, point=BACKEND)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    procs = [subprocess.Popen([sys.executable, str(script), "run", str(p.build)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env) for p in projects]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    [remote] = object_dirs(shared)
    assert slots(remote) == [UNSIGNED]
    entries = stored_entries(shared, read_manifest(remote))  # every chunk there, and matching its id
    assert {e.path for e in entries} >= {"counter_out/value.txt", "counter_out/sub/data.bin"}
    verified = run(gaia_cli, pm, "checkpoints", "verify", projects[1].build, "--remote", "--json").json
    assert verified["bad"] == 0 and any(o["where"] == "remote" and o["state"] == "ok" for o in verified["objects"])


def _a_content_chunk(project: Project, remote: Path) -> bytes:
    manifest = read_manifest(remote)
    [data] = [e for e in stored_entries(project.shared, manifest) if e.path == "counter_out/sub/data.bin"]
    return data.digest


def test_a_corrupt_remote_object_is_healed_by_the_next_run(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    corrupt_chunk(project.shared, _a_content_chunk(project, remote))
    result = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert "replacing it" in result.output, result.output
    [healed] = object_dirs(project.shared)
    stored_entries(project.shared, read_manifest(healed))  # every chunk of the new object is good
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2  # the healed object serves the next machine


def test_a_good_object_of_another_producer_is_never_replaced(gaia_cli, pm, project):
    remote = publish_and_wipe(gaia_cli, pm, project)
    before = (remote / UNSIGNED).read_bytes()
    project.write(backend=True, point=BACKEND + '\nuse_policy = "off"')
    result = run(gaia_cli, pm, "run", project.build)
    assert "already in dir:shared (from another producer; kept)" in result.output
    assert (remote / UNSIGNED).read_bytes() == before


def test_verify_finds_and_repairs_a_bad_remote_object_from_a_good_local_copy(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND)
    run(gaia_cli, pm, "run", project.build)
    [remote] = object_dirs(project.shared)
    chunk = _a_content_chunk(project, remote)
    corrupt_chunk(project.shared, chunk)
    bad = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", code=1)
    assert f"chunk {chunk.hex()[:16]}" in bad.output, bad.output
    run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--repair")
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json").json["bad"] == 0
    stored_entries(project.shared, read_manifest(remote))


def test_verify_discards_a_bad_local_object_and_fetches_it_again(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND)
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    corrupt_chunk(project.store, _a_content_chunk(project, object_dirs(project.shared)[0]))
    report = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--repair", "--json").json
    assert report["bad"] == 1 and report["repaired"] == 1
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json["bad"] == 0
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1  # the object fetched again restores


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


# -- a poisoned store can't deny service (one slot per signer) ---------------------------------


def _poison(project: Project, fp: str, slot: str) -> None:
    """A trojan under the producer's fingerprint, in ``slot``: unsigned, signed by a stranger,
    or claiming the producer's own slot (unsigned there: a bad signature)."""
    obj = project.shared / "points" / "base" / fp
    tree = craft_tree(project.shared, *trojan())
    manifest = manifest_for(fp, tree)
    if slot == "stranger":
        write_manifest(obj, sign(manifest, generate("stranger")))
    elif slot == "own":
        write_manifest(obj, manifest, OWN_SLOT)
    elif slot == "own-garbage":
        obj.mkdir(parents=True, exist_ok=True)
        (obj / OWN_SLOT).write_text("{not json")
    else:
        write_manifest(obj, manifest, UNSIGNED)


def _consumer(tmp_path: Path, project: Project, name: str, trusted: list[str]) -> Project:
    consumer = Project(tmp_path / name, shared=project.shared)
    keys = ", ".join(f'"{k}"' for k in trusted)
    consumer.write(backend=True, point='backend = "dir:shared"', checkpoints=f"trusted_public_keys = [{keys}]\n")
    return consumer


@pytest.mark.parametrize("slot", ["unsigned", "stranger"])
def test_a_hostile_object_beside_the_producers_never_blocks_it(gaia_cli, pm, project, signer_env, tmp_path, slot):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND, checkpoints=signed_config(signer_env[1]))
    fp = fingerprint_of(gaia_cli, pm, project)
    _poison(project, fp, slot)
    result = run(gaia_cli, pm, "run", project.build)  # the producer builds (nothing it trusts is there)
    assert project.builds() == 1 and "uploaded" in result.output, result.output
    remote = project.shared / "points" / "base" / fp
    assert OWN_SLOT in slots(remote) and len(slots(remote)) == 2  # beside the hostile one, not over it
    consumer = _consumer(tmp_path, project, "consumer", [signer_env[1]])
    st = status(gaia_cli, pm, consumer)
    assert st["reason"] == "remote_hit" and st["signer"] == "ci-main"
    run(gaia_cli, pm, "run", consumer.build)
    assert consumer.builds() == 0 and (consumer.out / "value.txt").read_text() == "a"
    assert not (consumer.out / ".config").exists()


def test_after_one_producer_run_a_poisoned_store_serves_every_consumer_that_trusts_it(
        gaia_cli, pm, project, signer_env, tmp_path):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND, checkpoints=signed_config(signer_env[1]))
    fp = fingerprint_of(gaia_cli, pm, project)
    for slot in ("unsigned", "stranger", "own"):
        _poison(project, fp, slot)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    remote = project.shared / "points" / "base" / fp
    assert read_manifest(remote, OWN_SLOT)["signature"]["key"] == "ci-main"  # the forgery in its slot replaced
    backup = generate("backup").public_line()  # a second trusted key that signed nothing here
    consumers = [_consumer(tmp_path, project, "c1", [signer_env[1]]),
                 _consumer(tmp_path, project, "c2", [backup, signer_env[1]])]
    for consumer in consumers:
        run(gaia_cli, pm, "run", consumer.build)
        assert consumer.builds() == 0, consumer.root
        assert (consumer.out / "value.txt").read_text() == "a" and not (consumer.out / ".config").exists()
    # nothing validly signed was deleted: the stranger's object is still there
    assert "manifest.key.stranger.json" in slots(remote)


def test_garbage_in_the_producers_slot_is_replaced_by_its_next_run(gaia_cli, pm, project, signer_env, tmp_path):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND, checkpoints=signed_config(signer_env[1]))
    fp = fingerprint_of(gaia_cli, pm, project)
    _poison(project, fp, "own-garbage")
    result = run(gaia_cli, pm, "run", project.build)
    assert "replacing it" in result.output, result.output
    consumer = _consumer(tmp_path, project, "consumer", [signer_env[1]])
    run(gaia_cli, pm, "run", consumer.build)
    assert consumer.builds() == 0


def _verify_json(gaia_cli, pm, project: Project, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """verify's report, whatever its exit status (untrusted objects are reported either way)."""
    result = gaia_cli("checkpoints", "verify", project.build, "--remote", "--json", *args, pm=pm)
    return json.loads(result.stdout)


def test_verify_repair_replaces_the_producers_bad_object_and_reports_untrusted_ones(gaia_cli, pm, project, signer_env):
    project.shared.mkdir()
    project.write(backend=True, point=BACKEND, checkpoints=signed_config(signer_env[1]))
    run(gaia_cli, pm, "run", project.build)
    [remote] = object_dirs(project.shared)
    good = read_manifest(remote, OWN_SLOT)
    write_manifest(remote, {**good, "created_at": "2000-01-01T00:00:00+00:00"})  # breaks the signature
    for slot in ("unsigned", "stranger"):
        _poison(project, remote.name, slot)
    report = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json", code=1).json
    states = {o["file"]: o["state"] for o in report["objects"] if o["where"] == "remote"}
    assert states == {OWN_SLOT: "bad", UNSIGNED: "untrusted", "manifest.key.stranger.json": "untrusted"}
    assert report["bad"] == 1 and report["untrusted"] == 2
    repaired = _verify_json(gaia_cli, pm, project, "--repair")
    [own] = [o for o in repaired["objects"] if o.get("file") == OWN_SLOT]
    assert own["state"] == "bad" and own["repaired"] and repaired["repaired"] == 1
    after = _verify_json(gaia_cli, pm, project)
    states = {o["file"]: o["state"] for o in after["objects"] if o["where"] == "remote"}
    assert states == {OWN_SLOT: "ok", UNSIGNED: "untrusted", "manifest.key.stranger.json": "untrusted"}
    assert after["bad"] == 0 and after["untrusted"] == 2
    assert read_manifest(remote, OWN_SLOT)["signature"] == good["signature"]  # the producer's own object again
