"""Files and folders written whole or not at all (kiln.files), and the no-op progress default (kiln.progress)."""

from __future__ import annotations

import inspect
import json
from datetime import date
from pathlib import Path

import pytest

from kiln.files import staged_file, staged_folder, write_bytes_atomic, write_json_atomic, write_text_atomic
from kiln.progress import no_progress


def hidden(folder: Path) -> list[str]:
    """Temporary and set-aside names (.NAME.tmp-*, .NAME.old-*) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- files ----------------------------------------------------------------------------------------
def test_json_is_written_as_every_reader_expects(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"  # the parent is made
    data = {"z": 1, "a": [1, 2], "when": date(2026, 1, 2)}
    write_json_atomic(path, data, default=str)
    assert path.read_text() == json.dumps(data, indent=2, default=str) + "\n"
    assert path.read_text().startswith('{\n  "z": 1,')  # keys in their order, two spaces
    write_json_atomic(path, [1], indent=None)
    assert path.read_text() == "[1]\n"
    assert hidden(path.parent) == []


def test_json_that_cannot_be_serialised_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    write_json_atomic(path, {"status": "running"})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, {"status": "done", "when": date(2026, 1, 2)})
    assert path.read_bytes() == before
    assert hidden(tmp_path) == []
    with pytest.raises(ValueError, match="Circular reference"):
        circular: list[object] = []
        circular.append(circular)
        write_json_atomic(tmp_path / "new.json", circular)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_text_and_bytes_replace_the_file_exactly(tmp_path: Path) -> None:
    path = tmp_path / "kiln.yaml"
    path.write_text("old\n")
    write_text_atomic(path, "profile: local\n")
    assert path.read_text() == "profile: local\n"
    write_bytes_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert hidden(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk"), staged_file(path) as stage:
        stage.write_text("half of it")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert hidden(tmp_path) == []


def test_a_staged_file_keeps_the_suffix_it_is_given(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    with staged_file(out, suffix=out.suffix) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".pipeline.yaml.tmp-")
        assert stage.suffix == ".yaml"
        stage.write_text("a: 1\n")
        assert not out.exists()  # nothing at the target until the block ends
    assert out.read_text() == "a: 1\n"
    assert hidden(tmp_path) == []


# --- folders --------------------------------------------------------------------------------------
def test_a_staged_folder_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "new" / "bundle"
    with staged_folder(target) as stage:
        assert stage.is_dir() and list(stage.iterdir()) == []
        assert stage.parent == target.parent and stage.name.startswith(".bundle.tmp-")
        (stage / "manifest.json").write_text("{}")
        assert not target.exists()
    assert tree(target) == {"manifest.json": "{}"}
    assert hidden(target.parent) == []


def test_a_staged_folder_replaces_the_old_one_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "baseline"
    target.mkdir()
    (target / "old.json").write_text("old")
    with staged_folder(target, overwrite=True) as stage:
        (stage / "baseline.json").write_text("new")
        assert tree(target) == {"old.json": "old"}  # the old folder stays readable while the new one is built
    assert tree(target) == {"baseline.json": "new"}
    assert hidden(tmp_path) == []


def test_a_failure_in_a_staged_folder_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "dataset.json").write_text("old")
    with pytest.raises(RuntimeError, match="half"), staged_folder(target, overwrite=True) as stage:
        (stage / "dataset.json").write_text("new")
        raise RuntimeError("stopped half way")
    assert tree(target) == {"dataset.json": "old"}
    assert hidden(tmp_path) == []
    absent = tmp_path / "absent"
    with pytest.raises(KeyboardInterrupt), staged_folder(absent) as stage:
        (stage / "part").write_text("x")
        raise KeyboardInterrupt
    assert not absent.exists()
    assert hidden(tmp_path) == []


def test_a_staged_folder_without_overwrite_refuses_an_existing_destination(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "lib.so").write_text("theirs")
    with pytest.raises(FileExistsError, match="bundle"), staged_folder(target) as stage:
        (stage / "lib.so").write_text("ours")
    assert tree(target) == {"lib.so": "theirs"}
    assert hidden(tmp_path) == []


# --- progress -------------------------------------------------------------------------------------
def test_no_progress_is_the_default_of_long_work() -> None:
    from kiln.process import start
    from kiln.tuning.job import run_job

    no_progress("working")  # takes a line, says nothing
    for function in (start, run_job):
        assert inspect.signature(function).parameters["progress"].default is no_progress
