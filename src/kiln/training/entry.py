"""Your own training code (SageMaker's script mode): a Python file that trains with any library MLflow can log.

The file defines two functions (examples/sklearn/train.py is one)::

    def train(context):              # -> the fitted model
        ...                          # context.x_train, context.y_train, context.x_valid, context.y_valid,
                                     # context.task, context.classes, context.params, context.seed,
                                     # context.report(iteration, model): scored on the validation rows
    def predict(model, x):           # -> the task's output for the encoded rows x [N, W] (float32):
        ...                          #    P(positive) [N], class probabilities [N, K], or values [N]

and may define ``PARAMS`` (name -> {"low", "high", "log", "type": "float" | "int"} or {"choices": [...]}) for
tuning, and ``DEFAULTS``. Rows come encoded as for the built-in families (missing numbers as the training median,
text one-hot), so everything after training (gate, explanations, serving, monitors) treats the model as theirs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.errors import InputError
from kiln.training.family import Family, Learner, Param

if TYPE_CHECKING:
    import numpy as np

    from kiln.training.prepare import Prepared

ENTRY_FILE = "entry.py"  # the user's file, copied into the model folder
MODEL_DIR = "user_model"  # the model as its MLflow flavor saved it
FLAVORS = ("sklearn", "xgboost", "lightgbm", "keras", "pytorch")


class EntryPointFailed(InputError):
    """The user's own code raised: the message holds its traceback, from the file's own lines."""


class ControlFlow(Exception):
    """Raised from a report() to end train() early (a tuning trial's last report); passes through unchanged."""


@dataclass
class TrainContext:
    """What ``train(context)`` gets."""

    x_train: "np.ndarray"
    y_train: "np.ndarray"  # class indexes 0..K-1, or numbers for regression
    x_valid: "np.ndarray"
    y_valid: "np.ndarray"
    feature_names: list[str]  # the encoded columns of x, in order
    task: str  # binary, multiclass or regression
    classes: list[Any]  # the label's values, by class index
    params: dict[str, Any]
    seed: int
    on_report: Callable[[int, Any], None] = field(repr=False, default=lambda i, m: None)

    def report(self, iteration: int, model: Any) -> None:
        """Tell Kiln how the model does after ``iteration`` (1, 2, ...): it is scored on the validation rows, logged,
        and, in a tuning job, may be stopped here."""
        self.on_report(iteration, model)


@dataclass
class EntryPoint:
    path: Path
    module: ModuleType
    params: dict[str, Param]
    defaults: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    def config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The file's DEFAULTS with ``overrides``, checked against PARAMS where it declares them."""
        out = dict(self.defaults)
        for key, value in (overrides or {}).items():
            out[key] = self.params[key].check(key, value) if key in self.params else value
        return out

    def train(self, context: TrainContext) -> Any:
        model = self._call("train", context)
        if model is None:
            raise EntryPointFailed(f"{self.path}: train(context) returned None; it must return the fitted model")
        return model

    def predict(self, model: Any, x: "np.ndarray") -> "np.ndarray":
        import numpy as np

        out = self._call("predict", model, x)
        try:
            return np.asarray(out, dtype="float64")
        except (TypeError, ValueError):
            raise EntryPointFailed(f"{self.path}: predict(model, x) returned {type(out).__name__}, not numbers") from None

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self.module, function)(*args)
        except (InputError, ControlFlow):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's code raises is reported with its traceback
            raise EntryPointFailed(_failure(self.path, function, exc)) from None


def _failure(path: Path, function: str, exc: BaseException) -> str:
    """The exception, where in the user's file it was raised (the innermost of its lines), and those frames as
    Python prints them."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{own[-1].lineno} in {own[-1].name}" if own else f"{path} ({function})"
    shown = "".join(traceback.format_list(own or frames[-3:]))
    return f"{where}: {type(exc).__name__}: {exc}\n{shown.rstrip()}"


def load_entry_point(path: Path) -> EntryPoint:
    """Import the file as a module of its own; an InputError names what it lacks or where it fails to import."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise InputError(f"--entry-point {path}: no such Python file")
    unique = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]  # two models' files may share a name
    spec = importlib.util.spec_from_file_location(f"kiln_entry_{path.stem}_{unique}", path)
    assert spec is not None and spec.loader is not None  # a .py file always has a source loader
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - an import failure of the user's file, reported with its traceback
        sys.modules.pop(spec.name, None)
        raise EntryPointFailed(_failure(path, "import", exc)) from None
    missing = [f for f in ("train", "predict") if not callable(getattr(module, f, None))]
    if missing:
        raise InputError(f"{path}: defines no {' and no '.join(f'{m}()' for m in missing)}",
                         hint="an entry point defines train(context) -> model and predict(model, x) -> output")
    return EntryPoint(path=path.resolve(), module=module, params=_params(path, getattr(module, "PARAMS", {})),
                      defaults=dict(getattr(module, "DEFAULTS", {})))


def _params(path: Path, declared: Any) -> dict[str, Param]:
    if not isinstance(declared, dict):
        raise InputError(f"{path}: PARAMS must be a dict of name -> range or choices")
    out = {}
    for name, spec in declared.items():
        if not isinstance(spec, dict):
            raise InputError(f"{path}: PARAMS['{name}'] must be a dict, e.g. {{'low': 0.01, 'high': 1, 'log': True}}")
        if "choices" in spec:
            out[name] = Param("choice", choices=tuple(spec["choices"]))
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: PARAMS['{name}'] needs numbers 'low' and 'high' (or 'choices')") from None
        kind = str(spec.get("type", "float"))
        if kind not in ("float", "int") or not low < high:
            raise InputError(f"{path}: PARAMS['{name}']: type must be float or int, and low below high")
        out[name] = Param(kind, low, high, log=bool(spec.get("log", False)))
    return out


def flavor_of(model: Any) -> str:
    """The MLflow flavor that saves ``model``, by the library it comes from."""
    top = type(model).__module__.split(".")[0]
    for module, flavor in (("sklearn", "sklearn"), ("xgboost", "xgboost"), ("lightgbm", "lightgbm"),
                           ("keras", "keras"), ("torch", "pytorch")):
        if top == module or any(c.__module__.split(".")[0] == module for c in type(model).__mro__):
            return flavor
    raise InputError(f"train(context) returned a {type(model).__module__}.{type(model).__name__}; Kiln saves models "
                     f"of scikit-learn, XGBoost, LightGBM, Keras and PyTorch (MLflow flavors {', '.join(FLAVORS)})")


def save_entry_model(folder: Path, entry: EntryPoint, model: Any) -> None:
    """The model (by its MLflow flavor) and a copy of the file into ``folder``."""
    flavor = flavor_of(model)
    options: dict[str, Any] = {}
    if flavor == "sklearn":
        import skops.io

        # MLflow saves scikit-learn models with skops, which loads only the types named trusted: this model was
        # fitted here and now, so the types it holds are the ones to trust when Kiln loads it again
        options["skops_trusted_types"] = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    importlib.import_module(f"mlflow.{flavor}").save_model(model, str(folder / MODEL_DIR), **options)
    shutil.copyfile(entry.path, folder / ENTRY_FILE)


class EntryRunner:
    """A saved entry-point model: its flavor's native object and the file's predict()."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.entry = load_entry_point(folder / meta["entry_file"])
        self.model = importlib.import_module(f"mlflow.{meta['flavor']}").load_model(str(folder / meta["model_file"]))

    def output(self, x: "np.ndarray", task: Task) -> "np.ndarray":
        return task_output(self.entry, task, self.entry.predict(self.model, x), len(x))


def task_output(entry: EntryPoint, task: Task, out: "np.ndarray", rows: int) -> "np.ndarray":
    """predict()'s answer in the task's shape ([N] for binary and regression, [N, K] for multiclass; a binary [N, 2]
    gives its positive column); EntryPointFailed names a shape that is not the task's."""
    if task.kind == "binary" and out.ndim == 2 and out.shape[1] == 2:
        out = out[:, 1]
    if task.kind == "regression" and out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    want = (rows, len(task.classes)) if task.kind == "multiclass" else (rows,)
    if out.shape != want:
        raise EntryPointFailed(f"{entry.path}: predict(model, x) gave shape {list(out.shape)} for {rows} rows; a "
                               f"{task.kind} model answers {list(want)}")
    return out


class EntryLearner:
    """A model the user's train() returned, seen as a Kiln learner: its outputs, and saving it to a model folder."""

    def __init__(self, entry: EntryPoint, model: Any, task: Task) -> None:
        self.entry, self.model, self.task = entry, model, task
        self.flavor = flavor_of(model)

    def output(self, x: "np.ndarray") -> "np.ndarray":
        return task_output(self.entry, self.task, self.entry.predict(self.model, x), len(x))

    def save(self, folder: Path) -> str:
        save_entry_model(folder, self.entry, self.model)
        return MODEL_DIR

    def meta(self) -> dict[str, str]:
        """What a model folder's meta needs beyond a built-in family's to load this model again."""
        return {"entry_file": ENTRY_FILE, "flavor": self.flavor}


ENTRY_FAMILY = "entry"
DEFAULT_MAX_ITERATIONS = 10


def entry_family(entry: EntryPoint) -> Family:
    """The file as a family: its PARAMS to tune, MAX_ITERATIONS (how many reports a run makes at most) for the
    tuning schedulers; it trains only through its own train()."""

    def start(config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int, task: Task) -> Learner:
        raise InputError(f"{entry.path} trains through its own train(context), not step by step")

    return Family(name=ENTRY_FAMILY, description=f"your own training code ({entry.path.name})",
                  max_iterations=int(getattr(entry.module, "MAX_ITERATIONS", DEFAULT_MAX_ITERATIONS)),
                  unit="one report", params=entry.params, defaults=entry.defaults, start=start,
                  model_file=MODEL_DIR, exports_onnx=False)


def context_for(prep: "Prepared", entry: EntryPoint, config: dict[str, Any], seed: int,
                on_report: Callable[[int, Any], None]) -> TrainContext:
    """The context train() gets for a prepared training set."""
    return TrainContext(x_train=prep.x["train"], y_train=prep.y["train"], x_valid=prep.x["valid"],
                        y_valid=prep.y["valid"], feature_names=prep.encoder.output_names, task=prep.task.kind,
                        classes=list(prep.task.classes), params=entry.config(config), seed=seed, on_report=on_report)
