"""``[checkpoints]``: the seed's shape, validated strictly, with every problem reported."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from gaia_core.checkpoints.packs import DEFAULT_LEVEL, LEVELS
from gaia_core.checkpoints.units import parse_duration, parse_size
from gaia_core.config.fields import names_a_field
from gaia_core.config.loader import render_validation_error
from gaia_core.errors import ConfigError
from gaia_core.plugins import install_hint
from gaia_core.tasks import StrictModel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gaia_core.backends import Backend
    from gaia_core.build import Build
    from gaia_core.plugins import Provided

#: ``GAIA_CHECKPOINTS_READ_ONLY=1`` makes every run a read-only consumer (pull-request CI)
READ_ONLY_ENV = "GAIA_CHECKPOINTS_READ_ONLY"
#: ``GAIA_OFFLINE=1`` is ``gaia run --offline`` for every command: only the local store and
#: the stores that need no network (mounted ``dir`` tiers) are used; uploads are queued
OFFLINE_ENV = "GAIA_OFFLINE"
_FLAG_VALUES = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

UsePolicy = Literal["auto", "off", "required"]
UploadPolicy = Literal["off", "on_success", "always"]
TrustMode = Literal["verify", "permissive"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PointModel(StrictModel):
    id: str
    anchor_task: str
    use_policy: UsePolicy | None = None
    upload_policy: UploadPolicy | None = None
    fingerprint_from: list[str] | None = None
    #: globs of files in the input trees that the build never reads (``docs/**``, ``*.md``)
    fingerprint_exclude: list[str] = Field(default_factory=list)
    #: the seed's single store; ``backends`` names a chain of them
    backend: str | None = None
    #: the point's store tiers, fastest first (``["dir:runner", "http:office", "s3:cloud"]``)
    backends: list[str] | None = None
    trust_mode: TrustMode | None = None
    #: on a miss of the whole tree, reuse the anchor's units (Buildroot: its packages)
    units: bool = False

    @field_validator("fingerprint_exclude")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        from gaia_core.treedigest import exclude_problem

        problems = [p for p in map(exclude_problem, value) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return value


class CheckpointsModel(StrictModel):
    enabled: bool = False
    default_use_policy: UsePolicy = "auto"
    default_upload_policy: UploadPolicy = "off"
    trust_mode: TrustMode = "verify"
    queue_file: str | None = None
    #: ``NAME:<base64>`` lines of ``gaia checkpoints keygen``; objects from a backend must be
    #: signed by one of them (trust_mode = "verify")
    trusted_public_keys: list[str] = Field(default_factory=list)
    #: the variable holding the path of the secret key file that signs captures
    signing_key_file_env: str | None = None
    #: variables build commands may see although they hold a backend's credentials (or
    #: name the signing key): gaia withholds those from every command unless listed here
    pass_env: list[str] = Field(default_factory=list)
    #: restore from backends, never write to one, never sign (untrusted CI jobs)
    read_only: bool = False
    #: an object from a backend that no trusted key signed may unpack to at most this many
    #: times its compressed size (a bomb in a store anyone can write stops before the disk fills)
    unsigned_max_expansion: float = Field(200.0, ge=1)
    #: zstd's level for the chunks this host stores (captures, chunks taken from a tree):
    #: 1 compresses fastest, 19 smallest; readers need nothing to know it
    compression_level: int = Field(DEFAULT_LEVEL, ge=LEVELS.start, le=LEVELS.stop - 1)
    #: retention applied to the local store after each capture (and the defaults of gc)
    keep_last: int | None = Field(None, ge=1)
    max_age: str | None = None
    max_size: str | None = None
    #: publish each run's records to every writable tier of its points (``records/``), so
    #: that stats, the report and gc's last use see the whole team's runs
    share_records: bool = False
    #: the tiers of every point that names neither ``backend`` nor ``backends``
    default_backends: list[str] = Field(default_factory=list)
    #: how long a tier that timed out or refused is skipped by later runs on this host
    #: (``0s``: not remembered past the run)
    down_for: str = "10m"
    #: how long a run waits, before it exits, for the copies of hits into faster tiers
    backfill_timeout: str = "10m"

    @field_validator("signing_key_file_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @field_validator("pass_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [i for i, name in enumerate(value) if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"entries {bad} are not names of environment variables ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @field_validator("max_age", "down_for", "backfill_timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("max_size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value
    #: kind -> name -> table; each table is validated by its backend's config model
    backends: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    points: list[PointModel] = Field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Point:
    """A point with its effective policies (per-point value, else the default)."""

    id: str
    anchor_task: str
    use_policy: str
    upload_policy: str
    trust_mode: str
    fingerprint_from: tuple[str, ...] | None
    #: the store tiers, "kind:name" each, resolved, fastest first (empty: local store only)
    backends: tuple[str, ...] = ()
    fingerprint_exclude: tuple[str, ...] = ()
    #: a miss of the whole tree restores the stored units of the anchor (``units = true``)
    units: bool = False

    @property
    def slug(self) -> str:
        return self.anchor_task.replace(".", "-")


@dataclasses.dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    max_age: float | None = None  # seconds
    max_size: int | None = None  # bytes

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.keep_last, self.max_age, self.max_size))


@dataclasses.dataclass
class CheckpointSettings:
    enabled: bool
    trust_mode: str
    queue_file: str | None
    points: list[Point]
    backend_configs: dict[str, tuple[Provided, BaseModel]]  # "kind:name" -> (registered class, config)
    trusted_keys: dict[str, Ed25519PublicKey] = dataclasses.field(default_factory=dict)
    signing_key_file_env: str | None = None
    read_only: bool = False
    #: why read_only is on ("read_only = true in <file>" or the env var), for messages
    read_only_source: str = ""
    retention: Retention = dataclasses.field(default_factory=Retention)
    unsigned_max_expansion: float = 200.0
    compression_level: int = DEFAULT_LEVEL
    pass_env: tuple[str, ...] = ()
    share_records: bool = False
    #: seconds a tier found down stays skipped on this host (0: for the run only)
    down_for: float = 600.0
    #: seconds a run waits for its backfills before it exits
    backfill_timeout: float = 600.0
    #: why every command is offline (``GAIA_OFFLINE=1``), empty when it is not
    offline_source: str = ""

    def backend(self, ref: str) -> Backend:
        provided, config = self.backend_configs[ref]
        return provided.make(ref.partition(":")[2], config)

    def tier_read_only(self, ref: str) -> bool:
        """Whether the backend table of ``ref`` says ``read_only = true``."""
        return _read_only(self.backend_configs, ref)


#: a point's index, its fields that are valid on their own, and the keys that are not
CheckedPoint = tuple[int, "PointModel", set[str]]


def _model_or_problems(build: Build) -> tuple[CheckpointsModel | None, list[CheckedPoint], list[str]]:
    """Validate field by field and point by point, so that one bad value hides no other.

    Each point comes with its index and the keys whose values were dropped as invalid
    (empty for a valid point): an invalid point keeps the fields that are valid on their
    own, so that its other problems are found too."""
    raw = build.get("checkpoints")
    if raw is None:
        return CheckpointsModel(), [], []
    origin = build.origin("checkpoints")
    if not isinstance(raw, dict):
        return None, [], [f"{origin}: checkpoints: must be a table"]
    problems: list[str] = []
    good: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "points":
            continue
        try:
            CheckpointsModel.model_validate({key: value})
            good[key] = value
        except ValidationError as exc:
            problems += render_validation_error(exc, "checkpoints", CheckpointsModel, build.origins, build.path)
    points_raw = raw.get("points", [])
    points: list[CheckedPoint] = []
    if not isinstance(points_raw, list):
        problems.append(f"{origin}: checkpoints.points: must be an array of tables ([[checkpoints.points]])")
        points_raw = []
    for i, item in enumerate(points_raw):
        try:
            points.append((i, PointModel.model_validate(item), set()))
        except ValidationError as exc:
            problems += render_validation_error(exc, f"checkpoints.points[{i}]", PointModel, build.origins, build.path)
            if isinstance(item, dict):
                points.append((i, *_valid_fields(item)))
    model = CheckpointsModel.model_validate(good).model_copy(update={"points": [p for _, p, bad in points if not bad]})
    return model, points, problems


def _valid_fields(item: dict[str, Any]) -> tuple[PointModel, set[str]]:
    """The fields of a point table that are valid on their own (the others None), and
    the keys that are not (unknown or missing ones included)."""
    placeholder = {"id": "_", "anchor_task": "_"}
    kept: dict[str, Any] = dict.fromkeys(PointModel.model_fields)
    dropped = {"id", "anchor_task"} - set(item)
    for key, value in item.items():
        try:
            kept[key] = getattr(PointModel.model_validate({**placeholder, key: value}), key)
        except ValidationError:
            dropped.add(key)
    return PointModel.model_construct(**kept), dropped


def resolve_backend_ref(ref: str, configured: dict[str, dict[str, Any]]) -> tuple[str | None, str | None]:
    """``kind:name`` or a unique ``name`` -> (``kind:name``, None) or (None, problem)."""
    ref = ref.strip()
    if ":" in ref:
        kind, _, name = (p.strip() for p in ref.partition(":"))
        if name not in configured.get(kind, {}):
            have = ", ".join(f"{k}:{n}" for k, names in configured.items() for n in names) or "none"
            return None, f"backend '{ref}' is not configured (configured: {have})"
        return f"{kind}:{name}", None
    hits = [kind for kind, names in configured.items() if ref in names]
    if not hits:
        have = ", ".join(f"{k}:{n}" for k, names in configured.items() for n in names) or "none"
        return None, f"backend '{ref}' is not configured (configured: {have})"
    if len(hits) > 1:
        return None, f"backend '{ref}' is ambiguous ({', '.join(f'{k}:{ref}' for k in hits)}); write kind:name"
    return f"{hits[0]}:{ref}", None


def _settings_and_problems(build: Build) -> tuple[CheckpointSettings | None, list[str]]:
    model, checked_points, problems = _model_or_problems(build)
    if model is None:
        return None, problems
    origin = build.origin("checkpoints")
    registry = build.registry
    backend_configs: dict[str, tuple[Provided, BaseModel]] = {}
    for kind, named in model.backends.items():
        provided = registry.backends.get(kind)
        if provided is None:
            problems.append(
                f"{build.origin(f'checkpoints.backends.{kind}')}: checkpoints.backends.{kind}: "
                f"no installed plugin provides backend kind '{kind}'{install_hint('backend', kind)}"
            )
            continue
        for name, table in named.items():
            key = f"checkpoints.backends.{kind}.{name}"
            if not isinstance(table, dict):
                problems.append(f"{build.origin(key)}: {key}: must be a table")
                continue
            try:
                config = provided.cls.config_model.model_validate(table)
            except ValidationError as exc:
                problems += render_validation_error(exc, key, provided.cls.config_model, build.origins, build.path)
                continue
            backend_configs[f"{kind}:{name}"] = (provided, config)
            # a variable that is set must be well-formed (an unset one makes the backend
            # unavailable when it is used, so a job without the secrets still builds)
            found = provided.make(name, config).environment_problems()
            problems += [f"{build.origin(key)}: {problem}" for problem in found]

    default_tiers, default_problems = _resolve_chain(model.default_backends, model.backends, "default_backends")
    problems += [f"{build.origin('checkpoints.default_backends')}: checkpoints.{p}" for p in default_problems]
    points: list[Point] = []
    seen_ids: set[str] = set()
    seen_anchors: dict[str, str] = {}
    for i, p, dropped in checked_points:
        key = f"checkpoints.points[{i}]"
        if p.id is not None and not _ID.match(p.id):
            problems.append(
                f"{origin}: {key}.id: '{p.id}' is not a valid id (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit; at most 128 characters)"
            )
        elif p.id is not None and p.id in seen_ids:
            problems.append(f"{origin}: {key}.id: duplicate checkpoint id '{p.id}'")
        seen_ids.add(p.id)
        anchor = (p.anchor_task or "").strip()
        if p.anchor_task is None:
            pass  # missing or invalid: reported by the model
        elif anchor not in registry.anchors:
            known = ", ".join(registry.anchors) or "none"
            problems.append(
                f"{origin}: {key}.anchor_task: no installed plugin registers anchor '{anchor}' "
                f"(registered: {known}){install_hint('anchor', anchor) if anchor not in registry.anchors else ''}"
            )
        elif anchor in seen_anchors:
            problems.append(
                f"{origin}: {key}.anchor_task: anchor '{anchor}' already has point '{seen_anchors[anchor]}'; "
                "one point per anchor"
            )
        else:
            seen_anchors[anchor] = p.id
        if p.units and anchor in registry.anchors:
            problem = _units_problem(build, anchor)
            if problem:
                problems.append(f"{origin}: {key}.units: {problem}")
        if p.fingerprint_from is not None:
            if not p.fingerprint_from:
                problems.append(
                    f"{origin}: {key}.fingerprint_from: an empty list would make every build share one "
                    "checkpoint; remove the key to use the anchor's defaults"
                )
            for j, path in enumerate(p.fingerprint_from):
                problem = _fingerprint_path_problem(build, path.strip())
                if problem:
                    problems.append(f"{origin}: {key}.fingerprint_from[{j}]: {problem}")
        tiers, tier_problems = _point_tiers(p, model, default_tiers, backend_configs)
        problems += [f"{origin}: {key}.{problem}" for problem in tier_problems]
        upload = p.upload_policy or model.default_upload_policy
        if upload != "off" and not {"backend", "backends", "upload_policy"} & dropped and not tier_problems:
            source = "upload_policy" if p.upload_policy else "default_upload_policy"
            if not tiers:
                problems.append(
                    f"{origin}: {key}: upload_policy '{upload}' (from {source}) needs a backend; "
                    "set backend = \"kind:name\" (or backends = [...]) or upload_policy = \"off\""
                )
            elif all(_read_only(backend_configs, ref) for ref in tiers):
                problems.append(
                    f"{origin}: {key}: upload_policy '{upload}' (from {source}) needs a writable tier, and every "
                    f"backend of the point ({', '.join(tiers)}) is read_only; add one or set upload_policy = \"off\""
                )
        if dropped or tier_problems:
            continue
        points.append(Point(
            id=p.id,
            anchor_task=anchor,
            use_policy=p.use_policy or model.default_use_policy,
            upload_policy=upload,
            trust_mode=p.trust_mode or model.trust_mode,
            fingerprint_from=tuple(s.strip() for s in p.fingerprint_from) if p.fingerprint_from else None,
            backends=tuple(tiers),
            fingerprint_exclude=tuple(g.strip() for g in p.fingerprint_exclude),
            units=p.units,
        ))
    queue_file = model.queue_file.strip() if model.queue_file and model.queue_file.strip() else None
    if queue_file is not None:
        try:
            build.workspace.resolve(queue_file)
        except ConfigError as exc:
            problems.append(f"{build.origin('checkpoints.queue_file')}: checkpoints.queue_file: {exc}")
    trusted: dict[str, Ed25519PublicKey] = {}
    for j, line in enumerate(model.trusted_public_keys):
        where = f"{build.origin('checkpoints.trusted_public_keys')}: checkpoints.trusted_public_keys[{j}]"
        try:
            name, public = _parse_public_key(line, where)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if name in trusted:
            problems.append(f"{where}: key name '{name}' is listed twice")
        trusted[name] = public
    env_read_only = os.environ.get(READ_ONLY_ENV, "").strip()
    if env_read_only not in ("", "0", "1", "true", "false", "yes", "no"):
        problems.append(f"environment: {READ_ONLY_ENV}={env_read_only!r} must be 1 or 0")
    read_only_source = ""
    if env_read_only in ("1", "true", "yes"):
        read_only_source = f"{READ_ONLY_ENV}=1"
    elif model.read_only:
        read_only_source = f"read_only = true in {build.origin('checkpoints.read_only')}"
    env_offline = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if env_offline not in _FLAG_VALUES:
        problems.append(f"environment: {OFFLINE_ENV}={env_offline!r} must be 1 or 0")
    if model.enabled:
        problems += _signing_key_problems(model.signing_key_file_env, read_only=bool(read_only_source))
    settings = CheckpointSettings(
        enabled=model.enabled,
        trust_mode=model.trust_mode,
        queue_file=queue_file,
        points=points if model.enabled else [],
        backend_configs=backend_configs,
        trusted_keys=trusted,
        signing_key_file_env=model.signing_key_file_env,
        read_only=bool(read_only_source),
        read_only_source=read_only_source,
        unsigned_max_expansion=model.unsigned_max_expansion,
        compression_level=model.compression_level,
        retention=Retention(
            keep_last=model.keep_last,
            max_age=parse_duration(model.max_age) if model.max_age else None,
            max_size=parse_size(model.max_size) if model.max_size else None,
        ),
        pass_env=tuple(model.pass_env),
        share_records=model.share_records,
        down_for=parse_duration(model.down_for),
        backfill_timeout=parse_duration(model.backfill_timeout),
        offline_source=f"{OFFLINE_ENV}=1" if _FLAG_VALUES.get(env_offline) else "",
    )
    return settings, problems


def _resolve_chain(entries: list[str], configured: dict[str, dict[str, Any]], key: str) -> tuple[list[str], list[str]]:
    """The refs of a chain of tiers, in order, and its problems (``<key>[i]: ...``)."""
    refs: list[str] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        ref, problem = resolve_backend_ref(entry, configured)
        if problem:
            problems.append(f"{key}[{i}]: {problem}")
        elif ref in refs:
            problems.append(f"{key}[{i}]: backend '{ref}' is already in the chain (each tier once)")
        else:
            refs.append(ref)  # type: ignore[arg-type]
    return refs, problems


def _point_tiers(p: PointModel, model: CheckpointsModel, default_tiers: list[str],
                 backend_configs: dict[str, tuple[Provided, BaseModel]]) -> tuple[list[str], list[str]]:
    """A point's tiers: ``backends``, else the seed's single ``backend``, else the default
    chain; with the problems, each starting with the point's key that has it."""
    single = p.backend.strip() if p.backend is not None and p.backend.strip() else None
    if single is not None and p.backends is not None:
        return [], ["backends: set backend (one store) or backends (a chain of tiers), not both"]
    if p.backends is not None:
        return _resolve_chain(p.backends, model.backends, "backends")
    if single is not None:
        ref, problem = resolve_backend_ref(single, model.backends)
        return ([ref] if ref else []), ([f"backend: {problem}"] if problem else [])
    return list(default_tiers), []


def _read_only(backend_configs: dict[str, tuple[Provided, BaseModel]], ref: str) -> bool:
    """Whether the backend table of ``ref`` says ``read_only = true``."""
    found = backend_configs.get(ref)
    return bool(found and getattr(found[1], "read_only", False))


def _units_problem(build: Build, anchor_task: str) -> str | None:
    """Why the anchor cannot split this build into units (None: it can, or cannot tell yet)."""
    from gaia_core.errors import GaiaError
    from gaia_core.fingerprints import InputPending

    try:
        return build.registry.anchors[anchor_task].make(build).units_problem()
    except InputPending:
        return None
    except GaiaError as exc:
        return str(exc)


def _environment_problems(configs: dict[str, tuple[Provided, BaseModel]], used: set[str]) -> list[str]:
    """Malformed values in the variables the used backends read: config errors like any other."""
    problems = []
    for ref in sorted(used & set(configs)):
        provided, config = configs[ref]
        problems += [f"environment: {p}" for p in provided.make(ref.partition(":")[2], config).environment_problems()]
    return problems


def _signing_key_problems(env: str | None, *, read_only: bool) -> list[str]:
    """A signing key variable that is set must name a file (its content is judged at capture)."""
    value = os.environ.get(env, "").strip() if env and not read_only else ""
    if value and ("\0" in value or not Path(value).expanduser().is_file()):
        return [f"environment: checkpoints.signing_key_file_env (env var '{env}') does not name an existing file"]
    return []


def _parse_public_key(line: str, where: str):  # type: ignore[no-untyped-def]
    from gaia_core.checkpoints.signing import parse_public_key

    return parse_public_key(line, where)


def _fingerprint_path_problem(build: Build, path: str) -> str | None:
    """Why ``path`` names no config field (a typo would be hashed as null); None when it does."""
    from gaia_core.checkpoints.fingerprint import owning_table

    if not path or any(not part for part in path.split(".")):
        return f"'{path}' is not a dotted config path"
    table = owning_table(build, path)
    tables = ", ".join(sorted(build.registry.modules)) or "none"
    if table is None:
        return f"'{path}' names no config field (paths start with a module table: {tables})"
    model = build.registry.modules[table].cls.config_model
    rest = path[len(table) + 1 :].split(".") if path != table else []
    if not names_a_field(model, rest):
        return f"'{path}' names no field of [{table}]"
    return None


def secret_variables(settings: CheckpointSettings) -> set[str]:
    """Variables that hold the checkpoints' secrets: what the credential fields of every
    configured backend name, their libraries' own credential variables, and the signing
    key's variable, minus ``pass_env``. Build commands never see them."""
    names: set[str] = set()
    for provided, config in settings.backend_configs.values():
        cls = provided.cls
        names.update(cls.credential_variables)
        names.update(name for name in (getattr(config, f, None) for f in cls.credential_fields)
                     if isinstance(name, str) and name)
    if settings.signing_key_file_env:
        names.add(settings.signing_key_file_env)
    return names - set(settings.pass_env)


def validate_checkpoints(build: Build) -> list[str]:
    """Every problem in ``[checkpoints]``, each naming file and key; empty when valid."""
    return _settings_and_problems(build)[1]


def checkpoint_settings(build: Build) -> CheckpointSettings:
    """The validated settings (the loader has already refused invalid ones)."""
    cached = build.settings.get("checkpoints")
    if isinstance(cached, CheckpointSettings):
        return cached
    settings, problems = _settings_and_problems(build)
    if settings is None or problems:
        raise ConfigError(problems)
    build.settings["checkpoints"] = settings
    return settings
