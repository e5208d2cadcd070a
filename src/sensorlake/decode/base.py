"""The codec registry. A codec turns a table of log entries (one codec name) into a Batch.

Built-in codecs register themselves exactly like plugins do: `register_codec(MyCodec())`.
Per-message Python work is allowed here (parsing bytes); everything after decoding is batched.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.errors import ConfigError
from sensorlake.process.base import REJECT_SCHEMA, WORKING_SCHEMA, Batch


@runtime_checkable
class Codec(Protocol):
    name: str

    def decode(self, entries: pa.Table) -> Batch:
        """entries has LOG_ENTRY_SCHEMA; returns readings (WORKING_SCHEMA) and rejects."""
        ...


CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> Codec:
    CODECS[codec.name] = codec
    return codec


def get_codec(name: str) -> Codec:
    _load_builtins()
    try:
        return CODECS[name]
    except KeyError:
        valid = ", ".join(sorted(CODECS)) or "(none)"
        raise ConfigError(f"unknown codec '{name}'; valid codecs: {valid}") from None


def _load_builtins() -> None:
    from sensorlake.decode import (  # noqa: F401  (built-in codecs register themselves)
        airrohr,
        cayenne_lpp,
        chirpstack,
        envelope,
        lineprotocol,
        python_codec,
        sensor_community,
        tts,
    )


def decode(entries: pa.Table) -> Batch:
    """Decode a log batch that may mix codecs; unknown codecs become rejects."""
    _load_builtins()
    if entries.num_rows == 0:
        return Batch()
    names = pc.unique(entries.column("codec")).to_pylist()
    if len(names) == 1 and names[0] in CODECS:
        return CODECS[names[0]].decode(entries)
    readings: list[pa.Table] = []
    rejects: list[pa.Table] = []
    for name in names:
        part = entries.filter(pc.equal(entries.column("codec"), name))
        if name in CODECS:
            batch = CODECS[name].decode(part)
            readings.append(batch.readings)
            rejects.append(batch.rejects)
        else:
            valid = ", ".join(sorted(CODECS))
            rejects.append(pa.table({
                "msg_id": part.column("msg_id"), "tenant": part.column("tenant"),
                "device_id": part.column("device_id"),
                "stage": pa.repeat("decode", part.num_rows),
                "field": pa.nulls(part.num_rows, pa.string()),
                "value": pa.repeat(name, part.num_rows),
                "reason": pa.repeat(f"unknown codec '{name}'; valid codecs: {valid}",
                                    part.num_rows),
            }, schema=REJECT_SCHEMA))
    return Batch(
        pa.concat_tables(readings) if readings else WORKING_SCHEMA.empty_table(),
        pa.concat_tables(rejects) if rejects else REJECT_SCHEMA.empty_table(),
    )
