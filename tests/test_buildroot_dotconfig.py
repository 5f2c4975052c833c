"""The text-edit rules gaia applies to a Buildroot ``.config``."""

from __future__ import annotations

import pytest
from gaia_buildroot.dotconfig import (
    DotConfig,
    quote,
    requested_symbols,
    symbol_name,
    unrealized,
)


def test_symbol_names_are_upper_case_with_underscores_and_prefixed_once():
    assert symbol_name("foo-bar", "BR2_PACKAGE_") == "BR2_PACKAGE_FOO_BAR"
    assert symbol_name("python3.x", "BR2_PACKAGE_") == "BR2_PACKAGE_PYTHON3_X"
    assert (
        symbol_name("TARGET_GENERIC_HOSTNAME", "BR2_") == "BR2_TARGET_GENERIC_HOSTNAME"
    )
    assert symbol_name("BR2_JLEVEL", "BR2_") == "BR2_JLEVEL"


def test_set_replaces_the_first_line_in_place_and_drops_duplicates():
    config = DotConfig("A=1\nBR2_X=y\nB=2\n# BR2_X is not set\nC=3\n")
    config.set("BR2_X", '"v"')
    assert config.text() == 'A=1\nBR2_X="v"\nB=2\nC=3\n'


def test_set_replaces_a_not_set_line_in_place():
    config = DotConfig("A=1\n# BR2_X is not set\nB=2")
    config.set("BR2_X", "y")
    assert config.text() == "A=1\nBR2_X=y\nB=2\n"


def test_set_appends_an_absent_symbol_and_keeps_a_final_newline():
    config = DotConfig("A=1")
    config.set("BR2_NEW", "3")
    assert config.text() == "A=1\nBR2_NEW=3\n"


def test_set_does_not_touch_symbols_that_only_share_a_prefix():
    config = DotConfig('BR2_X_VERSION="1"\nBR2_X=y\n')
    config.set("BR2_X", "n")
    assert config.lines == ['BR2_X_VERSION="1"', "BR2_X=n"]


def test_unset_removes_every_line_and_appends_not_set():
    config = DotConfig("BR2_X=y\nA=1\n# BR2_X is not set\n")
    config.unset("BR2_X")
    assert config.text() == "A=1\n# BR2_X is not set\n"


def test_apply_renders_bools_numbers_and_quoted_strings():
    config = DotConfig()
    config.apply("BR2_ON", True)
    config.apply("BR2_OFF", False)
    config.apply("BR2_INT", 4)
    config.apply("BR2_FLOAT", 1.5)
    config.apply("BR2_STR", 'say "hi" \\o/')
    assert config.lines == [
        "BR2_ON=y",
        "# BR2_OFF is not set",
        "BR2_INT=4",
        "BR2_FLOAT=1.5",
        'BR2_STR="say \\"hi\\" \\\\o/"',
    ]


def test_apply_rejects_other_types():
    with pytest.raises(TypeError):
        DotConfig().apply("BR2_LIST", ["a"])  # type: ignore[arg-type]


def test_quote_escapes_backslash_before_quote():
    assert quote('a\\"b') == '"a\\\\\\"b"'


def test_get_reads_values_not_set_and_absent():
    config = DotConfig('BR2_A=y\n# BR2_B is not set\nBR2_C="x"\n')
    assert (
        config.get("BR2_A"),
        config.get("BR2_B"),
        config.get("BR2_C"),
        config.get("BR2_D"),
    ) == ("y", "n", '"x"', None)


def test_requested_symbols_maps_packages_versions_and_symbols_in_order():
    wanted = requested_symbols(
        {"foo-bar": True, "nano": False},
        {"foo-bar": "1.2"},
        {"jlevel": 3, "BR2_PACKAGE_NANO": True},
    )
    assert list(wanted.items()) == [
        ("BR2_PACKAGE_FOO_BAR", True),
        ("BR2_PACKAGE_NANO", True),  # symbols come last and win over packages
        ("BR2_PACKAGE_FOO_BAR_VERSION", "1.2"),
        ("BR2_JLEVEL", 3),
    ]


def test_unrealized_lists_requests_that_olddefconfig_dropped():
    after = DotConfig('BR2_A=y\n# BR2_B is not set\nBR2_V="2"\n')
    wanted = {"BR2_A": True, "BR2_B": True, "BR2_C": False, "BR2_V": "1", "BR2_W": "x"}
    assert unrealized(after, wanted) == ["BR2_B", "BR2_W"]
