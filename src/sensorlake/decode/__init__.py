"""Codecs: raw envelopes from the log -> readings (and rejects)."""

from sensorlake.decode.base import CODECS, Codec, decode, get_codec, register_codec

__all__ = ["CODECS", "Codec", "decode", "get_codec", "register_codec"]
