"""Build the speed layer's Lambda zip (``tally package lambda``).

The zip holds the ``streaming`` package and the handler's dependencies as manylinux2014 wheels for the
chosen architecture (``pip install --platform ... --only-binary=:all: --python-version 3.11``), so it
runs on Lambda's ``python3.11`` runtime (Amazon Linux 2, glibc 2.26). The C extension
(``streaming.speed._native``: the record scanner, its fold and the payload encoder) is compiled when this machine can make it for
the target (same architecture, a C compiler, Python 3.11) and it needs no glibc newer than 2.26;
otherwise the zip takes the pure-Python path (``streaming.speed.aggregate``'s reference fold: the same
counts, more CPU per event), and says so. An x86_64 machine cannot build the arm64 extension without a
cross compiler.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from streaming.settings import SettingError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streaming"
RUNTIME = "python3.11"
PYTHON_VERSION = "3.11"
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
#: What ``streaming.speed.lambda_handler`` imports beyond the standard library (numpy is optional there:
#: its pinned version has no manylinux2014 wheel; botocore is not needed at all). prometheus-client: the
#: consumer's module defines its metrics at import (a Lambda never serves them; Lambda reports its own).
REQUIREMENTS = ("msgspec", "redis", "hiredis", "PyYAML", "prometheus-client")
#: Lambda's python3.11 runs on Amazon Linux 2.
RUNTIME_GLIBC = (2, 26)
UNZIPPED_LIMIT = 262_144_000  # 250 MB, the function and its layers unpacked
ZIPPED_DIRECT_LIMIT = 52_428_800  # 50 MB, a zip uploaded directly (larger ones go through S3)
MANIFEST = "tally-lambda.json"
_SKIP_DIRS = {"__pycache__", "stack", "warehouse"}
_SKIP_SUFFIXES = {".so", ".c", ".h", ".pyc", ".pyd", ".o"}


@dataclass(frozen=True)
class LambdaZip:
    path: str
    architecture: str
    handler: str
    runtime: str
    c_extension: bool
    why: str
    requirements: dict[str, str]
    zipped_bytes: int
    unzipped_bytes: int
    files: int

    @property
    def fits_direct_upload(self) -> bool:
        return self.zipped_bytes <= ZIPPED_DIRECT_LIMIT

    @property
    def fits_unzipped(self) -> bool:
        return self.unzipped_bytes <= UNZIPPED_LIMIT


def _pins() -> dict[str, str]:
    """The versions installed here (the ones tested; constraints.txt pins the same)."""
    return {name: importlib.metadata.version(name) for name in REQUIREMENTS}


def _pip_install(site: Path, architecture: str, pins: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--target", str(site), "--platform", PLATFORMS[architecture], "--implementation", "cp",
           "--python-version", PYTHON_VERSION, "--only-binary=:all:", *(f"{n}=={v}" for n, v in pins.items())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise SettingError("--arch", architecture, f"has no installable wheels here ({last})",
                           "check that PyPI is reachable (pip's proxy settings) and that every requirement has a "
                           f"{PLATFORMS[architecture]} cp311 wheel")


def _glibc_needed(so: Path) -> tuple[int, int] | None:
    """The newest GLIBC_x.y symbol version the library needs (objdump), or None if it cannot tell."""
    objdump = shutil.which("objdump")
    if not objdump:
        return None
    out = subprocess.run([objdump, "-T", str(so)], capture_output=True, text=True, timeout=60).stdout
    versions = [tuple(int(x) for x in m.groups()) for m in re.finditer(r"GLIBC_(\d+)\.(\d+)", out)]
    return max(versions, default=(2, 0))  # type: ignore[return-value]


def _build_extension(out: Path, architecture: str) -> tuple[bool, str]:
    """Compile streaming.speed._native into ``out`` (the zip's root) when it will run on the target."""
    host = MACHINES.get(platform.machine().lower())
    if host != architecture:
        return False, (f"pure-Python path: this machine is {platform.machine()} and cannot compile the C extension for "
                       f"{architecture} without a cross compiler (same counts, more CPU per event)")
    if sys.version_info[:2] != (3, 11):
        return False, f"pure-Python path: the C extension must be compiled by Python 3.11, this is {platform.python_version()}"
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not compiler:
        return False, "pure-Python path: no C compiler on this machine"
    with tempfile.TemporaryDirectory() as tmp:
        script = (
            "from setuptools import Extension, setup\n"
            "setup(name='tally-native', script_args=['build_ext', '--build-lib', {lib!r}, '--build-temp', {tmp!r}],\n"
            "      ext_modules=[Extension('streaming.speed._native', [{payload!r}, {scan!r}], depends=[{h!r}])])\n"
        ).format(lib=str(out), tmp=tmp, payload=str(PACKAGE / "speed" / "_payload.c"), scan=str(PACKAGE / "speed" / "_scan.c"),
                 h=str(PACKAGE / "speed" / "_native.h"))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp, timeout=600)
    built = sorted((out / "streaming" / "speed").glob("_native*.so"))
    if proc.returncode != 0 or not built:
        return False, f"pure-Python path: compiling the C extension failed ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    needed = _glibc_needed(built[0])
    if needed is None:
        built[0].unlink()
        return False, "pure-Python path: objdump is missing, so the extension's glibc needs cannot be checked against Lambda's 2.26"
    if needed > RUNTIME_GLIBC:
        built[0].unlink()
        return False, (f"pure-Python path: the extension built here needs glibc {needed[0]}.{needed[1]}, newer than Lambda "
                       f"python3.11's {RUNTIME_GLIBC[0]}.{RUNTIME_GLIBC[1]}")
    return True, (f"C extension compiled here for {architecture} ({built[0].name}; needs glibc {needed[0]}.{needed[1]}, "
                  f"Lambda python3.11 has {RUNTIME_GLIBC[0]}.{RUNTIME_GLIBC[1]})")


def _copy_package(root: Path) -> None:
    for src in sorted(PACKAGE.rglob("*")):
        rel = src.relative_to(PACKAGE)
        if src.is_dir() or _SKIP_DIRS & set(rel.parts) or src.suffix in _SKIP_SUFFIXES:
            continue
        dst = root / "streaming" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _zip(root: Path, path: Path) -> tuple[int, int]:
    """A reproducible zip of ``root``: sorted entries, fixed timestamps and modes. (files, unzipped bytes)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    total = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for f in files:
            info = zipfile.ZipInfo(f.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((0o755 if f.suffix == ".so" else 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = f.read_bytes()
            total += len(data)
            zf.writestr(info, data, compresslevel=9)
    return len(files), total


def build(architecture: str, out: Path) -> LambdaZip:
    """Build the zip at ``out`` for ``architecture`` (``x86_64`` or ``arm64``)."""
    if architecture not in PLATFORMS:
        raise SettingError("--arch", architecture, "is not a Lambda architecture", "use x86_64 or arm64")
    pins = _pins()
    with tempfile.TemporaryDirectory(prefix="tally-lambda-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _pip_install(root, architecture, pins)
        for junk in ("bin",):
            shutil.rmtree(root / junk, ignore_errors=True)
        _copy_package(root)
        c_extension, why = _build_extension(root, architecture)
        result = LambdaZip(path=str(out), architecture=architecture, handler="streaming.speed.lambda_handler.handler",
                           runtime=RUNTIME, c_extension=c_extension, why=why, requirements=pins,
                           zipped_bytes=0, unzipped_bytes=0, files=0)
        (root / MANIFEST).write_text(json.dumps({k: v for k, v in asdict(result).items()
                                                 if k not in ("path", "zipped_bytes", "unzipped_bytes", "files")}, indent=2))
        files, unzipped = _zip(root, out)
    return LambdaZip(**{**asdict(result), "zipped_bytes": out.stat().st_size, "unzipped_bytes": unzipped, "files": files})
