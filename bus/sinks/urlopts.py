"""Sink URL options and secrets, shared by the network sinks.

Secrets never travel in a URL (a URL ends up in argv, logs and `ps`): a sink reads its password or token from
the file named by a URL option (``password_file=``, ``token_file=``) or else from an environment variable.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from bus.secrets import SecretError, read_secret


def options(url: str, allowed: set[str]) -> dict[str, str]:
    """The URL's query options; an unknown one is a ValueError naming the allowed ones (typos show)."""
    opts = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} in sink URL "
                         f"(allowed: {', '.join(sorted(allowed))})")
    return opts


def reject_inline_secret(url: str, where: str) -> None:
    if urlsplit(url).password is not None:
        raise ValueError(f"sink URL carries a password: put it in a file named by `{where}` or in the "
                         f"environment, never in the URL")


def secret(opts: dict[str, str], file_option: str, env: str) -> str | None:
    """The secret from the file named by ``opts[file_option]``, else from ``$env``, else None."""
    try:
        return read_secret(opts.get(file_option), env)
    except SecretError as exc:
        raise ValueError(f"{file_option}: {exc}") from None


def flag(opts: dict[str, str], name: str, default: bool = False) -> bool:
    value = opts.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"sink URL option {name}={value!r}: expected true or false")
