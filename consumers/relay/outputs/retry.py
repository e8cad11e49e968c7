"""Attempts until the device confirms, with tenacity: the one retry policy every output kind shares."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from consumers.relay.outputs import OutputError


class NotConfirmed(Exception):
    """One attempt failed; the text says how (the last one's text ends up in the OutputError)."""


def until_confirmed(attempt: Callable[[], None], retries: int, what: str) -> None:
    """Call ``attempt`` until it returns without raising NotConfirmed (or OSError), at most 1 + retries
    times; then OutputError naming ``what`` and the last failure."""
    retrying = Retrying(stop=stop_after_attempt(retries + 1), wait=wait_fixed(0.2),
                        retry=retry_if_exception_type((NotConfirmed, OSError)))
    try:
        retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise OutputError(f"{what}: not confirmed after {retries + 1} attempts: {last}") from None
