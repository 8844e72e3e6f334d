"""Frames a read produces, held and written once per peer when the read ends."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


class WriteBatch:
    """
    One per server (the factory owns it).  While a session handles a read
    of several frames, every frame written to any session is held; when the
    read is done each session touched makes one C{transport.write}.  A read
    carrying fifty messages for one peer then costs one system call there,
    not fifty.  A read of one frame is not held: it writes to each peer once
    anyway (the delivery to one, the answer to the other).
    """

    __slots__ = ("active", "held")

    def __init__(self) -> None:
        self.active = False
        #: The sessions holding frames (in their C{out}) until the read ends.
        self.held: list[Any] = []

    def hold(self, session: Any, data: bytes) -> None:
        """Hold C{data} for C{session} (L{Session.write} does this inline)."""
        out = session.out
        if out is None:
            session.out = [data]
            self.held.append(session)
        else:
            out.append(data)

    def begin(self) -> None:
        self.active = True

    @contextmanager
    def holding(self) -> Iterator[None]:
        """
        Hold what is written in the block and write it once per peer at its
        end -- unless a batch is already open (a read's): that one's end does.
        """
        if self.active:
            yield
            return
        self.active = True
        try:
            yield
        finally:
            self.end()

    def end(self) -> None:
        """Write what was held, and stop holding."""
        self.active = False
        held, self.held = self.held, []
        for session in held:
            session.flush()
