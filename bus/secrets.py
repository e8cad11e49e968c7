"""Secrets (broker passwords, device passwords, database passwords and tokens): from a file or the environment.

Never from the config file itself or the command line: both end up in backups, logs and ``ps``. A file holds the
secret on its first line (surrounding whitespace and the newline are dropped); an environment variable is the
alternative where a file is awkward (containers). Every reader of a secret in wattbus comes through here.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(ValueError):
    """A secret that was asked for and cannot be had; the message names the file or variable."""


def read_secret(file: str | os.PathLike | None = None, env: str | None = None, *,
                env_required: bool = False) -> str | None:
    """The secret in ``file`` if one is named, else in ``$env``, else None.

    An unreadable file is a :class:`SecretError`; so is an unset (or empty) ``env`` when ``env_required``
    (the config named that variable explicitly, so its absence is a mistake, not a default).
    """
    if file:
        try:
            # Bytes, then decode: read_text's universal newlines would turn a "\r" inside a secret into "\n".
            return Path(file).read_bytes().decode("utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read {file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SecretError(f"{file} is not UTF-8 text") from None
    if env:
        value = os.environ.get(env) or None
        if value is None and env_required:
            raise SecretError(f"environment variable {env} is not set")
        return value
    return None
