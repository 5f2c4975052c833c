"""Shared setup of the remote suite: every test here is ``remote``, and the report says
which servers it ran against (the Docker services or the native ones, see
servers/server_set.py): in the header, in each failing test's report and at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# make ``contract`` and ``servers`` importable under --import-mode=importlib
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from servers import docker_engine_available
from servers.server_set import ENV, ServerSetError, selected

__all__ = ["docker_engine_available"]

#: descriptions of the servers this run's fixtures started (``docker: ...``, ``native: ...``)
_started: dict[str, str] = {}  # description -> the first fixture that handed it out


def _is_remote(item: pytest.Item) -> bool:
    return item.path.resolve().is_relative_to(HERE)


def _server_set_line() -> str:
    try:
        return selected().describe()
    except ServerSetError as error:
        return f"none: {error}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``remote`` before ``-m`` selects."""
    for item in items:
        if _is_remote(item):
            item.add_marker(pytest.mark.remote)


def pytest_report_header() -> str:
    return f"remote servers: {_server_set_line()}; choose with {ENV}=docker|native|auto"


def pytest_collection_finish(session: pytest.Session) -> None:
    """A server set that cannot run ends the session before any remote test, loudly."""
    if not any(_is_remote(item) for item in session.items):
        return
    try:
        selected()
    except ServerSetError as error:
        pytest.exit(f"remote suite: {error}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """Remember the servers a remote test got; name the server set in a failing test's report."""
    report = yield
    if _is_remote(item):
        if call.when == "setup":
            _remember_servers(getattr(item, "funcargs", {}))
        if report.failed:
            report.sections.append(("remote servers", _server_set_line()))
    return report


def _remember_servers(funcargs: dict[str, object]) -> None:
    # a server is a fixture value whose description says docker: or native:
    for name, value in funcargs.items():
        description = getattr(value, "description", None)
        if isinstance(description, str) and description.split(":", 1)[0] in ("docker", "native"):
            _started.setdefault(description, name)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not _started:
        return
    terminalreporter.section("remote servers")
    terminalreporter.write_line(f"server set: {_server_set_line()}")
    for description, fixture in _started.items():
        terminalreporter.write_line(f"{fixture}: {description}")
