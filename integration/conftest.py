"""Shared setup of the remote suite: every test here is ``remote``; Docker is optional."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# make ``contract`` and ``servers`` importable under --import-mode=importlib
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from servers import docker_engine_available

__all__ = ["docker_engine_available"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``remote`` before ``-m`` selects."""
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.remote)
