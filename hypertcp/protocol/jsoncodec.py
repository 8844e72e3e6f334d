"""
The project's JSON, chosen in this one place.

orjson is the default: on the same C{hypertcp bench} runs it moves about 17%
more messages per server CPU-second than ujson and 40% more than the
standard library (docs/performance.rst), and it is the strictest -- NaN,
Infinity, numbers beyond a double and lone surrogates are refused on the
way in.  Where orjson has no wheel (32-bit ARM gateways, for example)
setup.cfg installs ujson instead, and this module wraps it to the same
contract: what ujson reads but JSON forbids (NaN, Infinity, lone
surrogates) it refuses to write, so it can never be relayed.  Set
C{HYPERTCP_JSON=ujson} to choose it where both are installed.

Integers beyond 64 bits are read as floats by orjson (RFC 8259 section 6
allows it; no device can hold them anyway).
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Union

BACKENDS = ("orjson", "ujson")

Loads = Callable[[Union[bytes, str]], Any]
Dumps = Callable[[Any], bytes]


class EncodeError(TypeError):
    """What the ujson backend raises for a value JSON cannot carry (NaN, a lone surrogate)."""


class Codec(NamedTuple):
    """
    One backend: C{loads} takes UTF-8 bytes or text and raises a ValueError
    for anything that is not JSON; C{dumps} returns compact UTF-8 bytes with
    non-ASCII characters and "/" unescaped (the smallest frame, and what the
    sketch's ArduinoJson reads) and raises a TypeError for what JSON cannot
    carry (but orjson writes NaN and the infinities as null, which its
    C{loads} never returns anyway).
    """

    name: str
    loads: Loads
    dumps: Dumps
    encode_error: type


def _orjson() -> Codec:
    import orjson
    return Codec("orjson", orjson.loads, orjson.dumps, orjson.JSONEncodeError)


def _ujson() -> Codec:
    import ujson

    encode = ujson.dumps

    def dumps(value: Any) -> bytes:
        try:
            return encode(value, ensure_ascii=False, escape_forward_slashes=False,
                          allow_nan=False, reject_bytes=True).encode("utf-8")
        except (OverflowError, ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
            raise EncodeError(str(e)) from None

    return Codec("ujson", ujson.loads, dumps, EncodeError)


def codec(name: str) -> Codec:
    """The backend called C{name}; ImportError if it is not installed."""
    if name == "orjson":
        return _orjson()
    if name == "ujson":
        return _ujson()
    raise ValueError(f"JSON backend must be one of {', '.join(BACKENDS)}, not {name!r}")


def _default() -> Codec:
    wanted = os.environ.get("HYPERTCP_JSON")
    if wanted:
        return codec(wanted)
    try:
        return _orjson()
    except ImportError:
        return _ujson()


_chosen = _default()
#: The backend in use: "orjson" or "ujson".
name: str = _chosen.name
loads: Loads = _chosen.loads
dumps: Dumps = _chosen.dumps
#: Raised by L{dumps}; a TypeError.  L{loads} raises a ValueError.
JSONEncodeError: type = _chosen.encode_error
