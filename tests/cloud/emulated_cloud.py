"""One emulated cloud (S3 on moto, Azure Blob on Azurite, GCS on fake-gcs-server) as the
tests in this folder use it; the `cloud` fixture (conftest.py) gives each in turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Cloud:
    """One emulated cloud: where to put files and how to reach them."""

    scheme: str
    bucket: str
    storage_options: dict[str, Any]
    upload_dir: Callable[[Path, str, str], list[str]]

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.bucket}/{path}"
