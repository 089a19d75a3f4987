"""The outcomes of a fuzz case (see targets.py), with no import of the project: the worker's self-test uses them
without torch."""

from __future__ import annotations

import traceback
from collections.abc import Callable

MAX_MESSAGE = 1000  # characters: a longer "one line" is a wall of text, not a message


def refusal(message: str, names: list[str]) -> tuple[str, str]:
    """``refused`` if ``message`` is one line naming one of ``names``, else ``bad-message``."""
    message = message.strip()
    if "\n" in message:
        return "bad-message", "several lines: " + message[:MAX_MESSAGE]
    if len(message) > MAX_MESSAGE:
        return "bad-message", f"{len(message)} characters: " + message[:300]
    if not any(name in message for name in names):
        return "bad-message", f"names none of {names}: " + message
    return "refused", message


def library(call: Callable[[], object], names: list[str], refusals: tuple[type[BaseException], ...]) -> tuple[str, str]:
    try:
        call()
    except refusals as err:
        return refusal(str(err), names)
    except BaseException:
        return "crash", traceback.format_exc()[-2000:]
    return "loaded", ""


def selftest(work, payload: dict) -> tuple[str, str]:
    """Cases that must fail the property, to show that the harness reports them."""
    import os
    import time

    what = payload["what"]
    if what == "hang":
        return library(lambda: time.sleep(3600), [], ())
    if what == "allocate":
        return library(lambda: bytearray(64 << 30), [], ())  # past the memory cap: MemoryError
    if what == "die":
        os._exit(3)
    if what == "two-lines":
        return library(lambda: _raise(ValueError(f"{work}: first\nsecond")), [str(work)], (ValueError,))
    return library(lambda: _raise(ValueError("a message naming no file")), [str(work)], (ValueError,))


def _raise(err: BaseException) -> None:
    raise err
