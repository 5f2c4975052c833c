"""Config models of the ``[buildroot]``, ``[buildroot.rpi]``, ``[stage]`` and ``[program]`` tables.

Everything that can be checked from the config alone is checked here, so that a typo fails
``gaia plan`` instead of a build an hour later.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, RootModel, field_validator, model_validator

from gaia_core.tasks import StrictModel

UPSTREAM_REPO = "https://github.com/buildroot/buildroot.git"
PROGRAM_NAME = r"^[A-Za-z0-9_-]+$"

SymbolValue = bool | int | float | str


def check_image_path(value: str, what: str) -> str:
    """An absolute path inside the image, without ``..``: it must stay inside the stage root."""
    if not value.startswith("/"):
        raise ValueError(
            f"{what} must be an absolute path inside the image (e.g. /etc/motd), got '{value}'"
        )
    if not value.strip("/"):
        raise ValueError(f"{what} must name a file or directory below /, got '{value}'")
    if ".." in value.split("/"):
        raise ValueError(f"{what} must not contain '..', got '{value}'")
    return value


def check_mode(value: int | None) -> int | None:
    """A mode the image can have: gaia and Buildroot copy the stage as the building user,
    so the owner must be able to read it (every other bit, set-id ones too, reaches the image)."""
    if value is not None and not 0 <= value <= 0o7777:
        raise ValueError(
            f"mode must be between 0 and 0o7777 (write 0o644 or 420), got {value}"
        )
    if value is not None and not value & 0o400:
        raise ValueError(
            f"mode 0o{value:o} gives the owner no read permission: the stage is copied into the "
            f"image as the building user, who could not read it; add u+r (e.g. 0o{value | 0o400:o})"
        )
    return value


class StartingPointConfig(StrictModel):
    """``[buildroot.starting_point]``: collect an existing root filesystem instead of compiling."""

    enabled: bool = False
    rootfs_dir: str | None = None
    rootfs_tar: str | None = None
    apply_stage_overlay: bool = True
    source_label: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> StartingPointConfig:
        if self.enabled and (self.rootfs_dir is None) == (self.rootfs_tar is None):
            raise ValueError(
                "buildroot.starting_point.enabled = true needs exactly one of rootfs_dir or rootfs_tar"
            )
        return self


class BuildrootConfig(StrictModel):
    """``[buildroot]`` (its ``rpi`` sub-table belongs to :class:`RpiConfig`)."""

    enabled: bool = True
    repo: str = UPSTREAM_REPO
    version: str | None = None
    #: where ``buildroot.fetch`` clones ``repo``
    src_dir: str = "@build/buildroot/src"
    #: an existing Buildroot tree used as is (no git); replaces repo/src_dir
    source_dir: str | None = None
    br_output_dir: str = "@build/buildroot/output"
    defconfig: str | None = None
    external: list[str] = Field(default_factory=list)
    packages: dict[str, bool] = Field(default_factory=dict)
    package_versions: dict[str, str] = Field(default_factory=dict)
    symbols: dict[str, SymbolValue] = Field(default_factory=dict)
    #: BR2_JLEVEL; 0 or unset means the number of CPUs
    threads: Annotated[int, Field(ge=0)] | None = None
    download_dir: str = "@build/.cache/buildroot/dl"
    starting_point: StartingPointConfig = Field(default_factory=StartingPointConfig)

    @field_validator("defconfig")
    @classmethod
    def _defconfig_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or not value.endswith("_defconfig")):
            raise ValueError(
                f"must be the name of a file in configs/ ending in _defconfig, got '{value}'"
            )
        return value


class RpiConfig(StrictModel):
    """``[buildroot.rpi]``: Raspberry Pi board inputs that reach the image through the stage."""

    enabled: bool = True
    arch: Literal["aarch64", "arm64"] = "aarch64"
    board: str | None = None
    defconfig: str | None = None
    overlay: str | None = None
    config_file: str | None = None
    cmdline_file: str | None = None


class ImageFile(StrictModel):
    """A file placed into the image at the absolute path ``dst``, with an optional ``mode``."""

    dst: str
    mode: int | None = None

    @field_validator("dst")
    @classmethod
    def _dst_in_image(cls, value: str) -> str:
        return check_image_path(value, "dst")

    @field_validator("mode")
    @classmethod
    def _mode_range(cls, value: int | None) -> int | None:
        return check_mode(value)


class StageFile(ImageFile):
    """One ``[[stage.files]]`` entry: ``src`` (file or directory) or inline ``content``."""

    src: str | None = None
    content: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StageFile:
        if (self.src is None) == (self.content is None):
            raise ValueError(
                f"stage file '{self.dst}' needs exactly one of src or content"
            )
        return self


class StageConfig(StrictModel):
    files: list[StageFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_destinations(self) -> StageConfig:
        seen: set[str] = set()
        for entry in self.files:
            dst = posixpath.normpath(entry.dst)
            if dst in seen:
                raise ValueError(f"two stage files write '{dst}'")
            seen.add(dst)
        return self


class InstallItem(ImageFile):
    """Copy ``src`` (relative to the program's ``src_dir``) to ``dst`` in the image.

    A ``dst`` ending in ``/`` is a directory: the file keeps its name.
    """

    src: str


class ProgramConfig(StrictModel):
    """``[program.<name>]``: build a program in its source dir and install its artifacts."""

    src_dir: str
    #: argv list, or a string run by ``/bin/sh -c``; none for prebuilt artifacts
    build_command: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    install: list[InstallItem] = Field(default_factory=list)

    @field_validator("build_command")
    @classmethod
    def _non_empty(cls, value: list[str] | str | None) -> list[str] | str | None:
        if value is not None and not value:
            raise ValueError("must not be empty (leave it out for prebuilt artifacts)")
        return value


class ProgramsConfig(
    RootModel[dict[Annotated[str, Field(pattern=PROGRAM_NAME)], ProgramConfig]]
):
    """``[program]``: a map from program name to its table."""

    model_config = ConfigDict(strict=True, frozen=True)
