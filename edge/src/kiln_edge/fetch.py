"""HTTP from the device to the distribution point: JSON calls, and file downloads that resume after a drop."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMEOUT = 30.0
CHUNK = 1 << 16


class FetchError(Exception):
    """The server could not be reached or answered an error; the message says which."""


def get_json(url: str) -> Any:
    return _call(urllib.request.Request(url), f"GET {url}")


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    return _call(request, f"POST {url}")


def _call(request: urllib.request.Request, what: str) -> Any:
    """The JSON answer; an error status or a failed connection is a FetchError naming the call."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as res:
            return json.loads(res.read())
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{what}: HTTP {exc.code} {exc.read()[:200].decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{what}: {exc}") from None


def download(url: str, dest: Path, size: int, attempts: int = 5, log: Callable[[str], None] = print,
             backoff: float = 1.0) -> None:
    """``url`` into ``dest``, resuming a partial ``dest.part`` with a Range request; retried on drops."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()  # longer than the file should be: start over
            have = 0
        if have == size:
            part.replace(dest)
            return
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as res:
                if have and res.status != 206:
                    have = 0  # the server ignored the range: take the whole file again
                with part.open("ab" if have else "wb") as out:
                    while block := res.read(CHUNK):
                        out.write(block)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                part.unlink(missing_ok=True)
            elif exc.code < 500:
                raise FetchError(f"GET {url}: HTTP {exc.code}") from None
            log(f"download {dest.name}: HTTP {exc.code}, attempt {attempt} of {attempts}")
        except (urllib.error.URLError, OSError) as exc:
            got = part.stat().st_size if part.exists() else 0
            log(f"download {dest.name}: {exc} after {got} of {size} bytes, attempt {attempt} of {attempts}; "
                "will resume")
        else:
            got = part.stat().st_size
            if got == size:
                part.replace(dest)
                return
            log(f"download {dest.name}: connection closed after {got} of {size} bytes, attempt {attempt} of "
                f"{attempts}; will resume")
        time.sleep(backoff * attempt)
    raise FetchError(f"GET {url}: not complete after {attempts} attempts")
