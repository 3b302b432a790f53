"""Fixtures shared by tests/ and benches/."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

TIKTOKEN_ENCODINGS_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def prepare_tiktoken_cache(directory: Path) -> Path:
    """Fill `directory` so tiktoken loads o200k_base/cl100k_base from it without a network.

    tiktoken looks in $TIKTOKEN_CACHE_DIR for a file named by the sha1 hex of the rank file's
    download URL; the bpe-openai package ships the same rank files gzipped.
    """
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or spec.origin is None:
        raise RuntimeError("the bpe-openai package (source of the rank files) is not installed")
    data = Path(spec.origin).parent / "data"
    for name in ("o200k_base", "cl100k_base"):
        url = TIKTOKEN_ENCODINGS_URL.format(name=name)
        target = directory / hashlib.sha1(url.encode()).hexdigest()
        target.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
    return directory


@pytest.fixture(scope="session")
def offline_tiktoken(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The tiktoken module, able to load o200k_base and cl100k_base offline."""
    import tiktoken
    directory = prepare_tiktoken_cache(tmp_path_factory.mktemp("tiktoken-cache"))
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    try:
        # Load both now, while the variable points at our files.
        tiktoken.get_encoding("o200k_base")
        tiktoken.get_encoding("cl100k_base")
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
    return tiktoken
