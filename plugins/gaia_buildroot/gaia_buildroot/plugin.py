"""gaia-buildroot's hook implementations (entry point ``buildroot`` in group ``gaia``)."""

from __future__ import annotations

from gaia_core import hookimpl


@hookimpl
def gaia_register_modules():  # type: ignore[no-untyped-def]
    from gaia_buildroot.modules import MODULES

    return MODULES


@hookimpl
def gaia_register_anchors():  # type: ignore[no-untyped-def]
    from gaia_buildroot.anchor import BuildrootAnchor

    return [BuildrootAnchor]


@hookimpl
def gaia_register_fingerprint_sources():  # type: ignore[no-untyped-def]
    from gaia_buildroot.fingerprint_sources import SOURCES

    return SOURCES


@hookimpl
def gaia_validate_config(build):  # type: ignore[no-untyped-def]
    from gaia_buildroot.stage import mode_problems

    return mode_problems(build)
