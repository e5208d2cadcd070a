"""Per-device-type Python codecs (`python`): `<codecs.folder>/<device type>.py` defining

    def decode_uplink(payload: bytes, f_port: int, variables: dict) -> dict

returning {"metric": number, ...} (nested objects are flattened with dots and named through
the type's `fields` map) or The Things Stack's shape {"data": {...}, "errors": [...]}.
`variables` is the type's `variables` merged with the device's tags.

The code runs in a separate Python process (`codec_child.py`), one message at a time, with
`codecs.time_limit_seconds` per message: a codec that raises, returns something unusable,
hangs or crashes the interpreter costs that message (quarantined with the reason) and, at
worst, a restart of the child; it never stops the worker.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sensorlake.decode.base import register_codec
from sensorlake.decode.context import CodecContext, DeviceInfo
from sensorlake.decode.payload import (
    Decoded,
    RawPayloadCodec,
    object_values,
    register_payload_codec,
)
from sensorlake.errors import DecodeError

CHILD = Path(__file__).with_name("codec_child.py")
TYPE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_RESPONSE = 1 << 20
BATCH = 256


class CodecRunner:
    """One child interpreter, used by one caller at a time, restarted when it misbehaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._request_fd = -1
        self._response_fd = -1

    def _start(self) -> None:
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD), str(child_read), str(child_write),
                 str(os.getpid())],
                pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(child_read)
            os.close(child_write)
        self._request_fd, self._response_fd = parent_write, parent_read

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        for fd in (self._request_fd, self._response_fd):
            if fd >= 0:
                os.close(fd)
        self._request_fd = self._response_fd = -1

    def close(self) -> None:
        with self._lock:
            self._stop()

    def call_many(self, path: Path, items: list[tuple[bytes, int, dict[str, str]]],
                  time_limit: float) -> list[Any]:
        """What decode_uplink returned for each (payload, f_port, variables), or a
        DecodeError in its place when it raised, hung (`time_limit` per item) or crashed."""
        results: list[Any] = []
        pending = list(items)
        while pending:
            chunk, pending = pending[:BATCH], pending[BATCH:]
            done = self._run(path, chunk, time_limit)
            results += done
            if len(done) < len(chunk):
                pending = chunk[len(done):] + pending
        return results

    def _run(self, path: Path, items: list[tuple[bytes, int, dict[str, str]]],
             time_limit: float) -> list[Any]:
        """Results for a prefix of `items`: all of them, or up to and including the one
        that hung or crashed the child (which is then stopped)."""
        request = json.dumps({"path": str(path), "items": [
            {"payload": payload.hex(), "f_port": f_port, "variables": variables}
            for payload, f_port, variables in items]}).encode()
        results: list[Any] = []
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            try:
                try:
                    self._send(request)
                except OSError:  # the child died since the last batch: start another
                    self._stop()
                    self._start()
                    self._send(request)
                for _ in items:
                    answer = self._read_frame(time.monotonic() + time_limit)
                    results.append(DecodeError(str(answer["error"])) if "error" in answer
                                   else answer.get("ok"))
            except TimeoutError:
                self._stop()
                results.append(DecodeError(f"did not return within {time_limit:g} s "
                                           "(codecs.time_limit_seconds); it was stopped"))
            except (OSError, EOFError, ValueError) as exc:
                code = self._proc.poll() if self._proc else None
                self._stop()
                results.append(DecodeError(f"the codec process died (exit code {code}): "
                                           f"{exc}"))
        return results

    def _send(self, request: bytes) -> None:
        data = struct.pack(">I", len(request)) + request
        while data:
            data = data[os.write(self._request_fd, data):]

    def _read_frame(self, deadline: float) -> dict[str, Any]:
        header = self._read(4, deadline)
        size = struct.unpack(">I", header)[0]
        if size > MAX_RESPONSE:
            raise ValueError(f"codec answer of {size} bytes is over {MAX_RESPONSE}")
        return json.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._response_fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._response_fd, size)
            if not chunk:
                raise EOFError("no answer")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


_runner = CodecRunner()
atexit.register(_runner.close)


def close_python_codecs() -> None:
    """Stop the codec child process (it restarts on the next message)."""
    _runner.close()


def codec_file(ctx: CodecContext, device_type: str) -> Path:
    if not TYPE_NAME.match(device_type):
        raise DecodeError(f"device type '{device_type}' cannot name a codec file (letters, "
                          "digits, ._- only)")
    folder = ctx.settings.codecs.folder
    if not folder.is_absolute():
        folder = ctx.settings.data_dir / folder
    return folder / f"{device_type}.py"


def result_values(result: Any, fields: dict[str, str]) -> Decoded:
    """The values of what decode_uplink returned (plain dict or TTS-style data/errors)."""
    if isinstance(result, dict) and "data" in result and set(result) <= {
            "data", "errors", "warnings"}:
        errors = result.get("errors") or []
        if errors:
            raise DecodeError(f"the codec reported errors: {errors}")
        result = result["data"]
    if not isinstance(result, dict):
        raise DecodeError(f"decode_uplink returned {type(result).__name__}, expected a dict "
                          "of metric: number")
    return object_values(result, fields)


class PythonPayload:
    name = "python"

    def decode_payload(self, payload: bytes, f_port: int, device: DeviceInfo,
                       ctx: CodecContext) -> Decoded:
        result = self.decode_many([(payload, f_port, device)], ctx)[0]
        if isinstance(result, DecodeError):
            raise result
        return result

    def decode_many(self, items: list[tuple[bytes, int, DeviceInfo]], ctx: CodecContext
                    ) -> list[Decoded | DecodeError]:
        """One child round trip per codec file for a whole batch of payloads."""
        results: list[Decoded | DecodeError | None] = [None] * len(items)
        by_type: dict[str, list[int]] = {}
        for position, (_, _, device) in enumerate(items):
            by_type.setdefault(device.type, []).append(position)
        for type_name, positions in by_type.items():
            try:
                path = codec_file(ctx, type_name)
                if not path.is_file():
                    raise DecodeError(f"no codec file {path}: create it with a "
                                      "decode_uplink(payload, f_port, variables) function")
            except DecodeError as exc:
                for position in positions:
                    results[position] = exc
                continue
            device_type = ctx.device_type(type_name)
            calls = [(items[p][0], items[p][1], {**device_type.variables, **items[p][2].tags})
                     for p in positions]
            answers = _runner.call_many(path, calls, ctx.settings.codecs.time_limit_seconds)
            for position, answer in zip(positions, answers, strict=True):
                if isinstance(answer, DecodeError):
                    results[position] = answer
                    continue
                try:
                    results[position] = result_values(answer, device_type.fields)
                except DecodeError as exc:
                    results[position] = exc
        return [r if r is not None else DecodeError("not decoded") for r in results]


register_payload_codec(PythonPayload())
register_codec(RawPayloadCodec(PythonPayload()))
