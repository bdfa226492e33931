"""Typed settings, one class per group with one environment prefix each (``STREAMML_REDIS_*``,
``STREAMML_STREAM_*``, ...). The only variables read without the prefix are the two the ecosystem
already uses: ``REDIS_URL`` and ``MLFLOW_TRACKING_URI``.

Nothing here is read at import time: commands call :meth:`Settings.load` in ``main()`` and pass the
result down. ``docs/configuration.md`` is generated from these classes (``streamml config --reference``):
every field's docstring is its documentation.

A variable renamed since the previous release is still read, with a :class:`FutureWarning` naming the
new one (:class:`RenamedVariables`); the new name wins when both are set.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamml import keys

DEFAULT_ROUTES: dict[str, str] = {
    "svm": "models:/SVC@champion",
    "knn": "models:/Knn_Classifier@champion",
    "lightgbm": "models:/LightGBM_Classifier@champion",
}

# Types skops may rebuild beyond scikit-learn's own, which skops trusts by default. The list lives in
# our configuration, not in the model artifact, so a tampered artifact cannot widen it.
DEFAULT_TRUSTED_TYPES: list[str] = [
    "collections.OrderedDict",
    "collections.defaultdict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "numpy.dtype",
]

REDIS_URL_FILE = "redis.url"
MLFLOW_URL_FILE = "mlflow.url"


class RenamedVariables(PydanticBaseSettingsSource):
    """Values from the variables a group was read from before its fields got their group's prefix.
    Below the current names in priority: a renamed variable counts only where the new one is unset.
    Each one found is announced once per process with a :class:`FutureWarning` naming its successor."""

    def __init__(self, settings_cls: type[BaseSettings], renamed: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.renamed = renamed

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # every value comes from __call__

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in os.environ.items()}
        found: dict[str, Any] = {}
        for old, field_name in self.renamed.items():
            if old not in environ:
                continue
            new = env_names(self.settings_cls, field_name)[0]
            warnings.warn(
                f"{old} is deprecated and will be ignored in the next release: set {new} instead",
                FutureWarning,
                stacklevel=2,
            )
            found[field_name] = _decoded(environ[old])
        return found


def _decoded(value: str) -> Any:
    """A JSON list or object as such (as the environment source reads them), anything else as text."""
    if value.lstrip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


class Group(BaseSettings):
    """A group of settings read from variables with the group's prefix."""

    RENAMED: ClassVar[Mapping[str, str]] = {}
    """Variable of an earlier release -> the field it now sets (read with a warning)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, RenamedVariables(settings_cls, cls.RENAMED))


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )


def env_names(group: type[BaseSettings], field_name: str) -> list[str]:
    """The variables that set a field, the preferred one first."""
    field = group.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{group.model_config.get('env_prefix', '')}{field_name}".upper()]


class GeneralSettings(Group):
    """Where streamml keeps its state, and what every process does."""

    model_config = _config("STREAMML_")

    state_dir: Path = Path(".streamml")
    """Redis data, MLflow database and artifacts, predictions CSV, logs."""
    metrics: bool = True
    """Prometheus metrics in every process (``false`` turns them off, to measure what they cost:
    ``streamml bench --no-metrics``)."""


class RedisSettings(Group):
    """How to reach Redis, or how to start the embedded server when no URL is given."""

    model_config = _config("STREAMML_REDIS_")

    url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "STREAMML_REDIS_URL"))
    """``redis://[:password@]host:port/db``. Unset: the URL `streamml up` wrote to the state dir, else
    ``redis://127.0.0.1:6379/0``."""
    port: int = 6390
    """Port the embedded server prefers; a free one is picked if it is taken."""
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    """AOF fsync policy of the embedded server (``everysec`` may lose the last second on a crash)."""
    password: SecretStr | None = None
    """Redis's password, kept out of the URL (and so out of a process's listing and of logs)."""
    password_file: Path | None = None
    """A file holding the password (a Compose or Kubernetes secret mounted as a file); wins over
    ``PASSWORD``."""
    cluster: bool = False
    """The URL names a node of a Redis (or Valkey) Cluster: every process uses redis-py's cluster
    client, which discovers the other nodes and follows slot moves and failovers."""
    seeds: list[str] = Field(default_factory=list)
    """More cluster nodes to start from (a JSON list of ``host:port``), besides the URL's: a process
    that starts while one is down discovers the cluster through another."""
    max_connections: int = 256
    """Connections one process may open to one cluster node. redis-py's cluster client refuses a
    command past it (it does not queue: the gateway answers 503), so it bounds what a gateway under
    load can ask of a node. A single Redis keeps redis-py's unbounded pool."""


class MlflowSettings(Group):
    """The MLflow tracking server and Model Registry, and which registered model serves each route."""

    model_config = _config("STREAMML_MLFLOW_")
    RENAMED = {"STREAMML_ROUTES": "routes"}

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "STREAMML_MLFLOW_TRACKING_URI"),
    )
    """Tracking and registry URI. Unset: the URL `streamml up` wrote to the state dir, else
    ``http://127.0.0.1:5001``."""
    host: str = "127.0.0.1"
    """Interface the embedded ``mlflow server`` binds to."""
    port: int = 5001
    """Port of the embedded ``mlflow server``."""
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    """Route name -> model URI (``models:/Name@alias`` or ``models:/Name/3``), as a JSON object."""
    alias_refresh_s: float = 30.0
    """How often an alias is re-resolved, so moving ``champion`` takes effect without a restart."""
    trusted_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TRUSTED_TYPES))
    """Non-scikit-learn types skops may load (JSON list); anything else in a model artifact is refused."""
    fast_path: bool = True
    """Run imputers, scalers and one-hot encoders with numpy instead of through scikit-learn (same
    labels, checked at load; docs/architecture.md#inference). ``false`` always calls the pipeline."""
    compile_trees: bool = True
    """On the fast path, compile a LightGBM classifier's trees to machine code (lleaves) in the
    background when the model loads, kept in the model cache, and use them once they give the booster's
    labels on generated rows; the booster serves meanwhile (docs/architecture.md#inference)."""
    allow_pickle: bool | list[str] = False
    """Also load models whose artifact runs code when it is loaded — pickle or cloudpickle, a custom
    ``python_function`` model — as ``mlflow models serve`` does: ``true`` for every route, or a JSON list
    of routes. Whoever can write to the registry can then run code in the workers (docs/security.md)."""
    requirements: Literal["warn", "refuse", "ignore"] = "warn"
    """When a model's logged requirements name versions other than the worker's: log which (``warn``),
    refuse to serve it (``refuse``), or say nothing (``ignore``)."""
    experiment: str = "streamml-demo-models"
    """Experiment `streamml train` logs its runs and holdout metrics to."""


class StreamSettings(Group):
    """Names, partitions, retention and acceptance durability of one pipeline's Redis streams."""

    model_config = _config("STREAMML_STREAM_")
    RENAMED = {
        "STREAMML_STREAM": "name",
        "STREAMML_GROUP": "group",
        "STREAMML_RESULTS_STREAM": "results",
        "STREAMML_RESULTS_MAXLEN": "results_maxlen",
        "STREAMML_RESULT_TTL_S": "result_ttl_s",
        "STREAMML_DURABILITY": "durability",
        "STREAMML_DURABILITY_TIMEOUT_MS": "durability_timeout_ms",
    }

    name: str = keys.DEFAULT_STREAM
    """Request stream the gateway publishes to (with partitions: the prefix of their streams); every
    key of the pipeline is derived from it."""
    group: str = keys.DEFAULT_GROUP
    """Consumer group of the workers."""
    results: str = keys.DEFAULT_RESULTS_STREAM
    """Capped stream of finished predictions, one entry per request."""
    results_maxlen: int = 100_000
    """Approximate cap of the results stream (``XADD MAXLEN ~``)."""
    result_ttl_s: int = 3600
    """How long a request's result can be fetched from ``GET /predictions/{id}``."""
    partitions: int | None = Field(default=None, ge=1, le=1024)
    """Request streams (``<name>:{tag}``, one consumer group each). Unset: 1 on a single Redis (the one
    stream ``<name>``), 12 on a cluster (12 divides over 1, 2, 3, 4 or 6 masters). Recorded in Redis at
    first use; changing it is a migration (docs/scaling.md)."""
    durability: Literal["memory", "fsync", "replica"] = "memory"
    """When the gateway answers 202: ``memory`` once Redis has the request (on disk within the
    server's ``appendfsync``), ``fsync`` once it is in the server's append-only file on disk (WAITAOF,
    or a server with ``appendfsync always``), ``replica`` once a replica has it too (WAIT)."""
    durability_timeout_ms: int = Field(default=2000, ge=1)
    """Longest wait for the fsync or the replica; past it the gateway answers 503 (the request may
    still be processed: retry with the same ``Idempotency-Key``)."""


class GatewaySettings(Group):
    """The HTTP gateway."""

    model_config = _config("STREAMML_GATEWAY_")
    RENAMED = {"STREAMML_API_KEYS": "api_keys", "STREAMML_API_KEYS_FILE": "api_keys_file"}

    host: str = "127.0.0.1"
    """Interface the gateway binds to; anything but loopback needs API keys (or ``insecure``)."""
    port: int = 8800
    """Port the gateway listens on."""
    predict_timeout_s: float = 10.0
    """How long ``POST /predict`` (and ``/invocations``, V2 infer) waits for the prediction before
    answering 504."""
    worker_seen_s: float = 15.0
    """``/ready`` needs a worker heartbeat at most this old."""
    default_route: str | None = None
    """The route ``POST /invocations`` (MLflow's scoring protocol) serves; the others are at
    ``/models/{route}/invocations``. Unset: ``/invocations`` answers 404 saying so."""
    max_backlog: int = 100_000
    """Back-pressure: above this many entries in the request stream (unread, pending, or acked but
    not yet trimmed) the gateway answers 429 instead of publishing."""
    backlog_check_s: float = 0.2
    """How long a backlog reading is reused before Redis is asked again."""
    retry_after_s: int = 1
    """``Retry-After`` sent with 429 and 503 answers."""
    idempotency_ttl_s: int = 86_400
    """How long an ``Idempotency-Key`` is remembered: a repeat within it gets the first response."""
    api_keys: str | None = None
    """API keys: a JSON list of ``{name, key | sha256, routes, read_only}``, or comma-separated keys
    (docs/security.md)."""
    api_keys_file: Path | None = None
    """A file with API keys in the same format (hashes recommended)."""
    insecure: bool = False
    """Allow binding to a non-loopback address without API keys."""
    max_body_bytes: int = 1 << 20
    """413 above this many bytes, before the body is read in full."""
    max_records: int = 1000
    """413 above this many records in one request."""
    max_fields: int = 64
    """422 when a record has more fields than this."""
    max_string_length: int = 256
    """422 when a string value or a feature name is longer than this."""
    max_depth: int = 8
    """422 when the JSON body nests deeper than this."""
    opentelemetry: bool = False
    """FastAPI's OpenTelemetry spans, metrics and logs (with the providers your environment sets up)."""
    rate_limit_per_s: int = 500
    """Requests per second per API key (or per client address without keys); 0 turns it off."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS (JSON list); empty: CORS off."""


class WorkerSettings(Group):
    """The stream workers."""

    model_config = _config("STREAMML_WORKER_")

    batch_entries: int = 256
    """Most request entries read by one ``XREADGROUP`` (each entry may hold many records)."""
    block_ms: int = 20
    """How long ``XREADGROUP`` blocks when the stream is empty."""
    consumer: str | None = None
    """Consumer name; unset: ``<host>-<pid>-<random>``, unique per process."""
    predictions_csv: Path | None = None
    """CSV sink; unset: ``<state dir>/predictions.csv``."""
    heartbeat_s: float = 5.0
    """How often a worker records that it is alive (read by ``/ready`` and ``status``)."""
    claim_idle_ms: int = 30_000
    """Entries pending longer than this (a dead or stuck consumer's, or a failed attempt) are
    claimed (XAUTOCLAIM) and processed again."""
    claim_interval_s: float = 5.0
    """How often a running worker looks for such entries."""
    max_deliveries: int = 5
    """After this many failed deliveries an entry goes to the dead-letter stream."""
    shutdown_grace_s: float = 20.0
    """On SIGTERM/SIGINT: time to finish and ack the in-flight batch before giving up."""
    trim_interval_s: float = 5.0
    """How often a worker trims entries that every group has acknowledged from the stream."""
    metrics_port: int | None = None
    """Serve this worker's Prometheus metrics on this port (``/metrics``); unset: not served."""
    metrics_host: str = "127.0.0.1"
    """Interface of the metrics port (0.0.0.0 in a container, for Prometheus to reach it)."""
    redis_give_up_s: float = 0.0
    """While Redis is unreachable the worker retries with back-off, logging each attempt and how
    long the outage has lasted; after this many seconds it exits with status 3 instead (for a
    supervisor that restarts it). 0: keep trying."""


class PredictionLogSettings(Group):
    """The prediction log: every prediction with its inputs, in Parquet files by route and hour
    (``streamml log query``)."""

    model_config = _config("STREAMML_PREDICTION_LOG_")

    enabled: bool = True
    """Workers write the log (beside the CSV and the Redis results)."""
    dir: Path | None = None
    """Where its files go; unset: ``<state dir>/prediction-log``. Workers that share it share the log."""
    rotate_mb: float = 64.0
    """A file is finished (and readable by any Parquet reader) once it holds this many MiB, ..."""
    rotate_s: float = 300.0
    """... or is this old, or its hour is over, or its worker stops (``streamml log query`` reads
    unfinished files too)."""
    retention_h: float = 168.0
    """Finished hours older than this are deleted; 0 keeps them all."""


class RolloutSettings(Group):
    """Changing a route's model safely: the challenger's aliases, shadow sampling, canary shares."""

    model_config = _config("STREAMML_ROLLOUT_")
    RENAMED = {
        "STREAMML_MLFLOW_CHALLENGER_ALIAS": "challenger_alias",
        "STREAMML_MLFLOW_PREVIOUS_ALIAS": "previous_alias",
        "STREAMML_SHADOW_SAMPLE": "shadow_sample",
        "STREAMML_WORKER_ROLLOUT_REFRESH_S": "refresh_s",
    }

    challenger_alias: str = "challenger"
    """The alias a new version is registered under to shadow the champion, answer a canary share, and
    be promoted (``streamml promote``)."""
    previous_alias: str = "previous"
    """The alias ``streamml promote`` leaves on the version it replaced (``streamml rollback`` goes
    back to it)."""
    shadow_sample: float | dict[str, float] = 1.0
    """Share of a route's requests its challenger also scores (shadow), e.g. ``0.1``, or per route as
    JSON (``{"lightgbm": 0.1}``, unlisted routes 1.0). Routes without a challenger cost nothing."""
    refresh_s: float = 1.0
    """How often a worker re-reads the canary shares from Redis (``streamml canary set``)."""


class FeedbackSettings(Group):
    """Ground truth fed back (``POST /feedback``, ``streamml feedback``) and accuracy per version."""

    model_config = _config("STREAMML_FEEDBACK_")

    enabled: bool = True
    """Workers keep what each request was answered, for its feedback (about 100 bytes a request plus
    its predictions, in Redis, for ``TTL_S``)."""
    ttl_s: int = 86_400
    """How long feedback for a request is taken after it was answered; later it is counted as expired."""
    window_s: int = 3_600
    """Accuracy is reported over this recent window as well as in total."""
    max_records: int = 10_000
    """Most feedback records in one request."""
    alpha: float = 0.05
    """Significance level of ``streamml promote --if-better`` (McNemar's exact test)."""


class DriftSettings(Group):
    """Drift of each route's recent records against its model version's training data."""

    model_config = _config("STREAMML_DRIFT_")

    enabled: bool = True
    """Workers keep windows of recent records; ``false``: no drift figures, no cost."""
    window_records: int = 5000
    """A worker's window holds at most this many recent records of a route ..."""
    window_s: float = 300.0
    """... and none older than this."""
    min_records: int = 1000
    """Fewer records in the window (all workers together): "insufficient data", not a score. Below
    about a thousand records the sampling noise of the scores nears the threshold
    (``benchmarks/drift_noise.py`` measures it)."""
    threshold: float = 0.1
    """A feature is drifted above this score (normalised Wasserstein for numbers, Jensen-Shannon
    distance for categories) ..."""
    null_rate_threshold: float = 0.1
    """... or when its null rate moved by more than this."""
    share: float = 0.5
    """A route is drifted when at least this share of its features are."""
    publish_s: float = 2.0
    """How often a worker writes its windows to Redis, where reports merge every worker's."""
    max_records_per_s: float = 1000.0
    """A worker adds at most this many records a second per route to its window, evenly spread over
    each batch: above that the window holds a sample of recent traffic, and its cost stays bounded
    (binning costs a few microseconds a record). 0: every record."""


GROUPS: dict[str, type[Group]] = {
    "general": GeneralSettings,
    "redis": RedisSettings,
    "mlflow": MlflowSettings,
    "stream": StreamSettings,
    "gateway": GatewaySettings,
    "worker": WorkerSettings,
    "prediction_log": PredictionLogSettings,
    "rollout": RolloutSettings,
    "drift": DriftSettings,
    "feedback": FeedbackSettings,
}
"""Every group, by the attribute of :class:`Settings` that holds it (docs/configuration.md's order)."""


class Settings(BaseModel):
    """All of streamml's settings, one object per group. Build with :meth:`load` where a program starts."""

    model_config = ConfigDict(validate_assignment=False)

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    prediction_log: PredictionLogSettings = Field(default_factory=PredictionLogSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    @classmethod
    def load(cls, state_dir: Path | None = None) -> Settings:
        """Read the environment; an explicit ``state_dir`` (a CLI flag) wins over it."""
        settings = cls()
        if state_dir is not None:
            settings.general.state_dir = state_dir
        return settings

    @property
    def state_dir(self) -> Path:
        return self.general.state_dir

    @property
    def metrics(self) -> bool:
        return self.general.metrics

    def redis_password(self) -> str | None:
        """The password from ``PASSWORD_FILE`` or ``PASSWORD``; None: the URL's, if any."""
        if self.redis.password_file is not None:
            return self.redis.password_file.read_text().strip()
        return self.redis.password.get_secret_value() if self.redis.password else None

    def redis_url(self) -> str:
        """The configured URL, else the embedded server's (written by `streamml up`)."""
        if self.redis.url:
            return self.redis.url
        recorded = self.state_dir / REDIS_URL_FILE
        if recorded.exists():
            return recorded.read_text().strip()
        return "redis://127.0.0.1:6379/0"

    def tracking_uri(self) -> str:
        """The configured tracking URI, else the embedded server's."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        recorded = self.state_dir / MLFLOW_URL_FILE
        if recorded.exists():
            return recorded.read_text().strip()
        return f"http://{self.mlflow.host}:{self.mlflow.port}"

    def predictions_csv(self) -> Path:
        return self.worker.predictions_csv or self.state_dir / "predictions.csv"

    def prediction_log_dir(self) -> Path:
        return self.prediction_log.dir or self.state_dir / "prediction-log"
