"""An emulated aarch64 Linux device for tests: a Debian arm64 root run with qemu-user, plus locked wheels.

The device is built once into ``CACHE`` and reused: a Debian bookworm arm64 root (debootstrap's first
stage, every package then unpacked with ``dpkg-deb -x``), and a folder of aarch64 wheels pinned by hash in
``edge/requirements-aarch64.lock``, unzipped side by side. Programs run under ``qemu-aarch64-static -L
ROOT``, which needs no binfmt_misc and no privileges. The guest shares the host's file system, network
and process table, so a test hands it host paths and can talk to a server it starts on localhost.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kiln.locking import exclusive

CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "aarch64"
ROOT = CACHE / "root"
SITE = CACHE / "site"
ROOT_MARKER = CACHE / "root.ok"
SITE_MARKER = CACHE / "site.ok"

LOCK = Path(__file__).resolve().parents[1] / "edge" / "requirements-aarch64.lock"
SUITE = "bookworm"  # Debian 12: its python3 is the 3.11 the wheels are locked for
GUEST_PYTHON = "usr/bin/python3.11"
# The lock is resolved for manylinux_2_28; a wheel may carry any older glibc tag (cffi and
# cryptography ship manylinux_2_17 ones), and pip takes --platform literally, so all are listed,
# newest first (the order is pip's preference). Bookworm's glibc is 2.36.
WHEEL_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(28, 16, -1)] + ["manylinux2014_aarch64"]
TOOLS = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap"}
CROSS_TOOLS = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
CROSS_PACKAGES = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
           *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

_apt_updated = False


def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"aarch64 device: {message}", file=sys.stderr, flush=True)


def which(tool: str) -> str | None:
    """A tool's path, looking in the sbin folders too (debootstrap lives in /usr/sbin)."""
    return shutil.which(tool, path=SBIN_PATH)


def debian_mirror() -> tuple[str, str | None] | None:
    """The Debian archive apt is configured with, and its keyring when the source names one."""
    for source in SOURCES:
        try:
            text = source.read_text()
        except OSError:
            continue
        if source.suffix == ".sources":
            entries = [_deb822(block) for block in text.split("\n\n")]
        else:
            entries = [_one_line(line) for line in text.splitlines()]
        for entry in entries:
            if entry is not None and _is_debian_archive(*entry[:2]):
                return entry[0], entry[2]
    return None


def _deb822(block: str) -> tuple[str, list[str], str | None] | None:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
        return None
    uris = fields.get("uris", "").split()
    if not uris:
        return None
    keyring = fields.get("signed-by")
    return uris[0], fields.get("suites", "").split(), keyring if keyring and keyring.startswith("/") else None


def _one_line(line: str) -> tuple[str, list[str], str | None] | None:
    words = line.split("#", 1)[0].split()
    if not words or words[0] != "deb":
        return None
    words = words[1:]
    keyring = None
    if words and words[0].startswith("["):
        options = []
        while words:
            options.append(words.pop(0))
            if options[-1].endswith("]"):
                break
        for option in " ".join(options).strip("[]").split():
            if option.startswith("signed-by="):
                keyring = option.partition("=")[2]
    return (words[0], words[1:2], keyring) if len(words) >= 2 else None


def _is_debian_archive(uri: str, suites: list[str]) -> bool:
    return "debian" in urlparse(uri).path.split("/") and any("-" not in suite and "/" not in suite for suite in suites)


def needs_tools() -> str | None:
    """Why this machine cannot build or run the device (a pytest skip reason), or None when it can."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the aarch64 emulator is set up for x86_64 Linux hosts, not {platform.system()} {platform.machine()}"
    missing = [package for tool, package in {**TOOLS, **CROSS_TOOLS}.items() if which(tool) is None]
    if missing and which("apt-get") is None:
        return f"needs the Debian packages {', '.join(missing)} and there is no apt-get to install them"
    if missing and os.geteuid() != 0:
        return f"needs the Debian packages {', '.join(missing)}; install them as root (apt-get install)"
    if (not ROOT_MARKER.is_file()) and os.geteuid() != 0:
        return "building the aarch64 root (debootstrap) needs root"
    if not ROOT_MARKER.is_file() and debian_mirror() is None:
        return "no Debian archive among apt's sources to download the aarch64 root from"
    return None


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages with apt-get (its package lists updated once per process)."""
    global _apt_updated
    if which("apt-get") is None:
        raise RuntimeError(f"cannot install {' '.join(packages)}: this machine has no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        log("apt-get update...")
        _run(["apt-get", "update", "-q"], env=env)
        _apt_updated = True
    log(f"apt-get install {' '.join(packages)}...")
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def _ensure_tools(tools: Mapping[str, str], packages: Sequence[str] | None = None) -> dict[str, str]:
    missing = [package for tool, package in tools.items() if which(tool) is None]
    if missing:
        apt_install(packages or missing)
    found = {tool: which(tool) for tool in tools}
    lacking = [tool for tool, path in found.items() if path is None]
    if lacking:
        raise RuntimeError(f"{', '.join(lacking)} still missing after installing {', '.join(missing)}")
    return {tool: str(path) for tool, path in found.items()}


def cross_compiler() -> str:
    """The aarch64 C cross compiler that links TVM's libraries, installed with apt-get when missing."""
    with _cache_lock():
        return _ensure_tools(CROSS_TOOLS, CROSS_PACKAGES)["aarch64-linux-gnu-gcc"]


@dataclass(frozen=True)
class Aarch64Device:
    """A built device: an arm64 root, its site folder of wheels, and the qemu that runs them."""

    root: Path
    site: Path
    qemu: Path

    def command(self, args: Sequence[str | os.PathLike[str]]) -> list[str]:
        """The host command line running the guest's python3.11 with ``args``."""
        return [str(self.qemu), "-L", str(self.root), str(self.root / GUEST_PYTHON), *map(str, args)]

    def environment(self, env: Mapping[str, str] | None = None,
                    extra_paths: Sequence[str | os.PathLike[str]] = ()) -> dict[str, str]:
        """The guest's environment: nothing from the host's but HOME, ``env`` on top, and PYTHONPATH
        made of ``extra_paths``, the locked wheels, then any PYTHONPATH given in ``env``."""
        result = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8",
                  "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        result.update(env or {})
        paths = [*map(str, extra_paths), str(self.site)]
        if env and env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        result["PYTHONPATH"] = os.pathsep.join(paths)
        return result

    def python(self, args: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
               timeout: float = 600, extra_paths: Sequence[str | os.PathLike[str]] = (),
               cwd: str | os.PathLike[str] | None = None, input: str | None = None,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the guest's Python to completion, its output captured as text."""
        return subprocess.run(self.command(args), env=self.environment(env, extra_paths), cwd=cwd, input=input,
                              capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, args: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
              extra_paths: Sequence[str | os.PathLike[str]] = (), cwd: str | os.PathLike[str] | None = None,
              **kwargs: Any) -> subprocess.Popen[str]:
        """Start the guest's Python and return at once (for a server); ``kwargs`` go to Popen, text mode
        by default. It is one host process: terminating it ends the guest program."""
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.command(args), env=self.environment(env, extra_paths), cwd=cwd, **kwargs)

    def machine(self) -> str:
        """platform.machine() as the guest sees it ("aarch64")."""
        done = self.python(["-c", "import platform; print(platform.machine())"], timeout=120, check=True)
        return done.stdout.strip()


def ensure_device() -> Aarch64Device:
    """The device, built into CACHE the first time (a few minutes); later calls only check two markers."""
    qemu = which("qemu-aarch64-static")
    if qemu and _root_ready() and _site_ready():
        return Aarch64Device(ROOT, SITE, Path(qemu))
    started = time.monotonic()
    with _cache_lock():
        tools = _ensure_tools(TOOLS)
        if not _root_ready():
            _build_root(tools["debootstrap"])
        if not _site_ready():
            _build_site()
    log(f"ready in {time.monotonic() - started:.0f} s: {CACHE} ({_size_mb(CACHE)} MB)")
    return Aarch64Device(ROOT, SITE, Path(tools["qemu-aarch64-static"]))


def _lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def _root_ready() -> bool:
    return ROOT_MARKER.is_file() and (ROOT / GUEST_PYTHON).is_file()


def _site_ready() -> bool:
    try:
        return SITE.is_dir() and SITE_MARKER.read_text().split("\n", 1)[0] == _lock_digest()
    except OSError:
        return False


def _cache_lock() -> AbstractContextManager[None]:
    """Serialise builders (parallel test workers) on a lock file in CACHE."""
    return exclusive(CACHE / ".lock")


@contextmanager
def _staging(name: str) -> Iterator[Path]:
    """A fresh folder in CACHE to build ``name`` in, removed afterwards (with any left by an interrupted build)."""
    for stale in CACHE.glob(f".{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _install(built: Path, target: Path, marker: Path, note: str) -> None:
    """Swap a built folder into place, then write its marker: no marker, no trusted folder."""
    marker.unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)
    partial = marker.with_suffix(".tmp")
    partial.write_text(note)
    partial.replace(marker)


def _build_root(debootstrap: str) -> None:
    found = debian_mirror()
    if found is None:
        raise RuntimeError("no Debian archive among apt's sources (/etc/apt/sources.list*) to fetch the root from")
    mirror, keyring = found
    with _staging("root") as stage:
        root = stage / "root"
        log(f"downloading root (debootstrap --foreign {SUITE} arm64 from {mirror})...")
        command = [debootstrap, "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3"]
        if keyring and Path(keyring).is_file():
            command.append(f"--keyring={keyring}")
        _run([*command, SUITE, str(root), mirror], log_file=stage / "debootstrap.log")
        archives = sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        log(f"unpacking {len(archives)} packages...")
        for deb in archives:
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        if not (root / GUEST_PYTHON).is_file():
            raise RuntimeError(f"the unpacked root has no {GUEST_PYTHON}")
        for deb in archives:
            deb.unlink()
        _precompile(root / "usr" / "lib" / "python3.11")
        note = "\n".join([SUITE, mirror, *(deb.name for deb in archives)]) + "\n"
        _install(root, ROOT, ROOT_MARKER, note)


def _build_site() -> None:
    digest = _lock_digest()
    with _staging("site") as stage:
        wheels, site = stage / "wheels", stage / "site"
        log(f"downloading wheels ({LOCK.name})...")
        platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--require-hashes",
              "--only-binary=:all:", "--no-deps", *platforms, "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", "-r", str(LOCK), "-d", str(wheels)])
        names = sorted(wheel.name for wheel in wheels.glob("*.whl"))
        log(f"unpacking {len(names)} wheels...")
        for name in names:
            _unpack_wheel(wheels / name, site)
        _precompile(site)
        _install(site, SITE, SITE_MARKER, "\n".join([digest, *names]) + "\n")


def _unpack_wheel(wheel: Path, site: Path) -> None:
    """Unzip a wheel as an installer would place its importable files (``*.data/purelib|platlib`` merged in)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for data in site.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            if (data / scheme).is_dir():
                shutil.copytree(data / scheme, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def _precompile(folder: Path) -> None:
    """Write .pyc files ahead (with the host's Python when it is 3.11 too: same bytecode), since every
    module compiled under emulation costs seconds and the guest runs with PYTHONDONTWRITEBYTECODE."""
    if sys.version_info[:2] == (3, 11) and folder.is_dir():
        compileall.compile_dir(folder, quiet=2, workers=0)


def _run(command: Sequence[str], env: Mapping[str, str] | None = None, log_file: Path | None = None) -> None:
    """Run a build step; on failure, raise with the end of its output."""
    done = subprocess.run(list(command), env=env, capture_output=True, text=True)
    if log_file is not None:
        log_file.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(command[:3])}... exited with {done.returncode}:\n{tail}")


def _size_mb(folder: Path) -> int:
    total = sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return total // 2**20
