"""Entry point of the ``gaia-http`` distribution.

Kept import-light: loading plugins for ``gaia --help`` must not import requests.
"""

from __future__ import annotations

from gaia_core import hookimpl


@hookimpl
def gaia_register_backends():
    from gaia_http.backend import HttpBackend

    return HttpBackend
