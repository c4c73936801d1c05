"""Load tests of a model server or an endpoint on this machine, with wrk (Debian's package `wrk`).

wrk keeps a fixed number of connections busy, each sending its next request when the last is answered, or, given a
rate, after a pause that holds the connections together to that rate. It is a C program: the load costs the
machine little of what it measures. A test runs for a set time and stops by itself, and only loopback addresses
are taken: nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kiln.errors import EnvironmentProblem, InputError

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class LoadResult:
    """What one load test measured: answers per second, latency percentiles (ms), and failures (answers that were
    not 2xx, and connections that broke or timed out)."""

    connections: int
    seconds: float
    requests: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failures: int
    offered_rps: float | None = None  # the rate asked for, if any


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise EnvironmentProblem("wrk is not installed", hint="apt-get install wrk (Debian's package), or `make setup`")
    return found


def _loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise InputError(f"{url}: load tests run against this machine's loopback addresses only")


def load_test(url: str, body: bytes, seconds: float = 10.0, connections: int = 8, rate: float | None = None,
              warm_seconds: float = 2.0, content_type: str = "application/json", answer_ms: float = 0.0,
              id_prefix: str | None = None) -> LoadResult:
    """POST ``body`` to ``url`` for ``seconds`` over ``connections`` connections (at ``rate`` requests/s in all
    when given: each connection pauses between its requests for its share of the rate, less ``answer_ms``, the time
    an answer is expected to take), after ``warm_seconds`` of the same load that is not counted. With ``id_prefix``,
    request N carries the inference id PREFIX-N (x-kiln-inference-id), so an endpoint's capture can be checked
    request by request."""
    _loopback(url)
    if rate is not None and rate <= 0:
        raise InputError(f"rate {rate}: give requests per second above 0")
    with tempfile.TemporaryDirectory(prefix="kiln-load-") as folder:
        (Path(folder) / "body").write_bytes(body)
        pause = f"function delay() return {max(0.0, connections * 1000.0 / rate - answer_ms):.3f} end\n" \
            if rate else ""
        def script(prefix: str | None) -> str:
            path = Path(folder) / f"{prefix or 'post'}.lua"
            tagged = ("local n = 0\nfunction request()\n  n = n + 1\n  return wrk.format(nil, nil, {['Content-Type']"
                      f" = '{content_type}', ['x-kiln-inference-id'] = '{prefix}-' .. n}}, nil)\nend\n"
                      if prefix else "")
            path.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
                            f'local f = io.open("{folder}/body", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
                            f"{pause}{tagged}")
            return str(path)

        base = [wrk_path(), "-t1", f"-c{connections}", "--timeout", "10s", "-s"]
        if warm_seconds > 0:
            warm = script(f"{id_prefix}-warm" if id_prefix else None)
            subprocess.run([*base, warm, f"-d{max(1, round(warm_seconds))}s", url], capture_output=True, check=False)
        res = subprocess.run([*base, script(id_prefix), f"-d{max(1, round(seconds))}s", "--latency", url],
                             capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise EnvironmentProblem(f"wrk failed on {url}: {(res.stderr or res.stdout).strip()[-500:]}")
    return parse_wrk(res.stdout, connections, rate)


def parse_wrk(text: str, connections: int, rate: float | None = None) -> LoadResult:
    """wrk's report (with --latency) as a LoadResult."""
    def number(pattern: str) -> float:
        m = re.search(pattern, text, re.M)
        if m is None:
            raise EnvironmentProblem(f"wrk's report lacks {pattern!r}:\n{text[-1000:]}")
        return float(m.group(1))

    def percentile(p: int) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m is None:
            raise EnvironmentProblem(f"wrk's report lacks its {p}th percentile:\n{text[-1000:]}")
        return round(float(m.group(1)) * UNITS[m.group(2)], 3)

    requests = int(number(r"(\d+) requests in"))
    m = re.search(r"requests in ([\d.]+)(us|ms|s|m)", text)
    seconds = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)] if m else 0.0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    failures = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sockets.groups()) if sockets else 0)
    return LoadResult(connections=connections, seconds=round(seconds, 2), requests=requests,
                      requests_per_second=number(r"Requests/sec:\s+([\d.]+)"), p50_ms=percentile(50),
                      p90_ms=percentile(90), p99_ms=percentile(99), failures=failures, offered_rps=rate)
