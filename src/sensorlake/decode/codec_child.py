"""The child process that runs user Python codecs (started by `python_codec.CodecRunner`).

Run as a script (`python -I codec_child.py REQ_FD RESP_FD PARENT_PID`), it imports nothing from
sensorlake. Frames on both pipes are a 4-byte big-endian length and a JSON document:

    request   {"path": "/codecs/elsys.py",
               "items": [{"payload": "<hex>", "f_port": 5, "variables": {}}, ...]}
    responses one per item, in order, each written as soon as that item is done:
              {"ok": <whatever decode_uplink returned>} or {"error": "ValueError: ... (line 7)"}

A codec that raises (even SystemExit) answers an error; one that hangs or crashes is killed by
the parent, which starts a new child for the next message.
"""

import importlib.util
import json
import os
import struct
import sys
import traceback


def read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_frame(fd, body):
    data = struct.pack(">I", len(body)) + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


def load(path, modules):
    stamp = os.stat(path).st_mtime_ns
    cached = modules.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    spec = importlib.util.spec_from_file_location(f"sensorlake_codec_{len(modules)}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, "decode_uplink", None)
    if not callable(function):
        raise AttributeError(f"{os.path.basename(path)} defines no decode_uplink(payload, "
                             "f_port, variables) function")
    modules[path] = (stamp, function)
    return function


def describe(exc, path):
    text = f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    if frames:
        text += f" ({os.path.basename(path)} line {frames[-1].lineno})"
    return text


def die_with_parent(parent):
    """Linux: get SIGKILL when the parent dies, so a hung codec never outlives a killed
    sensorlake (elsewhere the parent's kill on timeout is the only stop). A parent that died
    before this ran is noticed by the changed parent pid."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(0)


def main():
    request_fd, response_fd = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(int(sys.argv[3]))
    sys.stdout = sys.stderr
    modules = {}
    while True:
        header = read_exact(request_fd, 4)
        if header is None:
            return
        body = read_exact(request_fd, struct.unpack(">I", header)[0])
        if body is None:
            return
        request = json.loads(body)
        path = request["path"]
        for item in request["items"]:
            try:
                function = load(path, modules)
                result = function(bytes.fromhex(item["payload"]), item["f_port"],
                                  dict(item["variables"]))
                answer = json.dumps({"ok": result}, allow_nan=True)
            except BaseException as exc:  # a codec must never take the child down silently
                answer = json.dumps({"error": describe(exc, path)})
            write_frame(response_fd, answer.encode())


if __name__ == "__main__":
    main()
