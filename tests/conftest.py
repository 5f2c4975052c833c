"""Fixtures shared by the end-to-end checkpoint tests (the counter anchor of checkpoint_plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoint_plugin import CounterPlugin
from counter_project import Project
from tree_store import Store

from gaia_core.plugins import get_plugin_manager


@pytest.fixture
def pm():
    """Built-ins plus the counter plugin (no installed plugins)."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(CounterPlugin(), name="counter")
    return pm


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A workspace whose ``build.toml`` has a counter module and a checkpoint point."""
    return Project(tmp_path / "ws", shared=tmp_path / "shared")


@pytest.fixture
def store(tmp_path: Path):
    """A local pack store (format 4) to capture trees into and restore them from."""
    store = Store(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture
def restore_helpers(monkeypatch) -> list:
    """The helper processes of each restore, kept for the test; a restore whose manifest
    lists 2 files or more starts them at once (a test tree holds a few)."""
    from gaia_core.checkpoints import smallfiles, treewrite

    made: list[smallfiles.HelperProcesses] = []

    class Recorded(smallfiles.HelperProcesses):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(treewrite, "HelperProcesses", Recorded)
    monkeypatch.setattr(treewrite, "PROCESS_AFTER", 2)
    return made
