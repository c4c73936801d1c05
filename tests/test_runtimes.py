"""The serving-runtime registry, and the endpoint state and rollout report as written and read back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiln.errors import InputError
from kiln.serving.local import EndpointState
from kiln.serving.rollout import RolloutReport
from kiln.serving.runtimes import DEFAULT_RUNTIME, RUNTIMES, get_runtime, local_runtimes
from kiln.serving.spec import parse_spec


def test_an_unknown_runtime_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown serving runtime 'triton'; choose one of mlflow, onnx, tvm"):
        get_runtime("triton")
    with pytest.raises(InputError, match=r"variants\.0\.runtime: Value error, unknown serving runtime 'triton'; "
                                         r"choose one of mlflow, onnx, tvm"):
        parse_spec({"name": "e", "variants": [{"name": "a", "model": "models:/m@x", "runtime": "triton"}]})
    assert parse_spec({"name": "e", "variants": [{"name": "a", "model": "models:/m@x"}]}).variants[0].runtime \
        == DEFAULT_RUNTIME


def test_the_registry_says_where_each_runtime_is_served() -> None:
    assert local_runtimes() == ["mlflow", "onnx", "tvm"]
    assert {n: (r.model_format, r.cluster_runtime) for n, r in RUNTIMES.items()} == {
        "mlflow": ("mlflow", None), "onnx": ("onnx", None), "tvm": ("tvm", "kiln-tvm")}
    assert [n for n, r in RUNTIMES.items() if r.needs_onnx_graph] == ["onnx"]
    assert [n for n, r in RUNTIMES.items() if r.serves_bundle] == ["tvm"]


def test_each_local_runtime_names_a_kserve_model_class() -> None:
    import kserve

    from kiln.serving.onnx_model import OnnxModel
    from kiln.serving.runtime import KilnModel
    from kiln.serving.tvm_model import TvmModel

    assert RUNTIMES["mlflow"].model_type() is KilnModel and RUNTIMES["onnx"].model_type() is OnnxModel
    assert RUNTIMES["tvm"].model_type() is TvmModel
    assert all(issubclass(RUNTIMES[n].model_type(), kserve.Model) for n in local_runtimes())


def test_the_model_server_offers_the_local_runtimes_only() -> None:
    res = subprocess.run([sys.executable, "-m", "kiln.serving.server", "--name", "toy", "--model-uri",
                          "models:/toy/1", "--runtime", "triton", "--http-port", "1"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "--runtime: invalid choice: 'triton'" in res.stderr, res.stderr
    assert "'mlflow', 'onnx', 'tvm'" in res.stderr, "the choices are the local runtimes"


STATE = {
    "name": "toy",
    "spec": parse_spec({"name": "toy", "variants": [{"name": "main", "model": "models:/toy@champion"}],
                        "shadow": {"name": "dark", "model": "models:/toy/2", "runtime": "tvm"}}).model_dump(
        mode="json"),
    "router_port": 8100,
    "variants": {"main": {"model": "models:/toy/1", "requested": "models:/toy@champion", "port": 8101,
                          "runtime": "mlflow", "role": "production", "artifact": None, "inline": False},
                 "dark": {"model": "models:/toy/2", "requested": "models:/toy/2", "port": 8102, "runtime": "tvm",
                          "role": "shadow", "artifact": "toy-v2-x86_64-20261201T000000000000", "inline": False}},
    "history": [{"at": "2026-12-01T00:00:00+00:00", "event": "deployed", "variant": "main", "model": "models:/toy/1",
                 "reason": "", "by": ""},
                {"at": "2026-12-01T00:00:00+00:00", "event": "override", "variant": "main", "model": "models:/toy/1",
                 "reason": "PendingManualApproval, gate passed: review on Monday", "by": "ops"}],
}
PENDING = {"variant": "main", "candidate": "main-next", "model": "models:/toy/3", "requested": "models:/toy/3",
           "port": 8103, "runtime": "mlflow", "artifact": None}


@pytest.mark.parametrize("data", [STATE, {**STATE, "rollout": PENDING}], ids=["settled", "rolling-out"])
def test_the_endpoint_state_reads_and_writes_the_same_json(data: dict) -> None:
    state = EndpointState.model_validate_json(json.dumps(data))
    assert json.dumps(state.to_dict(), indent=2) == json.dumps(data, indent=2), "same keys, same order"
    assert state.primary.model == "models:/toy/1" and state.spec.shadow is not None
    assert (state.rollout is None) == ("rollout" not in data)


def test_a_state_written_before_the_endpoint_kept_a_history_reads_with_an_empty_one() -> None:
    old = {k: v for k, v in STATE.items() if k != "history"}
    state = EndpointState.model_validate_json(json.dumps(old))
    assert state.history == [] and state.to_dict()["history"] == []


def test_a_state_written_before_runtimes_were_recorded_reads_as_mlflow() -> None:
    old = {**STATE, "variants": {"main": {"model": "models:/toy/1", "requested": "models:/toy@champion",
                                          "port": 8101, "role": "production"}}}
    assert EndpointState.model_validate(old).variants["main"].runtime == "mlflow"


def test_the_rollout_report_round_trips_its_json() -> None:
    doc = {"stable": "main", "candidate": "main-next", "candidate_url": "http://127.0.0.1:8103", "phase": "baking",
           "share": 0.1, "reason": "canary: candidate main-next takes 10%",
           "policy": {"type": "canary", "step_percent": 10.0, "bake_seconds": 60.0, "interval_seconds": 30.0},
           "history": [{"at": 1.5, "phase": "baking", "share": 0.1, "reason": "canary"}], "done": False,
           "updated": 1700000000.0, "paused": True}
    report = RolloutReport.from_dict(doc)
    assert report.policy.bake_seconds == 60.0 and not report.done and report.paused
    assert json.dumps(report.to_dict()) == json.dumps(doc)
    older = {k: v for k, v in doc.items() if k != "paused"}  # a front from before pausing reports no such key
    assert RolloutReport.from_dict(older).paused is False
