"""In-memory backends for fast tests and plugin authors: the same protocols and semantics as
the real ones (the contract suites in tests/contract/ run both), nothing on disk.

    from sensorlake.testing import MemoryLog, MemoryStore, MemoryQuarantine
"""

from sensorlake.log.memory import MemoryLog
from sensorlake.store.memory import MemoryQuarantine, MemoryStore

__all__ = ["MemoryLog", "MemoryQuarantine", "MemoryStore"]
