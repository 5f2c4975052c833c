"""The ``dir`` backend: the remote contract every backend honours, on a local directory,
plus its config checks. Offline: the "server" is a directory that can go away."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pydantic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from contract import BackendContract  # noqa: E402

from gaia_core.builtin.dir_backend import DirBackend, DirConfig  # noqa: E402
from gaia_core.errors import BackendError, BackendUnavailable  # noqa: E402
from gaia_core.retry import temporary_name  # noqa: E402

PATH_ENV = "GAIA_TEST_DIR_PATH"


class SharedDirectory:
    """The store's directory; ``stop()`` takes it away like an unmounted share."""

    def __init__(self, path: Path):
        self.path = path
        self.away = path.with_name(path.name + ".unmounted")
        path.mkdir(parents=True)

    def stop(self) -> None:
        self.path.rename(self.away)

    def start(self) -> None:
        if self.away.exists():
            self.away.rename(self.path)


@pytest.fixture
def server(tmp_path: Path):
    shared = SharedDirectory(tmp_path / f"shared-{uuid.uuid4().hex[:8]}")
    yield shared
    shared.start()


def make_backend(path: Path) -> DirBackend:
    return DirBackend("it", DirConfig(path_env=PATH_ENV), environ={PATH_ENV: str(path)})


@pytest.fixture
def backend(server: SharedDirectory) -> DirBackend:
    return make_backend(server.path)


@pytest.fixture
def backend_factory(server: SharedDirectory):
    return lambda: make_backend(server.path)


@pytest.fixture
def backend_config(server: SharedDirectory):
    return f'[checkpoints.backends.dir.it]\npath_env = "{PATH_ENV}"\n', {PATH_ENV: str(server.path)}


@pytest.fixture
def litter(server: SharedDirectory):
    def leave(key: str, age_s: float) -> None:
        directory, name = key.rsplit("/", 1)
        path = server.path / directory / temporary_name(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
        then = path.stat().st_mtime - age_s
        os.utime(path, (then, then))

    return leave


class TestDirContract(BackendContract):
    #: a shared directory has no credentials to get wrong (nor secrets to leak)
    test_wrong_credentials_fail_without_leaking_the_secret = None


# -- dir specifics ------------------------------------------------------------------------


def test_a_missing_directory_is_unavailable_not_empty(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "not-mounted")
    with pytest.raises(BackendUnavailable, match="not available"):
        backend.list_entries("base-os")


def test_publish_leaves_no_temporary_and_never_replaces(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    source = tmp_path / "m.json"
    source.write_text("{}")
    backend.publish("p/f/manifest.json", source)
    assert sorted(p.name for p in (tmp_path / "p" / "f").iterdir()) == ["manifest.json"]


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"path": ""}, "path"),
        ({"path": "   "}, "path"),
        ({"path": "/srv/\0cache"}, "path"),
        ({"path_env": "NOT A NAME"}, "path_env"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"stall_timeout": -1}, "stall_timeout"),
        ({"probe_timeout": 10_000}, "probe_timeout"),
        ({"pathh": "/x"}, "pathh"),
    ],
)
def test_malformed_literal_values_are_config_errors_naming_the_key(fields: dict, key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        DirConfig.model_validate(fields)
    assert [error["loc"] for error in info.value.errors()] == [(key,)]


@pytest.mark.parametrize("value", ["", "/srv/\0cache"])
def test_malformed_values_from_the_environment_name_the_variable(value: str) -> None:
    backend = DirBackend("it", DirConfig(path_env="SHARE"), environ={"SHARE": value})
    with pytest.raises(BackendError, match=r"checkpoints\.backends\.dir\.it\.path.*'SHARE'"):
        backend.exists("p/f/manifest.json")


def test_a_malformed_path_is_reported_by_the_loader_with_file_and_key(gaia_cli, gaia_pm, tmp_path: Path) -> None:
    build = tmp_path / "build.toml"
    build.write_text('[checkpoints]\nenabled = true\n[checkpoints.backends.dir.shared]\npath = ""\n')
    result = gaia_cli("checkpoints", "status", str(build), pm=gaia_pm)
    assert result.exit_code == 2, result.output
    assert f"{build}: checkpoints.backends.dir.shared.path:" in result.stderr
