"""The config file (TOML), validated with pydantic at the edge.

Lookup: ``--config PATH``, else ``$RFMSYNC_CONFIG``, else ``./rfmsync.toml``. Relative paths inside the file
(source files, the store) are relative to the config file's folder.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from connectors.blank import BlankIsUnset
from connectors.secrets import SecretUrl
from connectors.suggest import did_you_mean
from connectors.zones import default_zone
from segmentation import PRESETS as SEGMENTATION_PRESETS, SegmentationConfig

from .config_errors import format_validation_error
from .errors import ConfigError

if TYPE_CHECKING:
    from .settings import Settings

NEW_CONTACTS = ("skip", "transactional", "pending", "subscribed")


class LedgerConfig(BaseModel):
    """``[ledger]``: the operational ledger (pushed state, runs, failures, cursors, locks, webhook queue)."""

    model_config = ConfigDict(extra="forbid")
    url: SecretUrl | None = None  # default sqlite:///<config dir>/rfmsync.db; $RFMSYNC_LEDGER_URL wins


class StoreConfig(BaseModel):
    """``[store]``: the local DuckDB order store."""

    model_config = ConfigDict(extra="forbid")
    orders: str | None = None  # order store: default <config dir>/rfmsync.duckdb
    url: SecretUrl | None = None  # deprecated name of [ledger] url (still read, with a warning; [ledger] url wins)


class HttpOverrides(BaseModel):
    """``[destinations.http]``: any ``[http]`` key, for one destination."""

    model_config = ConfigDict(extra="forbid")
    timeout_seconds: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    max_wait_seconds: float | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, ge=1)


class HttpConfig(BaseModel):
    """``[http]``: timeouts and retry budgets of every ESP and CRM call (docs/sync.md, "HTTP settings").

    Precedence: ``RFMSYNC_HTTP_*`` environment variables > ``[destinations.http]`` > ``[http]`` > defaults."""

    model_config = ConfigDict(extra="forbid")
    timeout_seconds: float = Field(default=30.0, gt=0)  # connect and read timeout of one call
    max_attempts: int = Field(default=6, ge=1)  # tries of one retryable call (idempotent calls only)
    max_wait_seconds: float = Field(default=30.0, ge=0)  # cap on one back-off or Retry-After sleep
    concurrency: int = Field(default=5, ge=1)  # parallel calls, capped at the vendor's limit (Mailchimp: 10)

    def merged(self, *overrides: Any) -> "HttpConfig":
        """These settings with the non-None values of each override (a model or a mapping) on top."""
        data = self.model_dump()
        for o in overrides:
            items = o.model_dump() if isinstance(o, BaseModel) else dict(o or {})
            data.update({k: v for k, v in items.items() if v is not None})
        try:
            return HttpConfig(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, None, prefix="http")) from None

    def retry_policy(self, sleep: Any = None):
        """The :class:`connectors.retry.RetryPolicy` these settings describe (``sleep`` injectable); its calls
        and waits are told to the progress display (:mod:`sync.progress`)."""
        from connectors.retry import RetryPolicy

        from . import progress

        budget = self.max_attempts * (self.timeout_seconds + self.max_wait_seconds)
        extra = {"sleep": sleep} if sleep is not None else {}
        return RetryPolicy(attempts=self.max_attempts, max_wait=self.max_wait_seconds, timeout=self.timeout_seconds,
                           deadline=max(120.0, budget), on_attempt=progress.api_call, on_wait=progress.retry_wait,
                           **extra)


def http_settings(base: HttpConfig, overrides: HttpOverrides | None = None,
                  settings: Settings | None = None) -> HttpConfig:
    """Effective HTTP settings: ``base`` ([http]), then a destination's overrides, then ``RFMSYNC_HTTP_*``."""
    env = settings.http_overrides() if settings is not None else {}
    return base.merged(overrides, env)


class DestinationConfig(BaseModel):
    """``[[destinations]]``: one ESP audience/account. ``type`` and the vendor rules come from its spec in
    :mod:`sync.destinations.registry` (audience needed, default and refused ``new_contacts``, tags)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    type: str  # a registered destination type (sync.destinations.registry)
    audience: str | None = None  # Mailchimp audience (list) id
    # default: "transactional" (Mailchimp, SendGrid), "skip" (Unisender has no transactional status)
    new_contacts: Literal["skip", "transactional", "pending", "subscribed"] | None = None
    tag_prefix: str = ""  # Mailchimp: prefix on every managed tag
    list_prefix: str = ""  # SendGrid: prefix on every managed list
    segments: dict[str, str] = Field(default_factory=dict)  # segment → tag / list
    tags: dict[str, str] = Field(default_factory=dict)  # Unisender: segment → tag
    fields: dict[str, str] = Field(default_factory=dict)  # ESP field → rfmsync value
    # "FROM -> TO" (a segment or *) → tag/list given for transition_days after the move (sync.planning.transitions)
    transitions: dict[str, str] = Field(default_factory=dict)
    transition_days: int = Field(default=7, ge=1)
    # tags/lists rfmsync pushed that no mapping gives any more: taken off the contacts it put them on (the ledger's)
    retire_tags: list[str] = Field(default_factory=list)
    retire_fields: list[str] = Field(default_factory=list)  # fields no longer mapped: the values rfmsync wrote cleared
    renamed_from: str | None = None  # the name this destination had: it takes over what the ledger holds under it
    batch_size: int | None = Field(default=None, ge=1)  # override the API maximum (never above it)
    http: HttpOverrides | None = None  # [destinations.http]: this destination's [http] overrides
    _base_http: HttpConfig = PrivateAttr(default_factory=lambda: HttpConfig())

    def http_settings(self, settings: Any = None) -> HttpConfig:
        """This destination's effective [http] settings (see :class:`HttpConfig` for the precedence)."""
        return http_settings(self._base_http, self.http, settings)

    @property
    def spec(self):
        """This destination type's :class:`sync.destinations.base.DestinationSpec`."""
        from .destinations.registry import destination_spec

        return destination_spec(self.type)

    @field_validator("type")
    @classmethod
    def _registered_type(cls, value: str) -> str:
        from .destinations.registry import DESTINATIONS, type_choices

        if value not in DESTINATIONS:
            raise ValueError(f"Input should be {type_choices()}{did_you_mean(value, DESTINATIONS)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "DestinationConfig":
        from .destinations.registry import DESTINATIONS

        spec = DESTINATIONS[self.type]
        if spec.needs_audience and not self.audience:
            raise ValueError(f"destination {self.name!r}: type = \"{self.type}\" needs audience = \"<list id>\"")
        if self.new_contacts is None:
            self.new_contacts = spec.default_new_contacts
        refused = spec.refused_new_contacts.get(self.new_contacts)
        if refused:
            raise ValueError(f"destination {self.name!r}: {refused}")
        seen: dict[str, str] = {}
        for name in self.fields:
            first = seen.setdefault(name.casefold(), name)
            if first != name:
                raise ValueError(f"destination {self.name!r}: [destinations.fields] {first!r} and {name!r} differ only "
                                 f"in case, and Mailchimp and SendGrid take them for one field (written twice per "
                                 f"contact, with two values); give them distinct names")
        self.check_field_names()
        if self.tags and spec.tag_name is None:
            tagged = " or ".join(s.label for s in DESTINATIONS.values() if s.tag_name is not None)
            raise ValueError(f"destination {self.name!r}: [destinations.tags] is for {tagged} only")
        return self

    def check_field_names(self) -> None:
        """``[destinations.fields]``: a name the ESP refuses (:attr:`~sync.destinations.base.DestinationSpec.
        field_name_error`) or a value rfmsync does not have is the config's error (ValueError), before any plan or
        call: the one check of them (the planners' :func:`sync.planning.plan.check_fields` asks it too)."""
        from .planning.values import FIELD_VALUES

        spec = self.spec
        for name, value in self.fields.items():
            wrong = spec.field_name_error(name) if spec.field_name_error is not None else None
            if wrong:
                raise ValueError(f"destination {self.name!r}: [destinations.fields] {name!r}: {wrong}")
            if value not in FIELD_VALUES:
                raise ValueError(f"destination {self.name!r}: [destinations.fields] {name} = {value!r}: unknown value"
                                 f"{did_you_mean(value, FIELD_VALUES)}; the values are {', '.join(FIELD_VALUES)}")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    debounce_seconds: float = 5.0
    max_body_bytes: int = 1_000_000
    replay_window_seconds: int = 300
    workers: int = 1
    #: done webhook events superseded by a later state of their records are purged this many days after they
    #: finished (serve, hourly: sync.serve.retention); 0 keeps them all
    keep_done_events_days: int = Field(default=30, ge=0)


class GuardsConfig(BaseModel):
    """``[guards]``: checks made before the first ESP write of a run (see docs/safety.md)."""

    model_config = ConfigDict(extra="forbid")
    min_orders: int = Field(default=1, ge=0)  # fewer valid orders stops the run
    max_bad_rows_pct: float = Field(default=5.0, ge=0, le=100)  # a larger share of bad rows stops the run
    #: fewer bad rows never trip max_bad_rows_pct (an incremental pull's window of a few changed records)
    min_bad_rows: int = Field(default=5, ge=0)
    max_customer_drop_pct: float = Field(default=20.0, ge=0, le=100)  # vs the last successful run of a destination
    max_removal_pct: float = Field(default=10.0, ge=0, le=100)  # managed contacts losing their managed tags
    max_change_pct: float = Field(default=50.0, ge=0, le=100)  # managed contacts changed at all
    #: managed contacts losing their managed tags for a consent withdrawn in the source (new_contacts = "skip"):
    #: judged apart from the other removals and changes, as a share of the managed contacts; and the withdrawals
    #: and other removals together (against the larger of this and max_removal_pct)
    max_withdrawal_pct: float = Field(default=25.0, ge=0, le=100)
    #: fewer contacts than this never trip the three above, nor their sum (withdrawn + removed), unless contacts
    #: losing their tags are a majority of the managed contacts (one withdrawal alone never trips: the person
    #: asked); at most 100: the floor is for small shops, not a switch
    min_mass_change: int = Field(default=5, ge=0, le=100)
    stale_days: int = Field(default=30, ge=0)  # warn when the newest valid order is older than this


class ReportConfig(BaseModel):
    """``[report]``: the HTML page of ``rfmsync report`` (see docs/report.md)."""

    model_config = ConfigDict(extra="forbid")
    lang: Literal["en", "ru"] = "en"
    title: str | None = None  # default: the config folder's name
    currency_symbol: str = ""  # put before every amount, e.g. "$" or "₽"
    playbook: dict[str, str] = Field(default_factory=dict)  # segment → "what to do" line


class ScheduleConfig(BlankIsUnset):
    """``[schedule]`` (docs/serve.md); a blank value is unset (:class:`~connectors.blank.BlankIsUnset`), as
    everywhere: ``every = ""`` schedules nothing, ``retry_wait = ""`` is the default 10 minutes."""

    model_config = ConfigDict(extra="forbid")
    cron: str | None = None
    every: str | None = None  # e.g. "6h", "30m"
    retries: int = Field(default=3, ge=0)  # a run that failed the retry-later way (vendor down) runs again ...
    retry_wait: str = "10m"  # ... this long after, doubling each time, never past the next fire time


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: dict[str, Any] = Field(default_factory=lambda: {"type": "file"})
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    predict: dict[str, Any] = Field(default_factory=dict)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _known_preset(self) -> "Config":
        preset = self.segmentation.preset
        if preset not in SEGMENTATION_PRESETS:
            raise ValueError(f"[segmentation] preset: unknown preset {preset!r}"
                             f"{did_you_mean(preset, SEGMENTATION_PRESETS)}; choose one of "
                             f"{', '.join(SEGMENTATION_PRESETS)}")
        return self

    @model_validator(mode="after")
    def _known_segments(self) -> "Config":
        """The segment rules hold (:func:`segmentation.engine.configured_rules`: at load, so ``check`` says it),
        and every segment a destination maps (``segments``, ``tags``, ``transitions``) is one the rules give and
        a customer can reach: a typo, or a preset's segment custom rules took over, would be an empty audience,
        and its managed tag would be taken off everyone who has it."""
        from segmentation.engine import unreachable_segments
        from segmentation.errors import RuleError
        from segmentation.rules import unreachable_message

        from .planning.transitions import check_segment_keys, check_transitions, segment_names

        try:
            names = segment_names(self)
            never = unreachable_segments(self.segmentation)
        except RuleError as e:  # not a ValueError: pydantic would let it out raw, without the file's name
            raise ValueError(f"[segmentation] {e}") from e
        for d in self.destinations:
            check_segment_keys(d, names)
            for table, mapping in (("segments", d.segments), ("tags", d.tags)):
                for segment in mapping:
                    if segment in never:
                        raise ValueError(f"destination {d.name!r}: [destinations.{table}] {segment!r}: "
                                         f"{unreachable_message(segment, never[segment])}")
            if d.transitions:
                check_transitions(d, names, [t for tags in d.spec.managed_tags(d).values() for t in tags])
        return self

    @model_validator(mode="after")
    def _valid_schedule(self) -> "Config":
        """``[schedule]`` is read by serve's own parser (:func:`sync.schedule_times.check_schedule`) at
        load, so ``check`` refuses what ``serve`` would, and ``serve`` refuses before it listens."""
        from .schedule_times import check_schedule

        try:
            check_schedule(self.schedule, self.timezone)
        except ConfigError as e:  # not a ValueError: pydantic would let it out raw, without the file's name
            raise ValueError(str(e)) from e
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        names = [d.name for d in self.destinations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"destination names must be unique: {', '.join(sorted(dup))}")
        from .config_checks import check_config

        check_config(self)  # two destinations managing one tag or field, a prefix ignored, a playbook typo, …
        for d in self.destinations:
            d._base_http = self.http
        return self

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def timezone(self) -> str:
        """``[source] timezone``, else the source's own default: the zone its naive times are read in
        (RetailCRM: Europe/Moscow), so days are counted where the times were read; UTC for the others."""
        if self.source.get("timezone"):
            return str(self.source["timezone"])
        return default_zone(str(self.source.get("type", "file")))

    def destination(self, name: str) -> DestinationConfig:
        for d in self.destinations:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.destinations) or "none configured"
        raise ConfigError(f"unknown destination {name!r} (known: {known})")

    def predict_config(self):
        from segmentation.predictive import PredictConfig

        try:
            return PredictConfig(**self.predict)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, self.path, prefix="predict")) from None


def find_config_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get("RFMSYNC_CONFIG", "").strip()  # blank (or spaces) is unset, as every setting
    if env:
        return Path(env)
    return Path("rfmsync.toml")


def load_config(path: str | os.PathLike | None = None) -> Config:
    p = find_config_path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found (use --config PATH, $RFMSYNC_CONFIG or ./rfmsync.toml; "
                          f"see examples/rfmsync.toml)")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    try:
        cfg = Config(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, p)) from None
    cfg.path = p.resolve()
    return cfg
