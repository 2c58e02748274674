"""An S3-compatible server for a test module: moto's, on 127.0.0.1 and a free port, with test
credentials in the environment for as long as it runs. Imported by the modules that use it (the
fixtures by name, as ``browser``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "healthetl-test",
    "AWS_SECRET_ACCESS_KEY": "healthetl-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def credentials() -> Iterator[None]:
    """The test credentials in ``os.environ`` (processes started meanwhile inherit them), the
    values before put back afterwards."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """An S3-compatible server for this module, on 127.0.0.1 and a free port."""
    moto_server = pytest.importorskip("moto.server")
    with credentials():
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{server._server.server_port}"
        finally:
            server.stop()


@pytest.fixture
def s3(endpoint: str):  # type: ignore[no-untyped-def]
    boto3 = pytest.importorskip("boto3")
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"b-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def upload(s3, folder: Path, bucket: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Every file under ``folder`` to ``bucket``, under ``prefix`` and its path in the folder."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
