"""A workspace with a ``[counter]`` anchor and a checkpoint point, for end-to-end checkpoint tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w


class Project:
    def __init__(self, root: Path, shared: Path | None = None):
        self.root = root
        self.build = root / "build.toml"
        self.store = root / "build" / "checkpoints"
        self.out = root / "build" / "counter-out"
        self.shared = shared or root / "shared"
        root.mkdir(parents=True, exist_ok=True)

    def write(self, value: str = "a", extra: str = "", point: str = "", checkpoints: str = "",
              backend: bool = False, fail_consume: bool = False, **counter: Any) -> None:
        text = f'[counter]\nvalue = "{value}"\nextra = "{extra}"\nfail_consume = {str(fail_consume).lower()}\n'
        if counter:
            text += tomli_w.dumps(counter)
        text += f"\n[checkpoints]\nenabled = true\n{checkpoints}\n"
        if backend:
            text += f'[checkpoints.backends.dir.shared]\npath = "{self.shared}"\n'
        text += f'\n[[checkpoints.points]]\nid = "base"\nanchor_task = "counter.build"\n{point}\n'
        self.build.write_text(text)

    def builds(self) -> int:
        log = self.root / "builds.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def objects(self) -> list[Path]:
        base = self.store / "points" / "base"
        return sorted(p for p in base.iterdir()) if base.is_dir() else []

    def remote_objects(self) -> list[Path]:
        """The objects of point ``base`` in the shared store: fingerprint dirs holding a manifest."""
        base = self.shared / "points" / "base"
        return sorted(p for p in base.iterdir() if any(p.glob("manifest*.json"))) if base.is_dir() else []

    @staticmethod
    def manifest(obj: Path) -> dict[str, Any]:
        return json.loads((obj / "manifest.json").read_text())

    @staticmethod
    def write_manifest(obj: Path, manifest: dict[str, Any]) -> None:
        (obj / "manifest.json").write_text(json.dumps(manifest))


def run(gaia_cli, pm, *args: Any, code: int = 0):  # type: ignore[no-untyped-def]
    result = gaia_cli(*args, pm=pm)
    assert result.exit_code == code, result.output
    return result


def status(gaia_cli, pm, project: Project, *extra: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return run(gaia_cli, pm, "checkpoints", "status", project.build, "--json", *extra).json["points"][0]
