"""The `kiln` command as a user meets it: version, help, JSON output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import __version__
from tests.conftest import clean_env, run_kiln

HEAVY = ["kfp", "kserve", "mlflow", "feast", "evidently", "ray", "tvm", "onnxruntime", "sklearn", "lightgbm",
         "shap", "pandas", "pyarrow", "pandera", "numpy"]


def test_version() -> None:
    res = run_kiln("--version")
    assert res.code == 0 and res.stdout.strip() == f"kiln {__version__}"


def test_no_arguments_shows_help() -> None:
    res = run_kiln()
    assert res.code == 0
    for noun in ["init", "doctor", "data", "up", "status", "down", "demo"]:
        assert noun in res.stdout


def test_unknown_option_is_bad_input_without_traceback() -> None:
    res = run_kiln("data", "generate", "--out", "x", "--bogus")
    assert res.code == 1
    assert "No such option: --bogus" in res.stderr and "Traceback" not in res.stderr


def test_light_commands_import_no_engine() -> None:
    """`kiln --help` must stay fast: the CLI module imports no engine or data library."""
    code = ("import sys, kiln.cli.main; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env())
    assert out.stdout.strip() == "[]"


def test_generate_json_is_one_document_and_deterministic(tmp_path: Path) -> None:
    docs = []
    for name in ("a", "b"):
        res = run_kiln("data", "generate", "--out", tmp_path / name, "--customers", "300", "--days", "45",
                       "--seed", "5", "--end", "2026-09-01", "--json")
        assert res.code == 0, res.stderr
        docs.append(json.loads(res.stdout))
    assert docs[0]["content_hash"] == docs[1]["content_hash"]
    assert docs[0]["customers"] == 300 and 0 < docs[0]["churn_rate"] < 1
    assert (tmp_path / "a" / "dataset.json").is_file()


def test_generate_bad_input_names_the_flag_and_writes_nothing(tmp_path: Path) -> None:
    res = run_kiln("data", "generate", "--out", tmp_path / "d", "--days", "10")
    assert res.code == 1 and "--days must be at least 31" in res.stderr and "Traceback" not in res.stderr
    res = run_kiln("data", "generate", "--out", tmp_path / "d", "--end", "2026-13-45")
    assert res.code == 1 and "--end '2026-13-45'" in res.stderr
    res = run_kiln("data", "generate", "--out", tmp_path / "d", "--drift", "usage_minutes")
    assert res.code == 1 and "FEATURE=SHIFT" in res.stderr
    res = run_kiln("data", "generate", "--out", tmp_path / "d", "--label-bias", "gender=other:0.1")
    assert res.code == 1 and "unknown value 'other'" in res.stderr
    res = run_kiln("data", "generate", "--out", tmp_path / "no" / "such" / "d")
    assert res.code == 1 and "folder does not exist" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_to_overwrite_without_flag(tmp_path: Path, churn_dataset: Path) -> None:
    import shutil

    target = tmp_path / "d"
    shutil.copytree(churn_dataset, target)
    before = (target / "dataset.json").read_bytes()
    res = run_kiln("data", "generate", "--out", target, "--customers", "100", "--days", "40")
    assert res.code == 1 and "already there" in res.stderr and "--overwrite" in res.stderr
    assert (target / "dataset.json").read_bytes() == before
    res = run_kiln("data", "generate", "--out", target, "--customers", "100", "--days", "40", "--overwrite", "--json")
    assert res.code == 0 and json.loads(res.stdout)["customers"] == 100
    assert [p.name for p in tmp_path.iterdir()] == ["d"], "no temporary folders may be left behind"


def test_generate_into_a_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    res = run_kiln("data", "generate", "--out", tmp_path, "--overwrite")
    assert res.code == 1 and "not empty" in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = run_kiln("--debug", "data", "validate", tmp_path / "nowhere", isolated=True)  # a process prints it
    assert res.code != 0 and "Traceback" in res.stderr and "DatasetError" in res.stderr


def test_commands_needing_a_workspace_say_how_to_make_one(tmp_path: Path) -> None:
    res = run_kiln("status", cwd=tmp_path)
    assert res.code == 1
    assert "no Kiln workspace" in res.stderr and "kiln init" in res.stderr


def test_an_unexpected_error_exits_with_its_own_code_and_says_how_to_see_its_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault in Kiln is neither bad input (1) nor the environment (2): exit 4, a message, the way to the traceback."""
    import kiln.cli.main

    def broken(*_: object) -> None:
        raise RuntimeError("a fault inside Kiln")

    monkeypatch.setattr(kiln.cli.main, "init_workspace", broken)
    res = run_kiln("init", tmp_path / "ws")
    assert res.code == 4, res.stderr
    assert "internal error: RuntimeError: a fault inside Kiln" in res.stderr and "--debug" in res.stderr
    assert "Traceback" not in res.stderr
