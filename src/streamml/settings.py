"""Typed settings, one object per external system, read from ``STREAMML_*`` environment variables.

Nothing here is read at import time: commands call :meth:`Settings.load` in ``main()`` and pass the
result down. The conventional ``REDIS_URL`` and ``MLFLOW_TRACKING_URI`` variables are honoured too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
DEFAULT_CLUSTER_PARTITIONS = 12
"""12 divides evenly over 1, 2, 3, 4 or 6 masters (``keys.partition_tag`` spreads the slots)."""
MLFLOW_URL_FILE = "mlflow.url"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", populate_by_name=True)


class RedisSettings(BaseSettings):
    """How to reach Redis, or how to start the embedded server when no URL is given."""

    model_config = _config("STREAMML_REDIS_")

    url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "STREAMML_REDIS_URL", "url")
    )
    """``redis://[:password@]host:port/db``. Unset: the URL `streamml up` wrote to the state dir."""
    port: int = 6390
    """Port the embedded server prefers; a free one is picked if it is taken."""
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    """AOF fsync policy of the embedded server (``everysec`` may lose the last second on a crash)."""
    cluster: bool = False
    """``REDIS_URL`` names a node of a Redis (or Valkey) Cluster: every process uses redis-py's cluster
    client, which discovers the other nodes and follows slot moves and failovers."""
    max_connections: int = 256
    """Connections one process may open to one cluster node. redis-py's cluster client refuses a
    command past it (it does not queue: the gateway answers 503), so it bounds what a gateway under
    load can ask of a node. A single Redis keeps redis-py's unbounded pool."""


class MlflowSettings(BaseSettings):
    """The MLflow tracking server and Model Registry, and which registered model serves each route."""

    model_config = _config("STREAMML_MLFLOW_")

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "STREAMML_MLFLOW_TRACKING_URI", "tracking_uri"),
    )
    """Unset: the URL `streamml up` wrote to the state dir, else http://127.0.0.1:5001."""
    host: str = "127.0.0.1"
    """Interface the embedded ``mlflow server`` binds to."""
    port: int = 5001
    """Port of the embedded ``mlflow server``."""
    routes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ROUTES),
        validation_alias=AliasChoices("STREAMML_ROUTES", "routes"),
    )
    """Route name -> model URI (``models:/Name@alias`` or ``models:/Name/3``), as JSON in the env."""
    alias_refresh_s: float = 30.0
    """How often an alias is re-resolved, so moving ``champion`` takes effect without a restart."""
    trusted_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TRUSTED_TYPES))
    """Non-scikit-learn types skops may load; anything else in a model artifact is refused."""
    fast_path: bool = True
    """Run imputers, scalers and one-hot encoders with numpy instead of through scikit-learn (same
    labels, checked at load; see streamml/fastpath.py). ``false`` always calls the pipeline."""
    challenger_alias: str = "challenger"
    """The alias a new version is registered under to be promoted (``streamml promote``)."""
    previous_alias: str = "previous"
    """The alias ``streamml promote`` leaves on the version it replaced (``streamml rollback`` goes
    back to it)."""
    experiment: str = "streamml-demo-models"
    """Experiment `streamml train` logs its runs and holdout metrics to."""


class StreamSettings(BaseSettings):
    """Names and retention of the Redis streams and keys of one pipeline."""

    model_config = _config("STREAMML_")

    stream: str = keys.DEFAULT_STREAM
    """Request stream the gateway publishes to."""
    group: str = keys.DEFAULT_GROUP
    """Consumer group of the workers."""
    results_stream: str = keys.DEFAULT_RESULTS_STREAM
    """Capped stream of finished predictions."""
    results_maxlen: int = 100_000
    """Approximate cap of the results stream (``XADD MAXLEN ~``)."""
    result_ttl_s: int = 3600
    """How long a request's result can be fetched from ``GET /predictions/{id}``."""
    stream_partitions: int | None = Field(default=None, ge=1, le=1024)
    """Request streams (``mlops_stream:{tag}``, one consumer group each). Unset: 1 on a single Redis
    (the one ``mlops_stream``, keys as ever), ``DEFAULT_CLUSTER_PARTITIONS`` on a cluster. Recorded in
    Redis at first use; changing it is a migration (docs/scaling.md)."""
    durability: Literal["memory", "fsync", "replica"] = "memory"
    """When the gateway answers 202: ``memory`` once Redis has the request (on disk within the
    server's ``appendfsync``), ``fsync`` once it is in the server's append-only file on disk (WAITAOF,
    or a server with ``appendfsync always``), ``replica`` once a replica has it too (WAIT)."""
    durability_timeout_ms: int = Field(default=2000, ge=1)
    """Longest wait for the fsync or the replica; past it the gateway answers 503 (the request may
    still be processed: retry with the same ``Idempotency-Key``)."""

    @property
    def partitions(self) -> int:
        return self.stream_partitions or 1


class GatewaySettings(BaseSettings):
    """The HTTP gateway."""

    model_config = _config("STREAMML_GATEWAY_")

    host: str = "127.0.0.1"
    port: int = 8800
    predict_timeout_s: float = 10.0
    """How long ``POST /predict`` waits for the prediction before answering 504."""
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
    api_keys: str | None = Field(default=None, validation_alias=AliasChoices("STREAMML_API_KEYS", "api_keys"))
    """API keys: JSON list of {name, key | sha256, routes, read_only}, or comma-separated keys."""
    api_keys_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("STREAMML_API_KEYS_FILE", "api_keys_file")
    )
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


class WorkerSettings(BaseSettings):
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
    rollout_refresh_s: float = 1.0
    """How often a worker re-reads the canary shares from Redis (``streamml canary set``)."""
    redis_give_up_s: float = 0.0
    """While Redis is unreachable the worker retries with back-off, logging each attempt and how
    long the outage has lasted; after this many seconds it exits with status 3 instead (for a
    supervisor that restarts it). 0: keep trying."""


class DriftSettings(BaseSettings):
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


class Settings(BaseSettings):
    """All of streamml's settings. Build with :meth:`load` where a program starts."""

    model_config = _config("STREAMML_")

    state_dir: Path = Path(".streamml")
    """Redis data, MLflow database and artifacts, predictions CSV."""
    metrics: bool = True
    """Prometheus metrics in every process (``STREAMML_METRICS=false`` turns them off, to measure
    what they cost: ``streamml bench --no-metrics``)."""
    shadow_sample: float | dict[str, float] = 1.0
    """Share of a route's requests its challenger also scores (shadow), e.g. ``0.1``, or per route as
    JSON (``{"lightgbm": 0.1}``, unlisted routes 1.0). Routes without a challenger cost nothing."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @model_validator(mode="after")
    def _cluster_partitions(self) -> Settings:
        """One stream lives in one slot, on one node: on a cluster, spread over several by default."""
        if self.streams.stream_partitions is None and self.redis.cluster:
            self.streams.stream_partitions = DEFAULT_CLUSTER_PARTITIONS
        return self

    @classmethod
    def load(cls, state_dir: Path | None = None) -> Settings:
        """Read the environment; an explicit ``state_dir`` (a CLI flag) wins over it."""
        settings = cls()
        if state_dir is not None:
            settings.state_dir = state_dir
        return settings

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
