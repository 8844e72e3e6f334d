"""
The manhole's audit trail: every line an operator types, and every call of
a helper that changes something with its arguments and result, logged
under the name of the operator and the key that let them in.

The manhole runs any Python, so the typed lines are the complete record;
the helpers' lines say in plain words what changed.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from typing import Any, Callable, TypeVar

from twisted.conch.manhole import ColoredManhole
from twisted.conch.manhole_ssh import TerminalUser
from twisted.logger import Logger

log = Logger(namespace="hypertcp.audit")
#: Who is typing: set while a console runs a line, read by the helpers it calls.
_operator: ContextVar[str] = ContextVar("operator", default="(no operator)")

F = TypeVar("F", bound=Callable[..., Any])


class Operator(TerminalUser):
    """A logged-in operator; C{name} is the avatar id: the user name and the key's fingerprint."""

    def __init__(self, original: Any, avatarId: bytes) -> None:
        super().__init__(original, avatarId)
        self.name = avatarId.decode("utf-8", "replace")


class AuditedManhole(ColoredManhole):
    """conch's colour console, logging each line typed and who typed it."""

    def __init__(self, namespace: dict, operator: str) -> None:
        super().__init__(namespace)
        self.operator = operator

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if text.strip():
            log.info("manhole audit: {operator} typed: {line}", operator=self.operator, line=text)
        token = _operator.set(self.operator)
        try:
            super().lineReceived(line)
        finally:
            _operator.reset(token)


def audited(function: F, show_result: bool = True) -> F:
    """
    C{function}, a helper that changes something, logging each call: who,
    with what, and the result (unless it is a secret) or the refusal.
    """
    name = function.__name__

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        what = f"{name}({shown})"
        try:
            result = function(*args, **kwargs)
        except Exception as e:
            log.warn("manhole audit: {operator}: {call} refused: {error}",
                     operator=_operator.get(), call=what, error=e)
            raise
        log.info("manhole audit: {operator}: {call} -> {result}", operator=_operator.get(),
                 call=what, result=repr(result) if show_result else "(not logged)")
        return result

    return call  # type: ignore[return-value]
