"""Offline: registration through the entry point, and no boto3 import until it is used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gaia_s3.backend import S3Backend

from gaia_core.plugins import Registry, get_plugin_manager


def test_the_s3_kind_is_registered_through_the_entry_point() -> None:
    registry = Registry(get_plugin_manager())
    assert registry.backends["s3"].cls is S3Backend
    assert registry.backends["s3"].plugin == "s3"


def test_listing_plugins_does_not_import_boto3() -> None:
    code = textwrap.dedent(
        """
        import sys
        from gaia_core.plugins import Registry, get_plugin_manager
        from gaia_s3.config import S3Config
        registry = Registry(get_plugin_manager())
        backend = registry.backends["s3"].cls("x", S3Config(bucket="b"), environ={})
        backend.describe()
        loaded = sorted(m for m in ("boto3", "botocore", "s3transfer") if m in sys.modules)
        print(",".join(loaded) or "none")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "none"
