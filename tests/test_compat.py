"""The compatibility policy (docs/compatibility.md): plugins declare the gaia-core range they
support, and ``gaia plugins`` warns about one this core is outside of.

The plugins here are real distributions as importlib.metadata finds them: a package and
its ``.dist-info`` (METADATA with ``Requires-Dist``, entry_points.txt) in a directory put
on ``sys.path``, which is what ``pip install`` leaves in site-packages.
"""

from __future__ import annotations

import importlib.metadata
import textwrap
from pathlib import Path

import pytest

import gaia_core
from gaia_core.errors import PluginError
from gaia_core.plugins import compatible_range, core_requirement, core_satisfies, get_plugin_manager


def install_fake_dist(site: Path, name: str, requires: list[str], *, body: str = "") -> None:
    """``gaia-<name>`` 1.0 with entry point ``<name> = gaia_<name>.plugin`` in ``site``."""
    package = site / f"gaia_{name}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(body or textwrap.dedent("""
        from gaia_core import hookimpl

        @hookimpl
        def gaia_register_config_tables():
            return []
    """))
    info = site / f"gaia_{name}-1.0.dist-info"
    info.mkdir()
    metadata = ["Metadata-Version: 2.1", f"Name: gaia-{name}", "Version: 1.0"]
    metadata += [f"Requires-Dist: {line}" for line in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "entry_points.txt").write_text(f"[gaia]\n{name} = gaia_{name}.plugin\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_the_range_a_plugin_declares_is_the_minor_series_before_1_0_and_the_major_after():
    assert compatible_range("0.1.0") == ">=0.1,<0.2"
    assert compatible_range("0.4.7") == ">=0.4,<0.5"
    assert compatible_range("1.4.2") == ">=1.4,<2"
    assert compatible_range("2.0.0rc1") == ">=2.0,<3"
    assert core_satisfies(compatible_range(), gaia_core.__version__) is True


def test_the_core_requirement_is_read_from_requires_dist_lines():
    assert core_requirement(["gaia-core<0.2,>=0.1", "requests>=2"]) == ">=0.1,<0.2"
    assert core_requirement(["Gaia_Core (>=0.3)"]) == ">=0.3"
    assert core_requirement(["gaia-core"]) == ""
    assert core_requirement(['gaia-core<0.1; extra == "test"', "click"]) is None
    assert core_requirement(["requests"]) is None
    assert core_requirement(None) is None
    assert core_satisfies("", "9.9") is True
    assert core_satisfies(None) is None
    assert core_satisfies(">=0.2.0.dev0", "0.2.0.dev1") is True  # a development core is judged too


def test_gaia_plugins_warns_about_a_plugin_outside_its_declared_range(gaia_cli, site):
    install_fake_dist(site, "old", ["gaia-core<0.1"])
    install_fake_dist(site, "fine", [f"gaia-core{compatible_range()}"])
    install_fake_dist(site, "loose", ["requests"])
    assert {d.metadata["Name"] for d in importlib.metadata.distributions(path=[str(site)])} == {
        "gaia-old", "gaia-fine", "gaia-loose"}

    result = gaia_cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: plugin 'old' (gaia-old 1.0) requires gaia-core<0.1, but this is gaia-core "
        f"{gaia_core.__version__}: it may fail or misbehave; install a release of gaia-old that supports "
        f"gaia-core {gaia_core.__version__}, or a gaia-core in its range"
    ]
    rows = {row["name"]: row for row in result.json}
    assert (rows["old"]["requires_core"], rows["old"]["core_compatible"]) == ("<0.1", False)
    assert rows["fine"]["core_compatible"] is True
    assert (rows["loose"]["requires_core"], rows["loose"]["core_compatible"]) == (None, None)

    text = gaia_cli("plugins")
    assert "  requires: gaia-core<0.1 (not satisfied by this core)" in text.stdout
    assert f"  requires: gaia-core{rows['fine']['requires_core']}\n" in text.stdout
    assert "warning: plugin 'old'" in text.stderr


def test_a_plugin_that_fails_to_import_says_when_it_wants_another_core(site):
    install_fake_dist(site, "broken", ["gaia-core>=99"], body="from gaia_core import no_such_name\n")
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "plugin 'broken' from distribution 'gaia-broken' failed to import: ImportError" in message
    assert f"requires gaia-core>=99, but this is gaia-core {gaia_core.__version__}" in message


def test_every_installed_plugin_supports_this_core(gaia_cli):
    result = gaia_cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr
    assert result.json, "the test environment installs plugins (gaia-buildroot, gaia-toolchain, ...)"
    for row in result.json:
        assert row["core_compatible"] is True, row


DOC = (Path(__file__).resolve().parent.parent / "docs" / "compatibility.md").read_text()


def test_the_ranges_in_the_policy_are_what_compatible_range_gives():
    table = DOC.split("<!-- compatibility: ranges -->", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 3
    for version, requirement in rows:
        assert requirement.strip(" |`") == f"gaia-core{compatible_range(version.strip('| '))}"


def test_the_warning_in_the_policy_is_the_one_gaia_prints(monkeypatch):
    from gaia_core.plugins import PluginInfo, incompatibility

    monkeypatch.setattr(gaia_core, "__version__", "0.2.0")
    sample = DOC.split("<!-- compatibility: warning -->\n```text\n", 1)[1].split("\n```", 1)[0]
    info = PluginInfo("old", "gaia_old.plugin", "gaia-old", "1.0", requires_core="<0.1")
    assert sample == f"warning: {incompatibility(info)}"
