"""Build file loading: imports, merge, --set, workspace, validation."""

from __future__ import annotations

import pytest

from gaia_core.config.loader import load_build, merge_build_file
from gaia_core.config.overrides import parse_override
from gaia_core.errors import ConfigError, ExitCode
from gaia_core.plugins import Registry


@pytest.fixture
def registry(gaia_demo_pm):
    return Registry(gaia_demo_pm)


def problems_of(excinfo) -> list[str]:
    return excinfo.value.problems


# -- imports and merge -------------------------------------------------------------------


def test_imports_deep_merge_later_wins_and_local_overrides(write_build, registry):
    write_build("configs/a.toml", '[build]\nversion = "a"\nfrom_a = true\ntags = ["x", "y"]\n')
    write_build("configs/b.toml", '[build]\nversion = "b"\ntags = ["z"]\n')
    path = write_build(
        "build.toml",
        """
        imports = ["configs/a.toml", "configs/b.toml"]
        [build]
        owner = "me"
        """,
    )
    build = load_build(path, registry=registry)
    assert build.doc["build"] == {"version": "b", "from_a": True, "tags": ["z"], "owner": "me"}
    assert "imports" not in build.doc
    assert build.origins["build.version"] == path.parent / "configs/b.toml"
    assert build.origins["build.from_a"] == path.parent / "configs/a.toml"
    assert build.origins["build.owner"] == path


def test_local_value_beats_import(write_build, registry):
    write_build("base.toml", '[build]\nversion = "base"\n')
    path = write_build("build.toml", 'imports = ["base.toml"]\n[build]\nversion = "local"\n')
    assert load_build(path, registry=registry).get("build.version") == "local"


def test_nested_imports_land_at_their_table_and_resolve_relative_to_importer(write_build, registry):
    # sub/mid.toml imports "leaf.toml" relative to sub/, not to the top-level file
    write_build("sub/leaf.toml", 'name = "leaf"\nlevel = 2\n')
    write_build("sub/mid.toml", 'imports = ["leaf.toml"]\nlevel = 1\n')
    path = write_build("build.toml", '[build.meta]\nimports = ["sub/mid.toml"]\n')
    build = load_build(path, registry=registry)
    assert build.get("build.meta") == {"name": "leaf", "level": 1}
    assert build.origins["build.meta.name"] == path.parent / "sub" / "leaf.toml"
    assert build.origins["build.meta.level"] == path.parent / "sub" / "mid.toml"


def test_arrays_of_tables_replace_not_concatenate(write_build, registry):
    write_build("base.toml", "[[build.items]]\nname = 'a'\n[[build.items]]\nname = 'b'\n")
    path = write_build("build.toml", "imports = ['base.toml']\n[[build.items]]\nname = 'c'\n")
    assert load_build(path, registry=registry).get("build.items") == [{"name": "c"}]


def test_same_file_imported_twice_from_branches_is_not_a_cycle(write_build, registry):
    write_build("common.toml", "shared = 1\n")
    write_build("a.toml", "imports = ['common.toml']\n")
    write_build("b.toml", "imports = ['common.toml']\n")
    path = write_build("build.toml", "[build]\nimports = ['a.toml', 'b.toml']\n")
    assert load_build(path, registry=registry).get("build.shared") == 1


def test_import_cycle_names_the_chain(write_build, registry):
    write_build("a.toml", "imports = ['b.toml']\n")
    write_build("b.toml", "imports = ['a.toml']\n")
    path = write_build("build.toml", "imports = ['a.toml']\n")
    with pytest.raises(ConfigError, match=r"import cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_build(path, registry=registry)


def test_missing_import_names_importer_and_file(write_build, registry):
    path = write_build("build.toml", "imports = ['nope.toml']\n")
    with pytest.raises(ConfigError, match=r"build\.toml: imports: .*nope\.toml: no such file"):
        load_build(path, registry=registry)


def test_unparsable_file_is_named(write_build, registry):
    write_build("broken.toml", "this is = = not toml\n")
    path = write_build("build.toml", "imports = ['broken.toml']\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_build(path, registry=registry)


def test_imports_must_be_strings(write_build, registry):
    path = write_build("build.toml", "imports = [1]\n")
    with pytest.raises(ConfigError, match="expected file paths"):
        load_build(path, registry=registry)


# -- --set -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("build.name=demo", "build.name", "demo"),
        ('build.version="2025.11"', "build.version", "2025.11"),
        ("build.version=2025.11", "build.version", 2025.11),
        ("build.jobs=8", "build.jobs", 8),
        ("build.fast=true", "build.fast", True),
        ('build.tags=["a", "b"]', "build.tags", ["a", "b"]),
        ("build.env={ A = 1 }", "build.env", {"A": 1}),
        ("build.path=/srv/x y", "build.path", "/srv/x y"),
        ("build.empty=", "build.empty", ""),
    ],
)
def test_parse_override_values(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["no-equals", "=value", "a..b=1", "a b=1", ".a=1"])
def test_malformed_override_is_a_usage_error(text):
    with pytest.raises(ConfigError) as excinfo:
        parse_override(text)
    assert excinfo.value.exit_code == ExitCode.USAGE_ERROR
    assert text in str(excinfo.value)


def test_set_overrides_file_values_and_records_origin(write_build, registry):
    path = write_build("build.toml", "[build]\nversion = 'file'\nkeep = 1\n")
    build = load_build(path, ["build.version=2", "build.extra.deep=true"], registry=registry)
    assert build.doc["build"] == {"version": 2, "keep": 1, "extra": {"deep": True}}
    assert str(build.origins["build.version"]) == "--set"
    assert str(build.origins["build.extra.deep"]) == "--set"
    assert build.origins["build.keep"] == path


def test_set_through_a_non_table_is_an_error(write_build, registry):
    path = write_build("build.toml", "[build]\nversion = 'x'\n")
    with pytest.raises(ConfigError, match="'build.version' is a str, not a table"):
        load_build(path, ["build.version.minor=1"], registry=registry)


def test_later_set_wins(write_build, registry):
    path = write_build("build.toml", "[build]\n")
    assert load_build(path, ["build.v=1", "build.v=2"], registry=registry).get("build.v") == 2


# -- workspace ---------------------------------------------------------------------------


def test_workspace_is_relative_to_the_build_file_not_the_cwd(write_build, registry, tmp_path, monkeypatch):
    path = write_build("project/build.toml", "[workspace]\nroot_dir = 'ws'\nbuild_dir = 'b'\n")
    monkeypatch.chdir(tmp_path)
    build = load_build(path, registry=registry)
    assert build.workspace.root == (tmp_path / "project" / "ws").absolute()
    assert build.workspace.build_dir == build.workspace.root / "b"
    assert build.run_dir == build.workspace.root / "out" / "build"


def test_workspace_problems_name_file_and_key(write_build, registry):
    path = write_build("ws.toml", "[workspace]\nbuild_dir = '../escape'\n")
    with pytest.raises(ConfigError, match=r"ws\.toml: workspace\.build_dir .*must not contain '\.\.'"):
        load_build(path, registry=registry)


# -- validation --------------------------------------------------------------------------


def test_all_problems_reported_at_once_naming_file_and_key(write_build, registry):
    write_build("tasks.toml", "[demo.tasks.a]\ncrash = 'yes'\nbogus = 1\n")
    path = write_build(
        "build.toml",
        """
        imports = ["tasks.toml"]
        [workspace]
        out_dir = 3
        [demo.tasks.b]
        after = "core.init"
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_build(path, registry=registry)
    problems = problems_of(excinfo)
    tasks_file = path.parent / "tasks.toml"
    assert f"{tasks_file}: demo.tasks.a.crash: Input should be a valid boolean" in problems
    assert any(p.startswith(f"{tasks_file}: demo.tasks.a.bogus: unknown key; allowed: after, cmd,") for p in problems)
    assert f"{path}: workspace.out_dir: Input should be a valid string" in problems
    assert f"{path}: demo.tasks.b.after: Input should be a valid list" in problems
    assert len(problems) == 4
    assert str(excinfo.value).startswith("4 configuration problems:")


def test_unknown_key_in_known_section(write_build, registry):
    path = write_build("build.toml", "[demo]\ntaks = {}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_build(path, registry=registry)
    assert problems_of(excinfo) == [f"{path}: demo.taks: unknown key; allowed: tasks"]


def test_unknown_top_level_table_lists_allowed(write_build, registry):
    path = write_build("build.toml", "[frontend]\nx = 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_build(path, registry=registry)
    (problem,) = problems_of(excinfo)
    assert problem.startswith(
        f"{path}: frontend: unknown top-level table; allowed: build, checkpoints, demo, imports, workspace"
    )


def test_known_plugin_table_without_plugin_names_distribution(write_build, gaia_core_pm):
    path = write_build("build.toml", "[buildroot]\nversion = '2025.11'\n")
    with pytest.raises(ConfigError) as excinfo:
        load_build(path, registry=Registry(gaia_core_pm))
    (problem,) = problems_of(excinfo)
    assert "buildroot: unknown top-level table; install the 'gaia-buildroot' distribution" in problem


def test_extends_gets_a_pointer_to_imports(write_build, registry):
    path = write_build("build.toml", "extends = 'base.toml'\n")
    with pytest.raises(ConfigError, match="use imports"):
        load_build(path, registry=registry)


def test_checkpoint_problems_are_included(write_build, registry, monkeypatch):
    import gaia_core.checkpoints.config as checkpoints_config

    monkeypatch.setattr(checkpoints_config, "validate_checkpoints", lambda build: ["cp.toml: checkpoints.x: bad"])
    path = write_build("build.toml", "[demo]\nbogus = 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_build(path, registry=registry)
    assert problems_of(excinfo)[-1] == "cp.toml: checkpoints.x: bad"
    assert len(problems_of(excinfo)) == 2


def test_settings_hold_validated_models_and_subtables_of_other_modules_are_excluded(write_build, gaia_demo_pm):
    from gaia_core import hookimpl
    from gaia_core.tasks import Module, StrictModel

    class ExtraSettings(StrictModel):
        flag: bool = False

    class ExtraModule(Module):
        table = "demo.extra"
        config_model = ExtraSettings

        def plan(self, build, settings):
            return []

    class ExtraPlugin:
        @hookimpl
        def gaia_register_modules(self):
            return ExtraModule

    gaia_demo_pm.register(ExtraPlugin(), name="extra")
    path = write_build("build.toml", "[demo.tasks.a]\n[demo.extra]\nflag = true\n")
    build = load_build(path, registry=Registry(gaia_demo_pm))
    assert build.settings["demo.extra"].flag is True
    assert list(build.settings["demo"].tasks) == ["a"]  # "extra" did not reach DemoSettings


def test_inactive_module_has_no_settings(write_build, registry):
    build = load_build(write_build("build.toml", "[build]\n"), registry=registry)
    assert build.settings == {}
    assert build.name == "build"


def test_merge_build_file_skips_validation(write_build):
    path = write_build("build.toml", "[whatever]\nx = 1\n")
    doc, origins = merge_build_file(path, ["whatever.y=2"])
    assert doc == {"whatever": {"x": 1, "y": 2}}
    assert origins["whatever.x"] == path
