"""Entry point of the ``gaia-s3`` distribution: registers the ``s3`` backend kind.

Kept import-light: boto3 loads on the first transfer, not when gaia lists plugins.
"""

from __future__ import annotations

from gaia_core import hookimpl


@hookimpl
def gaia_register_backends():
    from gaia_s3.backend import S3Backend

    return [S3Backend]
