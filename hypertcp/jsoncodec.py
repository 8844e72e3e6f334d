"""
The project's JSON codec -- the server's message path, the clients and the
balancer -- behind one small module, so the library under it is a one-line
change.

Measured on the same C{hypertcp bench} runs (docs/performance.rst), orjson
moves about 17% more messages per server CPU-second than ujson and 40% more
than the standard library's json, so it is the one used.  It is also the
strictest of the three: NaN, Infinity, numbers out of a double's range and
lone surrogates are not JSON, and it refuses them on the way in, where ujson
let C{1e400} through and then sent receivers the non-JSON C{Infinity}.
Integers beyond 64 bits are read as floats (RFC 8259 section 6 allows it;
no device can hold them anyway).
"""

from __future__ import annotations

from typing import Any, Union

import orjson

#: Raised by L{loads} for anything that is not JSON; a ValueError.
JSONDecodeError = orjson.JSONDecodeError
#: Raised by L{dumps} for what JSON cannot carry on, such as nesting deeper
#: than orjson writes (255), though it reads more; a TypeError.
JSONEncodeError = orjson.JSONEncodeError


def loads(data: Union[bytes, str]) -> Any:
    """Parse JSON from UTF-8 bytes (checked as it parses, no separate decode) or text."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """
    Compact UTF-8 JSON, with non-ASCII characters and "/" left unescaped:
    the smallest frame, and what the sketch's ArduinoJson reads.
    """
    return orjson.dumps(value)
