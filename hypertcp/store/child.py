"""
The embedded store's writer as a process of its own: its Python runs beside
the reactor's instead of taking turns with it for one GIL.

The server (L{hypertcp.store.writers.ProcessWriter}) writes batches to its
standard input and reads their results from its standard output, each a
pickle after its 4-byte length: a batch is a list of C{(operation, args)};
a result is C{(ok, results or the exception, messages expired so far)}.
Whatever has arrived when the writer is ready is committed in one
transaction and answered batch by batch, in order, so batches handed over
while one commits make the next commit bigger (group commit), not slower.

The writer ends at the end of its input -- the server closed it, or died --
once it has committed what came whole.  It ignores the signals a terminal or
a service manager sends the server's whole process group: stopping it is
the server's, after its own last batch is answered.

Nothing here imports Twisted: the process stays small.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any

from hypertcp.store.sqlitefile import StoreFileError, Writer, open_writer

LENGTH = struct.Struct("!I")
#: Bytes read at once: a burst of batches arrives in a read or a few.
READ_SIZE = 1 << 20


def frame(value: Any) -> bytes:
    """C{value} as the other side reads it: its pickle after its length."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def split(buffered: bytes) -> tuple[list[bytes], bytes]:
    """The whole pickles at the start of C{buffered}, and what is left of it."""
    found, at, end = [], 0, len(buffered)
    while end - at >= 4:
        (n,) = LENGTH.unpack_from(buffered, at)
        if end - at - 4 < n:
            break
        found.append(buffered[at + 4:at + 4 + n])
        at += 4 + n
    return found, buffered[at:]


def answer(writer: Writer, batches: list[list[tuple]]) -> bytes:
    """Commit C{batches} as one transaction: a result for each, framed, in order."""
    try:
        results = writer.batch([op for batch in batches for op in batch])
    except Exception as e:
        try:
            failed = frame((False, e, writer.expired))
        except Exception:  # an exception that cannot be pickled: its words, then
            failed = frame((False, RuntimeError(f"{type(e).__name__}: {e}"), writer.expired))
        return failed * len(batches)
    out, at = [], 0
    for batch in batches:
        out.append(frame((True, results[at:at + len(batch)], writer.expired)))
        at += len(batch)
    return b"".join(out)


def serve(writer: Writer, source: int = 0, sink: int = 1) -> None:
    """Answer the batches read from C{source} on C{sink} until C{source} ends."""
    buffered = b""
    while True:
        data = os.read(source, READ_SIZE)
        if not data:
            return  # a batch cut short by a dying server was never answered: dropped
        payloads, buffered = split(buffered + data)
        if payloads:
            out = memoryview(answer(writer, [pickle.loads(p) for p in payloads]))
            while out:
                out = out[os.write(sink, out):]


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    path, synchronous = argv
    try:
        writer = open_writer(path, synchronous)
    except StoreFileError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        serve(writer)
    finally:
        writer.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
