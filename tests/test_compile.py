"""`kiln compile`: TVM libraries per target, parity with ONNX Runtime, signed bundles, and their records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.compiled import Compiled, ok, register
from tests.conftest import run_kiln

pytestmark = pytest.mark.slow

ELF_MACHINE = {62: "x86_64", 183: "aarch64"}  # e_machine in an ELF header


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path.name} is not an ELF file"
    return ELF_MACHINE.get(int.from_bytes(header[18:20], "little"), "other")


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_x86_bundle_matches_onnx_runtime_and_is_recorded_in_mlflow(compiled: Compiled) -> None:
    from mlflow import MlflowClient

    bundle = compiled.bundle("x86_64")
    m = manifest(bundle)
    assert m["model"]["name"] == "toy" and m["model"]["version"] == "1" and m["target"]["name"] == "x86_64"
    parity = m["details"]["parity"]
    assert parity["rows"] >= 50 and parity["max_abs_diff"] <= 1e-5
    assert {elf_machine(bundle / lib) for lib in m["libraries"].values()} == {"x86_64"}
    assert set(m["files"]) == {"encoder.json", "model-b1.so", "model-b256.so"}
    assert m["runtime"]["tvm"].startswith("0.27") and m["expires"] > m["created"]

    client = MlflowClient(tracking_uri=f"sqlite:///{compiled.root}/models/mlflow.db")
    tag = client.get_model_version("toy", "1").tags["kiln.compiled.x86_64"]
    assert tag.startswith(m["id"])
    run = client.get_run(tag.split("run ")[1].rstrip(")"))
    assert run.data.tags["kiln.model_version"] == "1" and run.data.metrics["parity_max_abs_diff"] <= 1e-5
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/manifest.json" in logged and "bundle/model-b256.so" in logged


def test_aarch64_bundle_is_cross_compiled(compiled: Compiled) -> None:
    bundle = compiled.bundle("aarch64")
    m = manifest(bundle)
    assert {elf_machine(bundle / lib) for lib in m["libraries"].values()} == {"aarch64"}
    assert m["details"]["parity"] is None and "not run" in m["details"]["notes"][0]


def test_cuda_bundle_embeds_kernels_compiled_by_nvcc(compiled: Compiled) -> None:
    result = ok("compile", "toy/1", "--target", "cuda", "--gpu-arch", "sm_86", "-w", compiled.root)
    bundle = Path(result["path"])
    m = manifest(bundle)
    assert m["target"]["gpu_arch"] == "sm_86" and "no GPU" in result["notes"][0]
    cuda = m["details"]["cuda"]["256"]
    assert any("matmul" in k for k in cuda["kernels"])
    assert (bundle / cuda["source"]).read_text().count("__global__") >= len(cuda["kernels"])
    if shutil.which("nvcc"):
        assert (bundle / cuda["fatbin"]).stat().st_size > 1000


def test_list_verify_and_a_tampered_bundle(compiled: Compiled, tmp_path: Path) -> None:
    listed = {a["id"]: a for a in ok("artifacts", "list", "-w", compiled.root)}
    assert compiled.ids["x86_64"] in listed and not listed[compiled.ids["x86_64"]]["published"]
    verdicts = ok("artifacts", "verify", "--all", "-w", compiled.root)
    assert all(v["ok"] for v in verdicts)

    # a copy, changed by one byte, under a new id in the same workspace
    original = compiled.bundle("x86_64")
    copy = original.with_name(original.name + "-tampered")
    shutil.copytree(original, copy)
    try:
        lib = copy / "model-b1.so"
        data = bytearray(lib.read_bytes())
        data[len(data) // 2] ^= 0xFF
        lib.write_bytes(bytes(data))
        res = run_kiln("artifacts", "verify", copy.name, "-w", compiled.root)
        assert res.code == 1 and "model-b1.so: sha256 differs" in res.stdout
        res = run_kiln("artifacts", "publish", copy.name, "-w", compiled.root)
        assert res.code == 1 and "fails verification" in res.stderr
        assert not (compiled.root / "artifacts" / "published" / "bundles" / copy.name).exists()
    finally:
        shutil.rmtree(copy)


def test_lgbm_compiles_through_standard_tensor_ops(compiled: Compiled) -> None:
    ref = register(compiled.root, "lgbm")
    result = ok("compile", ref, "--target", "x86_64", "-w", compiled.root)
    assert result["parity"]["max_abs_diff"] <= 1e-5


def test_tuning_records_are_kept_and_reused_for_the_same_shapes(compiled: Compiled) -> None:
    from mlflow import MlflowClient

    root = compiled.root
    # As a process: `kiln compile --tune` tunes in a fresh process of its own, whose console must not reach the
    # command's stdout (the JSON result alone); MetaSchedule's console goes to its logs folder.
    first = ok("compile", "toy/1", "--target", "x86_64", "--tune", "--trials", "10", "-w", root, isolated=True)
    tuning = first["tuning"]
    assert tuning["tuned"] and not tuning["untuned"] and tuning["trials"] == 10
    assert first["parity"]["max_abs_diff"] <= 1e-5
    database = Path(tuning["database"])
    assert (database / "database_tuning_record.json").stat().st_size > 0
    assert "Initializing Task" in (database / "logs" / "console.log").read_text()
    run = MlflowClient(f"sqlite:///{root}/models/mlflow.db").get_run(first["mlflow_run_id"])
    assert run.data.tags["kiln.tuned"] == "true" and run.data.metrics["tuning_seconds"] > 0
    # Another model with the same layer sizes: every kernel's record is found, nothing is tuned again.
    other = register(root, "mlp")
    again = ok("compile", other, "--target", "x86_64", "--tune", "-w", root)
    assert again["tuning"]["tuned"] == [] and len(again["tuning"]["reused"]) == tuning["tasks"]
    assert again["tuning"]["trials"] == 0 and again["parity"]["max_abs_diff"] <= 1e-5
    assert again["seconds"] < first["seconds"] / 2, (again["seconds"], first["seconds"])
    for args, message in [(("--target", "aarch64"), "this machine is not aarch64"),
                          (("--target", "cuda"), "there is no GPU here"),
                          (("--target", "x86_64", "--trials", "0"), "--trials 0"),
                          (("--target", "x86_64", "--cpu", "x86-64"), "--tune with --cpu x86-64")]:
        res = run_kiln("compile", "toy/1", "--tune", *args, "-w", root)
        assert res.code == 1 and message in res.stderr, res.stderr[-1500:]
    res = run_kiln("compile", "toy/1", "--target", "x86_64", "--retune", "-w", root)
    assert res.code == 1 and "--retune goes with --tune" in res.stderr


def test_bad_requests_name_what_is_wrong(compiled: Compiled) -> None:
    before = sorted(p.name for p in (compiled.root / "artifacts" / "compiled").iterdir())
    res = run_kiln("compile", "toy/1", "--target", "riscv", "-w", compiled.root)
    assert res.code == 1 and "unknown target 'riscv'" in res.stderr
    res = run_kiln("compile", "toy/9", "--target", "x86_64", "-w", compiled.root)
    assert res.code == 1 and "has no version 9" in res.stderr
    res = run_kiln("compile", "toy/1", "--target", "x86_64", "--cpu", "pentium9", "-w", compiled.root)
    assert res.code == 1 and "--cpu 'pentium9'" in res.stderr
    res = run_kiln("artifacts", "verify", "nope", "-w", compiled.root)
    assert res.code == 1 and "no compiled artifact 'nope'" in res.stderr
    assert sorted(p.name for p in (compiled.root / "artifacts" / "compiled").iterdir()) == before


def test_an_operator_tvm_lacks_is_named(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from kiln.compile.build import CompileFailed, import_graph
    from kiln.compile.targets import resolve_target
    from kiln.compile.tuning_process import tune_apart

    node = helper.make_node("TreeEnsembleClassifier", ["features"], ["label", "probabilities"],
                            domain="ai.onnx.ml")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(CompileFailed, match=r"ai.onnx.ml.TreeEnsembleClassifier"):
        import_graph(model, 1, 3)
    # the same error, with its hint, from the process `kiln compile --tune` tunes in; nothing is tuned
    shown: list[str] = []
    with pytest.raises(CompileFailed, match=r"ai.onnx.ml.TreeEnsembleClassifier") as raised:
        tune_apart(model, 3, (1,), resolve_target("x86_64"), tmp_path / "db", 4, False, shown.append)
    assert raised.value.hint == "export the model with standard ONNX operators"
    assert shown == [] and not (tmp_path / "db").exists()


def test_parity_failure_reports_the_numbers(compiled: Compiled) -> None:
    """The compiled x86 library against a graph whose output bias was moved: a real mismatch, reported."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from kiln.compile.parity import ParityFailed, check_parity
    from kiln.compile.runner import CompiledModel

    bundle = compiled.bundle("x86_64")
    m = manifest(bundle)
    model = CompiledModel({int(b): bundle / name for b, name in m["libraries"].items()})
    graph = onnx.load(str(next((compiled.root / "models").rglob("model.onnx"))))
    x = np.random.default_rng(0).normal(size=(10, len(m["input"]["columns"]))).astype(np.float32)
    assert check_parity(graph, model, x).max_abs_diff <= 1e-5
    last = [i for i in graph.graph.initializer if i.name.startswith("b")][-1]
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) + np.float32(0.5), last.name))
    with pytest.raises(ParityFailed, match=r"max \|diff\| .* on row \d+ of 10 \(compiled \["):
        check_parity(graph, model, x)
