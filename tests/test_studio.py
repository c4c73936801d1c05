"""Kiln Studio, served by `kiln up`, in a real browser: every page renders its data and charts with no console error;
approve, promote to champion and an endpoint's rollback done through the pages change the registry and the endpoint
as the CLI would, recorded in their histories; an action without the bearer token is refused and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import clean_env, run_kiln
from tests.studio_browser import Browser, chromium
from tests.test_serving import ROWS, serving_workspace
from tests.test_stack import free_port

pytestmark = pytest.mark.slow
TOKEN = "studio-test-token"
ENV = clean_env(KILN_SERVICES__STUDIO__PORT=str(free_port()), KILN_STUDIO_TOKEN=TOKEN)


def kiln(*args: str | Path) -> dict:
    res = run_kiln(*args, "--json", env=ENV)
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """`toy` 1 (approved) serving on endpoint `toy`, 2 registered and pending; Studio running, with a token."""
    root = serving_workspace(tmp_path_factory.mktemp("studio") / "ws")
    run_id = kiln("models", "show", "toy/1", "-w", root)["run_id"]
    assert kiln("models", "register", run_id, "--name", "toy", "-w", root)["version"]["version"] == "2"
    try:
        deployed = kiln("endpoint", "deploy", "--model", "models:/toy/1", "--name", "toy", "-w", root)
        for _ in range(40):  # traffic for the charts
            assert httpx.post(f"{deployed['url']}/v1/models/toy:predict", json={"instances": ROWS},
                              timeout=10).status_code == 200
        up = kiln("up", "studio", "-w", root)
        [url] = [s["url"] for s in up["services"] if s["name"] == "studio"]
        yield root, url
    finally:
        run_kiln("down", "-w", root, env=ENV)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with chromium(tmp_path_factory.mktemp("screenshots")) as b:
        yield b


def version(root: Path, ref: str) -> dict:
    return kiln("models", "show", ref, "-w", root)


def test_every_page_renders_its_data_and_charts_with_no_console_error(studio, browser: Browser) -> None:
    _, url = studio
    page = browser.open(f"{url}/models")
    rows = page.locator("table.versions tbody tr")
    assert rows.count() == 2 and page.locator("tr[data-ref='toy/1'] .approval-Approved").count() == 1
    assert "lgbm" in rows.first.inner_text() or "lgbm" in rows.last.inner_text(), "the family is shown"
    assert page.locator("tr[data-ref='toy/1'] a[href='/endpoints/toy']").count() == 1, "where it serves"
    browser.shot("models")

    page = browser.open(f"{url}/models/toy/1")
    assert page.locator(".gate-passed").count() >= 1 and "registered" in page.locator("#history").inner_text()
    assert "training set" in page.locator("table.kv").first.inner_text(), "lineage back to the training set"
    browser.shot("model-version")

    page = browser.open(f"{url}/endpoints")
    assert page.locator("tr[data-endpoint='toy'] .badge.good").inner_text() == "answering"
    browser.shot("endpoints")

    page = browser.open(f"{url}/endpoints/toy")
    page.wait_for_selector("#chart-rps .main-svg")
    assert page.locator(".chart .main-svg").count() >= 3, "requests, latency and errors are charted"
    assert "toy/1" in page.locator("table.variants").inner_text()
    browser.shot("endpoint")
    for name, empty in (("monitors", "No monitor run yet"), ("pipelines", "No local pipeline run yet"),
                        ("features", "No feature view yet"), ("edge", "No device has reported yet")):
        assert empty in browser.open(f"{url}/{name}").inner_text("main"), f"{name}: an empty page says what to do"
    assert browser.clean() == []


def test_studio_serves_no_file_outside_the_workspace_and_names_what_is_missing(studio) -> None:
    root, url = studio
    for path in ("/etc/passwd", str(root / ".." / ".." / "x.html"), str(root / "kiln.yaml"), ""):
        res = httpx.get(f"{url}/files", params={"path": path}, timeout=10)
        assert res.status_code == 404 and "no report at" in res.text
    for hours in ("nan", "inf", "-3", "x"):
        res = httpx.get(f"{url}/endpoints/toy/shadow", params={"hours": hours}, timeout=10)
        assert res.status_code == 400 and "hours: give a number of hours" in res.text
    res = httpx.get(f"{url}/models/toy/9", timeout=10)
    assert res.status_code == 404 and "no model version toy/9" in res.text
    res = httpx.post(f"{url}/api/models/toy/1/approve", content=b"{oops",
                     headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert res.status_code == 400 and "reason" in res.json()["error"]
    res = httpx.post(f"{url}/api/models/toy/1/bless", json={"reason": "x"}, headers={"authorization": f"Bearer {TOKEN}"},
                     timeout=10)
    assert res.status_code == 400 and "approve, reject, promote" in res.json()["error"]


def test_approve_promote_and_rollback_through_the_pages_change_what_the_cli_shows(studio, browser: Browser) -> None:
    root, url = studio
    page = browser.open(f"{url}/models/toy/2")
    page.fill("#token", "")
    page.fill("#reason", "no token")
    page.click("text=Approve")
    page.wait_for_selector("#toast.error")
    assert "missing or wrong bearer token" in page.inner_text("#toast")
    assert version(root, "toy/2")["approval"] == "PendingManualApproval", "a refused action changes nothing"
    assert any("401" in e for e in browser.clean()), "the refusal is a 401"

    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.fill("#reason", "reviewed the card in Studio")
    with page.expect_navigation():
        page.click("text=Approve")
    assert page.inner_text("#approval") == "Approved"
    approved = version(root, "toy/2")
    assert approved["approval"] == "Approved" and approved["history"][-1]["reason"] == "reviewed the card in Studio"
    assert approved["history"][-1]["by"] == "studio"

    with page.expect_navigation():
        page.click("text=Promote to champion")
    assert "champion" in version(root, "toy/2")["aliases"]

    kiln("endpoint", "update", "toy", "--model", "models:/toy/2", "--no-wait", "-w", root)
    page = browser.open(f"{url}/endpoints/toy")
    assert page.inner_text("#rollout") != "none under way"
    page.fill("#reason", "holding for the traffic peak")
    with page.expect_navigation():
        page.click("text=Pause")
    assert "(paused)" in page.inner_text("#rollout") and page.locator("text=Resume").count() == 1
    assert "holding for the traffic peak" in page.inner_text("#rollout-steps"), "the rollout's steps are shown"
    paused = kiln("endpoint", "status", "toy", "-w", root)["history"][-1]
    assert (paused["event"], paused["by"]) == ("rollout paused", "studio"), paused
    with page.expect_navigation():
        page.click("text=Resume")
    assert "(paused)" not in page.inner_text("#rollout")
    page.fill("#reason", "latency looked worse")
    with page.expect_navigation():
        page.click("text=Roll back")
    status = kiln("endpoint", "status", "toy", "-w", root)
    assert status["rollout"] is None and status["variants"]["primary"]["model"] == "models:/toy/1"
    assert status["history"][-1]["event"].startswith("roll") and "latency looked worse" in status["history"][-1]["reason"]
    assert status["history"][-1]["by"] == "studio", "who rolled it back is recorded"
    assert "latency looked worse" in page.locator("#history").inner_text()
    assert page.inner_text("#rollout") == "none under way" and page.locator("text=Roll back").count() == 0
    browser.shot("endpoint-rolled-back")
    assert browser.clean() == []
