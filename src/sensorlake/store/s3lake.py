"""The lake on any S3-compatible store: the same layout, files and names as the local lake.

Keys: `<prefix><dataset>/date=YYYY-MM-DD/hour=HH/part-<first>-<last>.parquet`. An object is
written only if absent: a HEAD first (no upload when it exists), then a PUT with
`If-None-Match: *`, which the store refuses (412) when another writer got there first - so
a retried or resumed span never replaces, let alone duplicates, a file. A PUT is atomic on
S3: readers see the whole object or none, so no temp files are needed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sensorlake.config import LakeSettings, S3Settings
from sensorlake.errors import SinkUnavailable
from sensorlake.log.base import Span
from sensorlake.model import READING_SCHEMA
from sensorlake.store.lake import (
    Dataset,
    ParquetLake,
    _conform,
    _hour_index,
    _split_by_hour,
    file_name,
    partition_dir,
)

EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def s3_client(settings: S3Settings) -> Any:
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key \
        else None
    return boto3.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
        aws_access_key_id=settings.access_key_id, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                      read_timeout=30))


class S3Lake(ParquetLake):
    """Lake protocol on an S3 bucket (the Parquet options are the local lake's)."""

    def __init__(self, settings: S3Settings, lake: LakeSettings | None = None,
                 client: Any = None) -> None:
        if not settings.bucket:
            raise ValueError("S3Lake needs s3.bucket")
        lake = lake or LakeSettings()
        self.compression, self.compression_level = lake.compression, lake.compression_level
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self.root = PurePosixPath(f"/{self.bucket}/{self.prefix}")  # type: ignore[assignment]
        self.client = client or s3_client(settings)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _key(self, dataset: str, hour: int, name: str) -> str:
        folder = partition_dir(PurePosixPath("."), dataset, hour)  # type: ignore[arg-type]
        return f"{self.prefix}{folder.as_posix().removeprefix('./')}/{name}"

    def write_span(self, dataset: Dataset, span: Span, table: pa.Table) -> list[str]:
        """One object per (date, hour) of `table`, named by `span`, created only if absent."""
        table = _conform(dataset, table)
        if table.num_rows == 0:
            return []
        written = []
        for hour, part in _split_by_hour(dataset, table):
            key = self._key(dataset, hour, file_name(span))
            if not self._exists(key):
                self._put_if_absent(key, self._encode(dataset, part))
            written.append(self.url(key))
        return written

    def _encode(self, dataset: Dataset, table: pa.Table) -> bytes:
        out = io.BytesIO()
        pq.write_table(table, out, **self._options(dataset, table))  # type: ignore[arg-type]
        return out.getvalue()

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._unavailable("HEAD", key, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("HEAD", key, exc) from exc

    def _put_if_absent(self, key: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in EXISTS:
                return  # another writer created it first: theirs stays
            raise self._unavailable("PUT", key, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("PUT", key, exc) from exc

    def _unavailable(self, what: str, key: str, exc: Exception) -> SinkUnavailable:
        return SinkUnavailable(f"lake {what} s3://{self.bucket}/{key} failed ({exc}); check "
                               "s3.endpoint_url, s3.bucket and the credentials - will retry")

    # -- reading -----------------------------------------------------------------------------

    def glob(self, dataset: Dataset) -> str:
        return f"s3://{self.bucket}/{self.prefix}{dataset}/*/*/*.parquet"

    def _list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("LIST", prefix, exc) from exc

    def files(self, dataset: Dataset, start: datetime | None = None,
              end: datetime | None = None) -> list[str]:
        """Objects of the partitions that can hold rows in [start, end)."""
        lo = _hour_index(start) if start is not None else None
        hi = _hour_index(end - timedelta(microseconds=1)) if end is not None else None
        base = f"{self.prefix}{dataset}/"
        if lo is None or hi is None or hi - lo > 24 * 62:
            keys = self._list(base)
        else:
            days = range(lo // 24, hi // 24 + 1)
            keys = (k for d in days for k in self._list(
                f"{base}date={date(1970, 1, 1) + timedelta(days=d):%Y-%m-%d}/"))
        out = []
        for key in keys:
            parts = key[len(base):].split("/")
            if len(parts) != 3 or not parts[2].endswith(".parquet"):
                continue
            try:
                day = (date.fromisoformat(parts[0].removeprefix("date=")) - date(1970, 1, 1)).days
                hour = day * 24 + int(parts[1].removeprefix("hour="))
            except ValueError:
                continue
            if (lo is None or hour >= lo) and (hi is None or hour <= hi):
                out.append(self.url(key))
        return sorted(out)

    def read_files(self, files: list[str]) -> pa.Table:
        """READING_SCHEMA rows of `files` (s3:// URLs from `files`)."""
        tables = []
        for url in files:
            key = url.removeprefix(f"s3://{self.bucket}/")
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise self._unavailable("GET", key, exc) from exc
            tables.append(pq.read_table(io.BytesIO(body)).select(READING_SCHEMA.names)
                          .cast(READING_SCHEMA))
        return pa.concat_tables(tables) if tables else READING_SCHEMA.empty_table()

    def clean_temp(self, max_age: float = 0) -> int:
        return 0  # PUTs are atomic: there are no temp objects
