"""Secrets stay with gaia (issue 18, item 4): build commands never see the variables that
hold the backends' credentials or name the signing key, an unset ``*_env`` variable
makes its backend unavailable (never another store), and a malformed one is a
configuration error in every command."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from checkpoint_plugin import CounterPlugin
from counter_project import Project, run

from gaia_core.plugins import get_plugin_manager

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"

#: variable -> value; each value is a secret a build script must not be able to read
SECRETS = {
    "CI_S3_KEY_ID": "AKIAGAIASECRET0001",
    "CI_S3_SECRET": "s3-secret-value-0002",
    "CI_S3_SESSION": "s3-session-token-0003",
    "CI_HTTP_TOKEN": "http-token-value-0004",
    "CI_SSH_PASSPHRASE": "ssh-passphrase-0005",
    "AWS_ACCESS_KEY_ID": "AKIAGAIASECRET0006",
    "AWS_SECRET_ACCESS_KEY": "aws-chain-secret-0007",
    "AWS_SESSION_TOKEN": "aws-chain-token-0008",
}
BACKENDS = """
[checkpoints.backends.s3.cloud]
bucket = "team-cache"
region = "eu-west-1"
aws_access_key_id_env = "CI_S3_KEY_ID"
aws_secret_access_key_env = "CI_S3_SECRET"
aws_session_token_env = "CI_S3_SESSION"

[checkpoints.backends.http.office]
base_url = "https://cache.example.invalid/gaia"
token_env = "CI_HTTP_TOKEN"

[checkpoints.backends.ssh.runner]
target = "gaia@runner.example.invalid:/srv/cache"
identity_passphrase_env = "CI_SSH_PASSPHRASE"
"""


def quickstart_printing_its_environment(dest: Path, checkpoints: str) -> tuple[Path, Path]:
    """The quickstart with a post-build script (run by make's target-finalize) that writes
    its environment to a file; the build file and that file."""
    shutil.copytree(QUICKSTART, dest, symlinks=True, ignore=shutil.ignore_patterns("build", "out"))
    dump = dest / "make-environment.txt"
    script = dest / "print-env.sh"
    script.write_text(f"#!/bin/sh\nenv > {dump}\n")
    script.chmod(0o755)
    build = dest / "build.toml"
    build.write_text(build.read_text().replace("[buildroot.symbols]\n",
                                               f'[buildroot.symbols]\nROOTFS_POST_BUILD_SCRIPT = "{script}"\n'))
    layer = dest / "layers" / "checkpoints.toml"
    layer.write_text(layer.read_text().replace("[checkpoints]\nenabled = true\n",
                                               f"[checkpoints]\nenabled = true\n{checkpoints}\n") + BACKENDS)
    return build, dump


def test_a_make_step_sees_none_of_the_backends_secrets(gaia_cli, tmp_path, monkeypatch):
    key_dir = tmp_path / "keys"
    signing = gaia_cli("checkpoints", "keygen", "ci", "--dir", key_dir)
    assert signing.exit_code == 0, signing.output
    build, dump = quickstart_printing_its_environment(tmp_path / "qs", 'signing_key_file_env = "CI_SIGNING_KEY"\n'
                                                      'pass_env = ["AWS_SESSION_TOKEN"]')
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CI_SIGNING_KEY", str(key_dir / "ci.secret"))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("AWS_PROFILE", "team")  # names a profile, no secret: kept
    monkeypatch.setenv("GAIA_CANARY_NOT_SECRET", "kept")

    result = gaia_cli("run", build)
    assert result.exit_code == 0, result.output
    assert "signed by ci" in result.output  # gaia itself read the variables it needs
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["GAIA_CANARY_NOT_SECRET"] == "kept" and seen["AWS_PROFILE"] == "team"
    withheld = {*SECRETS, "CI_SIGNING_KEY", "SSH_AUTH_SOCK"} - {"AWS_SESSION_TOKEN"}
    assert not withheld & set(seen), f"the build saw {sorted(withheld & set(seen))}"
    assert seen["AWS_SESSION_TOKEN"] == SECRETS["AWS_SESSION_TOKEN"]  # handed on with pass_env
    text = dump.read_text()
    for name in withheld & set(SECRETS):
        assert SECRETS[name] not in text, name
    assert str(key_dir / "ci.secret") not in text


def test_the_library_variables_are_withheld_only_where_the_backend_kind_is_configured(gaia_cli, tmp_path,
                                                                                     monkeypatch):
    build, dump = quickstart_printing_its_environment(tmp_path / "qs", "")
    build.parent.joinpath("layers", "checkpoints.toml").write_text(
        "[checkpoints]\nenabled = true\n[[checkpoints.points]]\nid = \"base-os\"\nanchor_task = \"buildroot.build\"\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-users-own")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    result = gaia_cli("run", build)
    assert result.exit_code == 0, result.output
    seen = dump.read_text()
    assert "AWS_SECRET_ACCESS_KEY=the-users-own" in seen and "SSH_AUTH_SOCK=" in seen


# -- an unset variable: the backend is unavailable, never another store -------------------


@pytest.fixture
def counter_pm():
    pm = get_plugin_manager(load_entrypoints=True)
    pm.register(CounterPlugin(), name="counter")
    return pm


def s3_project(project: Project, use_policy: str = "auto") -> None:
    project.write(
        point=f'backend = "s3:cloud"\nuse_policy = "{use_policy}"\nupload_policy = "on_success"',
        checkpoints='[checkpoints.backends.s3.cloud]\nbucket = "b"\nregion = "us-east-1"\n'
                    'endpoint_url_env = "CI_S3_ENDPOINT"\naws_access_key_id_env = "CI_S3_KEY_ID"\n'
                    'aws_secret_access_key_env = "CI_S3_SECRET"\n')


@pytest.fixture
def lookups(monkeypatch) -> list[object]:
    """Every host name this process resolves or connects to (the calls stay real)."""
    seen: list[object] = []
    real_resolve, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(host)
        return real_resolve(host, *args, **kwargs)

    def connect(sock, address):  # type: ignore[no-untyped-def]
        seen.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def test_a_fork_without_the_secrets_builds_under_auto_and_contacts_no_store(gaia_cli, counter_pm, project,
                                                                          monkeypatch, lookups):
    """Today an unset endpoint_url_env fell back to AWS's public endpoint, with the
    credentials: now the backend is unavailable, naming the variable, before any lookup."""
    monkeypatch.setenv("CI_S3_KEY_ID", SECRETS["CI_S3_KEY_ID"])
    monkeypatch.setenv("CI_S3_SECRET", SECRETS["CI_S3_SECRET"])
    monkeypatch.delenv("CI_S3_ENDPOINT", raising=False)
    s3_project(project)
    reason = "backend s3:cloud is unavailable: checkpoints.backends.s3.cloud.endpoint_url_env: env var " \
             "'CI_S3_ENDPOINT' is not set"
    built = run(gaia_cli, counter_pm, "run", project.build)
    assert reason in built.output and "building instead" in built.output
    assert project.builds() == 1
    status = run(gaia_cli, counter_pm, "checkpoints", "status", project.build, code=0)  # a local hit: no probe
    assert "pending_upload=true" in status.output
    pushed = run(gaia_cli, counter_pm, "checkpoints", "push", project.build, code=5)
    assert pushed.output.count(reason) == 1
    assert not [x for x in lookups if x not in ("localhost", "127.0.0.1") and not _loopback(x)], lookups
    assert SECRETS["CI_S3_SECRET"] not in built.output + pushed.output


def _loopback(address: object) -> bool:
    return isinstance(address, tuple) and str(address[0]).startswith("127.") or isinstance(address, str) and \
        address.startswith("/")


def test_a_required_point_fails_without_the_secrets(gaia_cli, counter_pm, project, monkeypatch):
    for name in ("CI_S3_KEY_ID", "CI_S3_SECRET", "CI_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    s3_project(project, use_policy="required")
    failed = run(gaia_cli, counter_pm, "run", project.build, code=1)
    assert "env var 'CI_S3_ENDPOINT' is not set" in failed.output
    assert project.builds() == 0


# -- a malformed variable: a configuration error in every command ---------------------------

COMMANDS = [["run"], ["plan"], ["resolve"], ["checkpoints", "status"], ["checkpoints", "list", "--remote"],
            ["checkpoints", "push"], ["checkpoints", "pull"], ["checkpoints", "retry"],
            ["checkpoints", "verify", "--remote"], ["checkpoints", "gc", "--remote"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_malformed_variable_is_a_config_error_naming_file_key_and_variable(gaia_cli, counter_pm, project,
                                                                           monkeypatch, command):
    monkeypatch.setenv("CI_S3_ENDPOINT", "http://user:pw-4711@[::1")
    monkeypatch.setenv("CI_S3_KEY_ID", SECRETS["CI_S3_KEY_ID"])
    monkeypatch.setenv("CI_S3_SECRET", SECRETS["CI_S3_SECRET"])
    s3_project(project)
    result = run(gaia_cli, counter_pm, *command, project.build, code=2)
    assert (f"{project.build}: checkpoints.backends.s3.cloud.endpoint_url_env (env var 'CI_S3_ENDPOINT') "
            "is not a valid URL") in result.output
    assert "pw-4711" not in result.output
    assert project.builds() == 0


# -- every problem of a table at once ----------------------------------------------------


def test_every_problem_of_a_point_and_a_backend_table_is_reported_at_once(gaia_cli, counter_pm, project):
    project.write(
        point='use_policy = "sometimes"\nbackend = "s3:nowhere"\nfingerprint_from = ["counter.nope"]\nbogus = 1',
        checkpoints='[checkpoints.backends.s3.cloud]\nregion = "eu west"\naws_access_key_id_env = "K"\n')
    result = run(gaia_cli, counter_pm, "checkpoints", "status", project.build, code=2)
    for key in ("checkpoints.points[0].use_policy", "checkpoints.points[0].bogus",
                "checkpoints.points[0].backend: backend 's3:nowhere' is not configured",
                "checkpoints.points[0].fingerprint_from[0]", "checkpoints.backends.s3.cloud.region",
                "checkpoints.backends.s3.cloud.bucket: no bucket",
                "checkpoints.backends.s3.cloud.aws_secret_access_key_env: aws_access_key_id_env is set without"):
        assert f"{project.build}: {key}" in result.output, key
