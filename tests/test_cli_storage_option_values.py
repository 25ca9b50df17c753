"""``--storage-option KEY=VALUE``: which values are JSON.  Only a URL prefix (and obstore's
dict-valued ``default_headers``) takes a JSON object; every other value stays the string
obstore expects, a JSON ``service_account_key`` included."""

from __future__ import annotations

import json

import pytest
from obstore.exceptions import GenericError
from obstore.store import GCSStore

from zarr_manifest.cli import _parser, storage_options_from_args

KEY = json.dumps(
    {
        "type": "service_account",
        "client_email": "reader@project.iam.gserviceaccount.com",
        "private_key": "not a key",
        "private_key_id": "1",
    }
)


def parse(*options: str) -> dict[str, object]:
    argv = ["info", "x", *(f"--storage-option={o}" for o in options)]
    return storage_options_from_args(_parser().parse_args(argv))


def test_plain_value_stays_a_string() -> None:
    # the default: KEY=VALUE gives the string, digits and "true" included
    assert parse("region=eu-west-1", "secret_access_key=0123", "skip_signature=true") == {
        "region": "eu-west-1",
        "secret_access_key": "0123",
        "skip_signature": "true",
    }


def test_json_service_account_key_stays_a_string() -> None:
    options = parse(f"service_account_key={KEY}", "client_options.user_agent=[me]")
    assert options == {"service_account_key": KEY, "client_options": {"user_agent": "[me]"}}
    # obstore takes the string and reads the key itself (a dict was a TypeError); this
    # made-up key is then refused as a PEM
    with pytest.raises(GenericError, match="pem"):
        GCSStore("bucket", **options)  # type: ignore[arg-type]


def test_url_prefix_and_default_headers_take_json_objects() -> None:
    options = parse(
        's3://other/={"region": "us-east-1"}',
        'client_options.default_headers={"x-user": "me"}',
    )
    assert options == {
        "s3://other/": {"region": "us-east-1"},
        "client_options": {"default_headers": {"x-user": "me"}},
    }


@pytest.mark.parametrize("value", ["eu-west-1", '["a"]', "{not json"])
def test_url_prefix_value_must_be_a_json_object(value: str) -> None:
    with pytest.raises(ValueError, match="s3://other/"):
        parse(f"s3://other/={value}")
