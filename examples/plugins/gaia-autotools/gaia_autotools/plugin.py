"""An [autotools] table: autoreconf, configure, make and make install, checkpointed. gaia copies
the sources (what git sees) into the padded output directory and builds there."""

from gaia_core import hookimpl
from gaia_core.command_build import CommandBuild, CommandConfig


class AutotoolsConfig(CommandConfig):  # source = "src": the tree, hashed file by file
    configure_args: list[str] = []
    prefix: str = "/usr"


class Autotools(CommandBuild):
    table = "autotools"
    config_model = AutotoolsConfig
    cwd = "{source}"  # the copy of the sources, {out}/source: an in-tree build
    commands = (
        ["sh", "-c", "test -e configure || autoreconf --install"],
        ["./configure", "--prefix={prefix}", "{configure_args}"],
        ["make", "-j{jobs}"],
        ["make", "install", "DESTDIR={out}/install"],
    )


@hookimpl
def gaia_register_modules():
    return [Autotools]


@hookimpl
def gaia_register_anchors():
    return [Autotools.anchor]


@hookimpl
def gaia_register_fingerprint_sources():
    return [Autotools.fingerprint_source]
