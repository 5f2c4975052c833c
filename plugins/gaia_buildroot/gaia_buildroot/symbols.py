"""Which ``BR2_*`` symbols of a ``.config`` a package's build depends on.

Buildroot rebuilds nothing when ``.config`` changes (its manual: "Understanding when a full
rebuild is necessary"); a package's key must cover every symbol its output can depend on.
Every symbol set in ``.config`` falls into one of these, first match wins:

- **environment**: where things are and how fast they are built (``BR2_JLEVEL``,
  ``BR2_DL_DIR``, ``BR2_CCACHE*``, mirrors, download tools, ``BR2_PER_PACKAGE_DIRECTORIES``);
  ``BR2_GLOBAL_PATCH_DIR`` and ``BR2_PACKAGE_OVERRIDE_FILE`` count by what they name, per
  package. Never an input.
- **target-wide**: read by the package infrastructure (``package/Makefile.in``,
  ``package/pkg-*.mk``, ``toolchain/*.mk``, ``arch/``), or of the toolchain, the
  architecture, the optimisation, libc and build options (``BR2_TOOLCHAIN_*``, ``BR2_x86_64``,
  ``BR2_OPTIMIZE_*``, ...): in every package's key, so a change rebuilds all.
- **a package's**: ``BR2_PACKAGE_<PKG>`` and ``BR2_PACKAGE_<PKG>_*`` (``BR2_PACKAGE_HOST_<PKG>*``
  for a host package), and every symbol the ``.mk`` files of its recipe dir name.
- **finalize only**: what Buildroot reads after the packages (``BR2_TARGET_GENERIC_*``,
  ``BR2_ROOTFS_OVERLAY``, ``BR2_ROOTFS_POST_*``, ``BR2_TARGET_ROOTFS_*``, device and users
  tables), unless a package's ``.mk`` names it: in no key; the build redoes those steps anyway.
- anything else, not a package symbol and named by no package's ``.mk``: target-wide, to be safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_TOKEN = re.compile(rb"BR2_[A-Za-z0-9_]+")
_SET = re.compile(r"^(BR2_[A-Za-z0-9_]+)=(.*)$")

ENVIRONMENT = frozenset({
    "BR2_JLEVEL", "BR2_DL_DIR", "BR2_HOST_DIR", "BR2_DEFCONFIG", "BR2_PER_PACKAGE_DIRECTORIES", "BR2_GLOBAL_PATCH_DIR",
    "BR2_PACKAGE_OVERRIDE_FILE", "BR2_BACKUP_SITE", "BR2_WGET", "BR2_CURL", "BR2_SVN", "BR2_BZR", "BR2_GIT",
    "BR2_CVS", "BR2_LOCALFILES", "BR2_SCP", "BR2_SFTP", "BR2_HG", "BR2_DOWNLOAD_FORCE_CHECK_HASHES",
    "BR2_CONFIG", "BR2_HAVE_DOT_CONFIG", "BR2_INSTRUMENTATION_SCRIPTS",
})
ENVIRONMENT_PREFIXES = ("BR2_CCACHE", "BR2_PRIMARY_SITE", "BR2_GRAPH_", "BR2_EXTERNAL")
ENVIRONMENT_SUFFIXES = ("_MIRROR",)
TARGET_WIDE_PREFIXES = (
    "BR2_TOOLCHAIN_", "BR2_ARCH", "BR2_GCC_", "BR2_BINUTILS_", "BR2_KERNEL_HEADERS_", "BR2_OPTIMIZE_",
    "BR2_ENABLE_", "BR2_STRIP_", "BR2_SHARED_", "BR2_STATIC_", "BR2_SSP_", "BR2_RELRO_", "BR2_FORTIFY_",
    "BR2_PIC_PIE", "BR2_REPRODUCIBLE", "BR2_TARGET_OPTIMIZATION", "BR2_TARGET_LDFLAGS", "BR2_USE_",
    "BR2_INSTALL_LIBSTDCPP", "BR2_TIME_BITS_64", "BR2_ROOTFS_MERGED_", "BR2_INIT_", "BR2_ENDIAN",
    "BR2_NORMALIZED_ARCH", "BR2_READELF_ARCH_NAME", "BR2_GNU_TARGET_SUFFIX", "BR2_BINFMT_", "BR2_ARM_",
    "BR2_MIPS_", "BR2_RISCV_", "BR2_X86_", "BR2_POWERPC_", "BR2_HOSTARCH", "BR2_HOST_GCC_AT_LEAST_",
)
FINALIZE_PREFIXES = (
    "BR2_TARGET_GENERIC_", "BR2_ROOTFS_OVERLAY", "BR2_ROOTFS_POST_", "BR2_TARGET_ROOTFS_", "BR2_ROOTFS_DEVICE_TABLE",
    "BR2_ROOTFS_STATIC_DEVICE_TABLE", "BR2_ROOTFS_USERS_TABLES",
)


def read_config(text: str) -> dict[str, str]:
    """``.config`` as symbol -> raw value (quoted strings stay quoted); unset ones are absent."""
    found = {}
    for line in text.splitlines():
        match = _SET.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def symbols_read(files: Iterable[Path]) -> set[str]:
    """Every ``BR2_*`` name in these files (make variables are read by name)."""
    names: set[str] = set()
    for path in files:
        try:
            names |= {m.decode() for m in _TOKEN.findall(path.read_bytes())}
        except OSError:
            continue
    return names


def is_environment(symbol: str) -> bool:
    return (symbol in ENVIRONMENT or symbol.startswith(ENVIRONMENT_PREFIXES)
            or symbol.endswith(ENVIRONMENT_SUFFIXES))


def is_target_wide(symbol: str, infra_reads: set[str], package_reads: set[str]) -> bool:
    if is_environment(symbol):
        return False
    if symbol in infra_reads or symbol.startswith(TARGET_WIDE_PREFIXES) or symbol[4:5].islower():
        return True  # BR2_x86_64, BR2_cortex_a53: the architecture and CPU choices
    if symbol.startswith("BR2_PACKAGE_"):
        return False
    if symbol.startswith(FINALIZE_PREFIXES) or symbol in package_reads:
        return False
    return True


def target_wide(config: Mapping[str, str], infra_reads: set[str], package_reads: set[str]) -> dict[str, str]:
    return {s: v for s, v in sorted(config.items()) if is_target_wide(s, infra_reads, package_reads)}


def package_prefix(name: str, kind: str) -> str:
    """``BR2_PACKAGE_BUSYBOX`` for busybox, ``BR2_PACKAGE_HOST_PATCHELF`` for host-patchelf."""
    raw = name.removeprefix("host-") if kind == "host" else name
    upper = re.sub(r"[^A-Za-z0-9]", "_", raw).upper()
    return f"BR2_PACKAGE_{'HOST_' if kind == 'host' else ''}{upper}"


def package_symbols(name: str, kind: str, config: Mapping[str, str], reads: set[str]) -> dict[str, str | None]:
    """The package's own symbols and those its ``.mk`` files name (None: not set)."""
    prefix = package_prefix(name, kind)
    own = {s for s in config if s == prefix or s.startswith(prefix + "_")}
    return {s: config.get(s) for s in sorted(own | reads) if not is_environment(s)}


__all__ = ["is_environment", "is_target_wide", "package_prefix", "package_symbols", "read_config", "symbols_read",
           "target_wide"]
