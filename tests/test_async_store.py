"""The async store, in a folder and on a real S3 API (SeaweedFS): a request is known once whole, its outcome is
written once whatever writes it again, its deliveries are counted, and a request never queued leaves nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kiln.errors import InputError
from kiln.serving.async_store import AsyncRequest, AsyncStore, media_type, new_id
from tests.s3 import S3


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncStore:
    if request.param == "folder":
        return AsyncStore(str(tmp_path / "async"))
    aws: S3 = request.getfixturevalue("aws")
    return AsyncStore(f"s3://kiln/async-{uuid.uuid4().hex[:8]}", aws.endpoint)


def test_an_outcome_is_written_once_and_deliveries_are_counted(store: AsyncStore, tmp_path: Path) -> None:
    body = tmp_path / "body.csv"
    body.write_text("calls,tenure,plan\n1,2.0,basic\n")
    request = AsyncRequest(new_id(), "toy", "text/csv", body.stat().st_size, "2026-12-07T00:00:00Z")
    pending = store.add(request, body)
    assert pending.status == "pending" and pending.output_location.endswith(f"{request.inference_id}/result.jsonl")
    assert not body.exists(), "the body moved into the store"
    copy = tmp_path / "input"
    store.input_file(request, copy)
    assert copy.read_text() == "calls,tenure,plan\n1,2.0,basic\n"
    assert [store.delivered(request, again) for again in (False, True, True)] == [1, 2, 3]

    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text('{"prediction": 1}\n')
    second.write_text('{"prediction": 0}\n')
    assert store.write_result(request, first) and not store.write_result(request, second)
    assert not store.write_error(request, "late", 2, tmp_path / "error.json"), "answered: no error after it"
    assert store.outcome(request.inference_id).status == "done" and store.answered(request)
    out = tmp_path / "out"
    store.result_file(request.inference_id, out)
    assert out.read_text() == '{"prediction": 1}\n', "the first writer's result stays"


def test_a_failed_request_keeps_its_error_and_an_unqueued_one_is_forgotten(store: AsyncStore, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"instances": []}')
    failed = AsyncRequest(new_id(), "toy", "application/json", 17, "2026-12-07T00:00:00Z")
    store.add(failed, body)
    assert store.write_error(failed, "rows 1-1: bad", 1, tmp_path / "error.json")
    result = tmp_path / "result"
    result.write_text("{}")
    assert not store.write_result(failed, result), "failed: no result after it"
    outcome = store.outcome(failed.inference_id)
    assert (outcome.status, outcome.error) == ("failed", "rows 1-1: bad")

    body.write_text("{}")
    dropped = AsyncRequest(new_id(), "toy", "application/json", 2, "2026-12-07T00:00:00Z")
    store.add(dropped, body)
    store.forget(dropped.inference_id)
    with pytest.raises(InputError, match="no asynchronous request"):
        store.outcome(dropped.inference_id)
    with pytest.raises(InputError, match="32 hexadecimal digits"):
        store.outcome("../etc/passwd")


def test_content_types_are_named_when_refused() -> None:
    assert media_type("text/csv; charset=utf-8") == "text/csv" and media_type(None) == "application/json"
    with pytest.raises(InputError, match=r"text/plain.*application/json, text/csv"):
        media_type("text/plain")


def test_a_workers_init_container_copies_the_model_files_from_s3(aws: S3, tmp_path: Path) -> None:
    from kiln.serving.fetch_model import fetch
    from kiln.storage import S3Store

    prefix = f"s3://kiln/models-{uuid.uuid4().hex[:8]}/model"
    store = S3Store(prefix, aws.endpoint)
    files = {"MLmodel": b"flavors: {}\n", "python_model.pkl": b"\x80\x04pickled", "code/kiln/__init__.py": b""}
    for key, data in files.items():
        store.put(key, data)
    assert fetch(prefix, tmp_path / "models") == 3
    assert {p.relative_to(tmp_path / "models").as_posix(): p.read_bytes()
            for p in (tmp_path / "models").rglob("*") if p.is_file()} == files
    with pytest.raises(InputError, match="no model files there"):
        fetch(f"s3://kiln/missing-{uuid.uuid4().hex[:8]}", tmp_path / "none")
