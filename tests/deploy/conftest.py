"""Deploy fixtures: the speed layer's Lambda zip, built once per session from manylinux wheels (PyPI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.deploy.lambda_zip import LambdaZip, build


@pytest.fixture(scope="session")
def x86_64_zip(tmp_path_factory: pytest.TempPathFactory) -> LambdaZip:
    return build("x86_64", tmp_path_factory.mktemp("lambda") / "tally-speed-x86_64.zip")


def unpack(zip_path: str, into: Path) -> Path:
    import zipfile

    into.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(into)
    return into
