"""Settings: read from the workspace's ``kiln.yaml`` and ``KILN_*`` environment variables.

A ``profile`` (``local`` or ``cluster``) fills in every URI and store type the user did not
set; each backend is picked by a short ``type:`` string, the way Feast picks its stores.
Environment variables override the file; nested keys use ``__`` (``KILN_MLFLOW__TRACKING_URI``).
"""

from __future__ import annotations

import contextvars
import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError as PydanticSettingsError

from kiln.errors import SettingsError

SETTINGS_FILE = "kiln.yaml"
ENV_PREFIX = "KILN_"
# KILN_* variables that are not settings keys but are read elsewhere.
NON_SETTINGS_ENV = {"KILN_WORKSPACE", "KILN_DEBUG", "KILN_CACHE", "KILN_SERVICE_CONTAINER", "KILN_STUDIO_TOKEN"}

Port = Annotated[int, Field(ge=1, le=65535)]
# The chart's capture collector (release `kiln` in namespace `kubeflow`, as README installs it).
DEFAULT_CAPTURE_URL = "http://kiln-capture.kubeflow.svc.cluster.local"
DEFAULT_PROMETHEUS_URL = "http://prometheus.istio-system.svc.cluster.local:9090"  # Istio's Prometheus add-on


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- MLflow -----------------------------------------------------------------------------
class MlflowSettings(Section):
    tracking_uri: str = Field(description="Where runs and registered models are kept.")
    artifact_root: str = Field(description="Where run artifacts go (a folder or s3://bucket/prefix).")


# --- Feature store (Feast) ----------------------------------------------------------------
class SqliteOnlineStore(Section):
    type: Literal["sqlite"] = "sqlite"
    path: str


class RedisOnlineStore(Section):
    type: Literal["redis"] = "redis"
    connection_string: str = Field(description="host:port[,db=N][,password=...] as Feast takes it.")


class FileRegistry(Section):
    type: Literal["file"] = "file"
    path: str


class SqlRegistry(Section):
    type: Literal["sql"] = "sql"
    path: str = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg2://user@host:5432/db.")


class FileOfflineStore(Section):
    type: Literal["file"] = "file"
    path: str = Field(description="A folder or s3:// prefix holding the parquet offline store.")
    endpoint_url: str | None = Field(None, description="S3-compatible API (MinIO, Ceph) of an s3:// path; None for AWS.")


class FeatureStoreSettings(Section):
    project: str = Field("kiln", pattern=r"^[a-z][a-z0-9_]*$")
    online_store: Annotated[SqliteOnlineStore | RedisOnlineStore, Field(discriminator="type")]
    registry: Annotated[FileRegistry | SqlRegistry, Field(discriminator="type")]
    offline_store: FileOfflineStore


# --- Artifacts and capture --------------------------------------------------------------
class LocalStore(Section):
    type: Literal["local"] = "local"
    path: str


class S3Store(Section):
    type: Literal["s3"] = "s3"
    uri: str = Field(pattern=r"^s3://.+", description="s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible API (MinIO, Ceph); None for AWS.")


Store = Annotated[LocalStore | S3Store, Field(discriminator="type")]


# --- Ray, serving, local services ---------------------------------------------------------
class RaySettings(Section):
    address: str = Field(description="'local' runs Ray in process; ray://host:10001 joins a cluster.")
    num_cpus: int | None = Field(None, ge=1)


class LocalServing(Section):
    type: Literal["local"] = "local"
    host: str = "127.0.0.1"
    base_port: Port = 8080


class KServeServing(Section):
    type: Literal["kserve"] = "kserve"
    namespace: str = Field("kiln", description="Where endpoints' InferenceServices and VirtualServices go.")
    ingress_host: str | None = None
    kubeconfig: str | None = Field(None, description="The cluster's kubeconfig; None: the pod's own credentials "
                                   "in a pod, else $KUBECONFIG or ~/.kube/config.")
    context: str | None = Field(None, description="The kubeconfig context; None: its current one.")
    artifacts_destination: str | None = Field(None, description="Where an MLflow server that proxies artifacts "
                                              "keeps them (its --artifacts-destination, s3://...): a version at "
                                              "mlflow-artifacts:/PATH is served from there.")
    capture_url: str = Field(DEFAULT_CAPTURE_URL,
                             description="The chart's capture collector, where KServe's payload logger posts.")
    controller_wait_seconds: float = Field(60.0, gt=0.0, description="How long `kiln endpoint update` waits for "
                                           "the endpoint's rollout controller to take a rollout up.")
    controller_image: str | None = Field(None, description="Kiln's image: `kiln endpoint deploy` also runs the "
                                         "endpoint's rollout controller (its Deployment, ServiceAccount and Role); "
                                         "None: the chart's controllers (rolloutController.endpoints).")
    prometheus: str = Field(DEFAULT_PROMETHEUS_URL,
                            description="Where a controller Kiln deploys reads the variants' metrics.")
    metrics: Literal["istio", "kiln"] = Field("istio", description="istio: the mesh's request metrics; kiln: the "
                                              "model servers' own, per pod labelled kiln.dev/variant.")
    controller_interval_seconds: float = Field(10.0, gt=0.0, description="Seconds between a controller's decisions.")
    tvm_target: Literal["x86_64", "aarch64"] = Field("x86_64", description="What the cluster's nodes run: a tvm "
                                                     "variant serves its version's bundle for this compile target.")
    tvm_cpu: str | None = Field(None, description="The LLVM CPU a tvm variant's bundle is compiled for (x86-64-v3, "
                                "neoverse-n1...); None: any bundle of tvm_target, a new one for kiln compile's "
                                "default (this machine's CPU for x86_64): set it when the nodes' CPUs are older.")


class ServiceSettings(Section):
    host: str = "127.0.0.1"
    port: Port


class ServicesSettings(Section):
    mlflow: ServiceSettings = ServiceSettings(port=5000)
    feature_server: ServiceSettings = ServiceSettings(port=6566)
    artifacts: ServiceSettings = ServiceSettings(port=6580)
    evidently: ServiceSettings = ServiceSettings(port=8000)
    studio: ServiceSettings = ServiceSettings(port=8070)


class StudioSettings(Section):
    """Kiln Studio, the web console `kiln up` serves: its pages are open on loopback; its actions (approve, promote,
    roll back, pause a rollout) need a bearer token."""

    token_env: str = Field("KILN_STUDIO_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$",
                           description="The environment variable holding the bearer token actions need; while it is "
                                       "unset when Studio starts, Studio refuses every action.")
    kfp_ui: str | None = Field(None, description="The KFP UI's URL (on a cluster), linked from pipeline runs.")
    mlflow_url: str | None = Field(None, description="Where a browser reaches MLflow's UI, linked from every page "
                                                     "(default: services.mlflow on this machine; none on a cluster).")
    evidently_url: str | None = Field(None, description="Where a browser reaches Evidently's UI (default: "
                                                        "services.evidently on this machine; none on a cluster).")


class AsyncInferenceSettings(Section):
    """Asynchronous endpoints (`mode: async`): the broker their requests queue on, and where requests, results and
    errors are kept."""

    broker_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", pattern=r"^amqps?://",
                            description="The AMQP 0-9-1 broker (RabbitMQ); on a cluster from a Secret through "
                                        "KILN_ASYNC_INFERENCE__BROKER_URL.")
    store: Store = Field(default_factory=lambda: LocalStore(path="async"),
                         description="A folder (relative: inside the workspace) or an s3:// prefix.")


BIAS_LIMIT_METRICS = ("DPPL", "AD", "RD", "DAR", "DRR")
# The held-out metrics a gate may use, per task, and those where a lower value is the better one.
TASK_METRICS = {
    "binary": ("auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "brier"),
    "multiclass": ("accuracy", "f1_macro", "f1_weighted", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece", "rmse", "mae", "mape"})


class TaskGate(Section):
    """The gate's quality check for one task: a held-out metric, its limit, and how far below the champion it may
    fall."""

    metric: str = Field(description="A held-out metric of the task (see TASK_METRICS).")
    limit: float = Field(description="The lowest value that passes (the highest, for a metric where lower is "
                                     "better: log_loss, brier, rmse, mae, mape).")
    max_drop: float = Field(ge=0.0, description="How much worse than the champion's (same rows) it may be.")


class GateSettings(Section):
    """What a challenger must show before it may become champion; checked on the held-out test rows."""

    min_auc: float = Field(0.70, ge=0.0, le=1.0, description="Binary task: lowest test AUC a model may have.")
    max_auc_drop: float = Field(0.01, ge=0.0, le=1.0, description="Binary task: how far below the champion's AUC "
                                                                  "(same rows) a challenger may fall.")
    multiclass: TaskGate = Field(default_factory=lambda: TaskGate(metric="f1_macro", limit=0.5, max_drop=0.02),
                                 description="Multiclass task: the metric (default macro F1), its limit and drop.")
    regression: TaskGate = Field(default_factory=lambda: TaskGate(metric="r2", limit=0.2, max_drop=0.02),
                                 description="Regression task: the metric (default R²), its limit and drop; R² "
                                             "does not depend on the label's scale, RMSE and MAE do.")
    max_abs_bias: dict[str, float] = Field(
        default_factory=lambda: {"DPPL": 0.20, "AD": 0.15},
        description="Largest absolute post-training bias value, per metric, over every value of every protected "
                    f"column; metrics: {', '.join(BIAS_LIMIT_METRICS)}.",
    )
    min_di: float | None = Field(None, gt=0.0, le=1.0,
                                 description="Disparate impact must lie in [min_di, 1/min_di] (0.8 is the "
                                             "four-fifths rule); None leaves DI ungated.")
    min_facet_rows: int = Field(30, ge=1, description="Facet groups with fewer test rows are reported, not gated.")

    @model_validator(mode="after")
    def _known_metrics(self) -> "GateSettings":
        unknown = sorted(set(self.max_abs_bias) - set(BIAS_LIMIT_METRICS))
        if unknown:
            raise ValueError(f"max_abs_bias: unknown metric(s) {', '.join(unknown)}; "
                             f"known: {', '.join(BIAS_LIMIT_METRICS)}")
        for task in ("multiclass", "regression"):
            metric = getattr(self, task).metric
            if metric not in TASK_METRICS[task]:
                raise ValueError(f"{task}.metric: '{metric}' is not a {task} metric; "
                                 f"choose one of {', '.join(TASK_METRICS[task])}")
        return self

    def for_task(self, kind: str) -> TaskGate:
        """The quality check of ``kind``'s task; binary's is min_auc and max_auc_drop."""
        if kind == "binary":
            return TaskGate(metric="auc", limit=self.min_auc, max_drop=self.max_auc_drop)
        gate: TaskGate = getattr(self, kind)
        return gate


QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
MULTICLASS_QUALITY_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss")
REGRESSION_QUALITY_METRICS = ("rmse", "mae", "r2", "mape")


class MonitoringSettings(Section):
    """What `kiln monitor run` counts as a violation, and where it sends alerts."""

    drift_threshold: float = Field(0.1, gt=0.0, description="A column drifts when its distance from the baseline "
                                   "(Wasserstein, normed, for numbers; Jensen-Shannon for categories) reaches this.")
    drift_sample_rows: int = Field(100_000, ge=1000, description="Drift is measured on a uniform sample of at most "
                                   "this many captured rows (the report says when it sampled).")
    missing_tolerance: float = Field(0.05, ge=0.0, le=1.0,
                                     description="How far a feature's missing share may rise above the baseline's.")
    out_of_range_tolerance: float = Field(0.01, ge=0.0, le=1.0,
                                          description="Share of values outside the baseline's range allowed.")
    quality_metrics: list[str] = Field(default_factory=lambda: ["roc_auc", "accuracy", "f1"],
                                       description="Binary models' quality metrics checked; any of QUALITY_METRICS.")
    multiclass_quality_metrics: list[str] = Field(
        default_factory=lambda: ["accuracy", "f1_macro"],
        description="Multiclass models' quality metrics checked; any of MULTICLASS_QUALITY_METRICS.")
    regression_quality_metrics: list[str] = Field(
        default_factory=lambda: ["r2", "rmse"],
        description="Regression models' quality metrics checked; any of REGRESSION_QUALITY_METRICS.")
    quality_tolerance: float = Field(0.05, ge=0.0, le=1.0,
                                     description="How far a score (AUC, accuracy, F1, R²) may fall below the "
                                                 "baseline's; an error (log-loss, RMSE, MAE, MAPE) may rise by this "
                                                 "share of the baseline's.")
    bias_metrics: list[str] = Field(default_factory=lambda: ["DPPL", "AD", "RD", "DAR", "DRR"],
                                    description="Post-training bias metrics checked; any of BIAS_LIMIT_METRICS.")
    bias_tolerance: float = Field(0.1, ge=0.0, description="How far a bias metric may move from the baseline's.")
    min_facet_rows: int = Field(30, ge=1, description="Facets with fewer labelled rows in a window are not judged.")
    ndcg_threshold: float = Field(0.9, ge=0.0, le=1.0, description="Lowest NDCG of the live SHAP ranking against "
                                  "the baseline's before attribution drift is a violation (SageMaker's default).")
    attribution_rows: int = Field(200, ge=20, description="Captured rows sampled for the live SHAP ranking.")
    min_rows: int = Field(50, ge=1, description="Fewer rows than this in a window: a monitor reports, not judges.")
    webhooks: list[str] = Field(default_factory=list, description="URLs a JSON alert is POSTed to on violations.")

    @model_validator(mode="after")
    def _known_metrics(self) -> "MonitoringSettings":
        for field, known in (("quality_metrics", QUALITY_METRICS),
                             ("multiclass_quality_metrics", MULTICLASS_QUALITY_METRICS),
                             ("regression_quality_metrics", REGRESSION_QUALITY_METRICS),
                             ("bias_metrics", BIAS_LIMIT_METRICS)):
            unknown = sorted(set(getattr(self, field)) - set(known))
            if unknown:
                raise ValueError(f"{field}: unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhooks: '{url}' is not an http(s) URL")
        return self

    def checked_quality(self, kind: str) -> list[str]:
        """The quality metrics checked for a model of task ``kind``."""
        checked: list[str] = {"binary": self.quality_metrics, "multiclass": self.multiclass_quality_metrics,
                              "regression": self.regression_quality_metrics}[kind]
        return checked


# --- Debugger (SageMaker Debugger's built-in rules) -----------------------------------------
RuleAction = Literal["stop", "alert", "off"]
RULE_ACTIONS: tuple[str, ...] = ("stop", "alert", "off")


class RuleSettings(Section):
    """What a rule does when it fires: stop the training (or trial) at that step, alert (record it and go on), or
    off (not evaluated)."""

    action: RuleAction = "alert"


class OverfitRule(RuleSettings):
    start_step: int = Field(1, ge=1, description="The first step a window may start at.")
    patience: int = Field(3, ge=1, le=1000, description="Steps in a row the validation loss must rise while the "
                                                        "training loss falls.")
    min_rise: float = Field(0.01, ge=0.0, le=10.0, description="Least rise of the validation loss over the window, "
                                                               "as a share of its value at the window's start.")


class OvertrainingRule(RuleSettings):
    action: RuleAction = "stop"
    patience_validation: int = Field(10, ge=1, le=1000, description="Steps without a new best validation loss.")
    delta: float = Field(0.001, ge=0.0, lt=1.0, description="A new best must be lower than the best so far by this "
                                                            "share of it.")


class LossNotDecreasingRule(RuleSettings):
    action: RuleAction = "stop"
    num_steps: int = Field(10, ge=1, le=1000, description="Steps over which the training loss must fall.")
    diff_percent: float = Field(0.1, ge=0.0, le=100.0, description="Least fall of the training loss over "
                                                                   "num_steps, in percent of its earlier value.")


class ClassImbalanceRule(RuleSettings):
    threshold: float = Field(0.05, gt=0.0, lt=1.0, description="Smallest share of the training rows a class may "
                                                               "have (classification; checked at the start).")


class VanishingGradientRule(RuleSettings):
    threshold: float = Field(1e-7, gt=0.0, le=1.0, description="Mean absolute gradient of a layer's weights below "
                                                               "which it no longer learns (MLP).")


class DeadReluRule(RuleSettings):
    threshold_layer: float = Field(0.5, gt=0.0, le=1.0, description="Share of a hidden layer's ReLUs that are zero "
                                                                    "on every sampled training row (MLP).")


class FeatureImportanceOverweightRule(RuleSettings):
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Share of the total gain the top nfeatures may hold "
                                                              "(trees).")
    nfeatures: int = Field(1, ge=1, le=1000, description="How many of the most important features are summed.")
    start_step: int = Field(3, ge=1, description="The first step it is checked at (early trees lean on one "
                                                 "feature as a rule).")


class TreeDepthRule(RuleSettings):
    threshold: float = Field(0.9, gt=0.0, le=1.0, description="Share of the inspected trees that reach the "
                                                              "configured max_depth (XGBoost) or num_leaves "
                                                              "(LightGBM).")
    min_trees: int = Field(5, ge=1, description="Fewer inspected trees than this: not judged (a look inspects the "
                                                "newest five rounds' trees).")


class DebuggerRules(Section):
    """Each built-in rule's action and parameters (SageMaker Debugger's rule names, in snake case)."""

    overfit: OverfitRule = OverfitRule()
    overtraining: OvertrainingRule = OvertrainingRule()
    loss_not_decreasing: LossNotDecreasingRule = LossNotDecreasingRule()
    class_imbalance: ClassImbalanceRule = ClassImbalanceRule()
    vanishing_gradient: VanishingGradientRule = VanishingGradientRule()
    dead_relu: DeadReluRule = DeadReluRule()
    feature_importance_overweight: FeatureImportanceOverweightRule = FeatureImportanceOverweightRule()
    tree_depth: TreeDepthRule = TreeDepthRule()


class DebuggerSettings(Section):
    """The Debugger: rules evaluated at every step of a built-in family's training or tuning trial, and a profiler."""

    enabled: bool = Field(True, description="Evaluate the rules and profile `kiln train` and tuning trials.")
    profiler_interval: float = Field(0.5, gt=0.0, le=60.0, description="Seconds between the profiler's samples of "
                                                                       "CPU and resident memory.")
    profile_trials: bool = Field(False, description="Profile tuning trials too (each trial's summary in its "
                                                    "metrics); rules are evaluated in trials either way.")
    sample_rows: int = Field(500, ge=50, le=1_000_000, description="Rows the losses are measured on each step: a "
                             "fixed sample of at most this many training and validation rows (the MLP's gradients and "
                             "dead ReLUs too); trees score every training row, from the engines' running scores, up to "
                             "twenty times this many, and validation rows up to a twentieth of the training rows. "
                             "Where the caller measured every validation row already (kiln train, tuning trials), "
                             "that loss is used.")
    model_every: int = Field(10, ge=1, le=1000, description="Steps between looks at a model's internals (a tree "
                                                           "model's gain and depth, a network's gradients), and at "
                                                           "the last step.")
    rules: DebuggerRules = DebuggerRules()


class Settings(BaseSettings):
    """Everything Kiln reads from kiln.yaml and KILN_* variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: Literal["local", "cluster"] = "local"
    workspace: Path = Field(description="The workspace folder (where kiln.yaml is); set by Kiln.")
    mlflow: MlflowSettings
    features: FeatureStoreSettings
    artifacts: Store
    capture: Store
    ray: RaySettings
    serving: Annotated[LocalServing | KServeServing, Field(discriminator="type")]
    services: ServicesSettings = ServicesSettings()
    gates: GateSettings = GateSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    debugger: DebuggerSettings = DebuggerSettings()
    studio: StudioSettings = StudioSettings()
    async_inference: AsyncInferenceSettings = AsyncInferenceSettings()

    @model_validator(mode="before")
    @classmethod
    def _fill_profile_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "local")
        if profile not in PROFILE_DEFAULTS:
            return data  # the Literal check names the bad value
        workspace = str(data.get("workspace") or _WORKSPACE.get() or ".")
        defaults = _render(PROFILE_DEFAULTS[profile], workspace)
        return _merge(defaults, data)

    @model_validator(mode="after")
    def _resolve_relative_paths(self) -> "Settings":
        # Relative folders in kiln.yaml mean "inside the workspace", wherever kiln runs from.
        for section in (self.features.online_store, self.features.registry, self.features.offline_store,
                        self.artifacts, self.capture, self.async_inference.store):
            if section.type in ("sqlite", "file", "local"):
                section.path = _under(self.workspace, section.path)
        # Any URI (s3://, mlflow-artifacts:/ for a server that proxies artifacts) is kept as written.
        if not is_uri(self.mlflow.artifact_root):
            self.mlflow.artifact_root = _under(self.workspace, self.mlflow.artifact_root)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment over kiln.yaml; init values (the workspace path) over both.
        return (init_settings, env_settings, _YamlSource(settings_cls))


PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {
        "mlflow": {
            "tracking_uri": "sqlite:///{workspace}/models/mlflow.db",
            "artifact_root": "{workspace}/models/artifacts",
        },
        "features": {
            "online_store": {"type": "sqlite", "path": "{workspace}/features/data/online_store.db"},
            "registry": {"type": "file", "path": "{workspace}/features/data/registry.db"},
            "offline_store": {"type": "file", "path": "{workspace}/features/data/offline"},
        },
        "artifacts": {"type": "local", "path": "{workspace}/artifacts"},
        "capture": {"type": "local", "path": "{workspace}/capture"},
        "ray": {"address": "local", "num_cpus": 2},
        "serving": {"type": "local", "host": "127.0.0.1", "base_port": 8080},
    },
    "cluster": {
        "mlflow": {
            "tracking_uri": "http://kiln-mlflow:5000",
            "artifact_root": "s3://kiln/mlflow",
        },
        "features": {
            "online_store": {"type": "redis", "connection_string": "kiln-redis:6379"},
            "registry": {"type": "sql", "path": "postgresql+psycopg2://kiln@kiln-postgresql:5432/feast"},
            "offline_store": {"type": "file", "path": "s3://kiln/features/offline",
                              "endpoint_url": "http://kiln-minio:9000"},
        },
        "artifacts": {"type": "s3", "uri": "s3://kiln/artifacts", "endpoint_url": "http://kiln-minio:9000"},
        "capture": {"type": "s3", "uri": "s3://kiln/capture", "endpoint_url": "http://kiln-minio:9000"},
        "ray": {"address": "ray://kiln-ray-head:10001"},
        "serving": {"type": "kserve", "namespace": "kiln"},
    },
}

_WORKSPACE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("kiln_workspace", default=None)
_YAML_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("kiln_yaml", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    """Hands pydantic-settings the already-parsed kiln.yaml of the workspace being loaded."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_YAML_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(_YAML_DATA.get() or {})


def is_uri(text: str) -> bool:
    """A URI with a scheme (s3://..., mlflow-artifacts:/...), not a path; one letter is a Windows drive, not a scheme."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", text) is not None


def _under(root: Path, path: str) -> str:
    if "://" in path:
        return path
    return str(root / Path(path).expanduser())


def _render(value: Any, workspace: str) -> Any:
    if isinstance(value, str):
        return value.replace("{workspace}", workspace)
    if isinstance(value, dict):
        return {k: _render(v, workspace) for k, v in value.items()}
    return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A section whose backend type changes takes none of the old type's defaults.
            if "type" in value and value["type"] != out[key].get("type"):
                out[key] = value
            else:
                out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_settings_file(path: Path) -> dict[str, Any]:
    """Parse kiln.yaml; an unreadable or non-mapping file is a SettingsError naming it."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read settings: {exc}", hint="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: settings must be a mapping of keys to values, not {type(data).__name__}")
    if "workspace" in data:
        raise SettingsError(f"{path}: 'workspace' is not a settings key; it is the folder kiln.yaml is in")
    return data


def load_settings(workspace: Path | None = None) -> Settings:
    """Settings for ``workspace`` (kiln.yaml there, if any) with KILN_* variables on top."""
    root = (workspace or Path.cwd()).resolve()
    file = root / SETTINGS_FILE
    data = read_settings_file(file) if file.exists() else {}
    _reject_unknown_env()
    ws_token = _WORKSPACE.set(root)
    yaml_token = _YAML_DATA.set(data)
    try:
        return Settings(workspace=root)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, file), hint="see README's 'Settings' section for every key") from None
    except PydanticSettingsError as exc:  # a KILN_* value that cannot even be parsed (e.g. KILN_MLFLOW=abc)
        field = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + field.group(1).upper() if field else "a KILN_* variable"
        raise SettingsError(f"environment variable {name}: cannot be read as settings: {exc}",
                            hint="a whole section is given as JSON, or set its keys one by one with __") from None
    finally:
        _WORKSPACE.reset(ws_token)
        _YAML_DATA.reset(yaml_token)


# What the kubelet sets in every pod for each Service of its namespace (enableServiceLinks): for the chart's Services
# (kiln-mlflow, kiln-capture, ...) these begin with KILN_ and are not settings.
SERVICE_LINK_ENV = re.compile(r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$")


def _reject_unknown_env() -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name in os.environ:
        upper = name.upper()  # pydantic-settings reads KILN_* in any case, so check in any case too
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTINGS_ENV or SERVICE_LINK_ENV.match(upper):
            continue
        if upper.split("__")[0] not in known:
            raise SettingsError(
                f"environment variable {name}: unknown settings key '{upper[len(ENV_PREFIX):].lower()}'",
                hint=f"known keys: {', '.join(sorted(Settings.model_fields))}",
            )


def _describe(exc: ValidationError, file: Path) -> str:
    lines = []
    errors = exc.errors()
    # An unknown profile leaves every section without defaults: report only the profile.
    errors = [e for e in errors if e["loc"] == ("profile",)] or errors
    for err in errors:
        # Discriminated unions put the chosen type in the path; drop it so the key reads as written.
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p in _TYPE_TAGS)]
        key = ".".join(loc) or "(top level)"
        env = ENV_PREFIX + "__".join(p.upper() for p in loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown settings key '{key}' (in {file.name} or {env})")
        else:
            lines.append(f"settings key '{key}': {err['msg']} (got {err.get('input')!r}; in {file.name} or {env})")
    return "; ".join(lines)


_TYPE_TAGS = {"sqlite", "redis", "file", "sql", "local", "s3", "kserve"}
