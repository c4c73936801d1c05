"""Kiln Studio in a real browser: Debian's chromium driven by Playwright, every console error and failed request kept.

Screenshots go to STUDIO_SCREENSHOTS when it is set (README's come from a run with it pointing at docs/studio),
else into the test's own folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Browser:
    """One page of a headless chromium, with the problems it met since the last ``clean()``."""

    page: Any
    shots: Path
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="networkidle")
        assert response is not None and response.status == 200, f"{url}: {response.status if response else 'none'}"
        return self.page

    def clean(self) -> list[str]:
        """The console errors, page errors and failed requests since the last call."""
        seen, self.errors[:] = list(self.errors), []
        return seen

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def chromium(shots: Path) -> Iterator[Browser]:
    """A browser page on Debian's chromium (installed by `make test`; Playwright's own browsers cannot be
    downloaded here)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).is_file(), "chromium is missing: `make test` installs it"
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS") or shots)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            b = Browser(page, shots)
            page.on("console", lambda m: b.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: b.errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: b.errors.append(f"request failed: {r.url} {r.failure}"))
            page.on("response", lambda r: b.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            yield b
        finally:
            browser.close()
