"""The `cloud` fixture: each of the three emulated clouds in turn, with a fresh bucket."""

from __future__ import annotations

import uuid

import pytest
from emulated_cloud import Cloud


@pytest.fixture(params=["s3", "az", "gs"])
def cloud(request: pytest.FixtureRequest) -> Cloud:
    """A fresh bucket (container) on one of the three emulators, with its options."""
    server_fixture = {"s3": "s3_server", "az": "azurite_server", "gs": "gcs_server"}
    server = request.getfixturevalue(server_fixture[request.param])
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    if request.param == "az":
        server.create_container(bucket)
    else:
        server.create_bucket(bucket)
    return Cloud(
        request.param,
        bucket,
        server.obstore_config(),
        lambda root, bucket, prefix: server.upload_dir(root, bucket, prefix),
    )
