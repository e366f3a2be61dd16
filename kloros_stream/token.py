"""The ``[http] token_file``: read and checked without importing the HTTP server (the
commands that talk to a running service need it, and should start fast)."""

from __future__ import annotations

from pathlib import Path

MAX_TOKEN_BYTES = 4096


class TokenFileError(ValueError):
    """``[http] token_file`` cannot be used; the message says why (never the token)."""


def load_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        raw = path.read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as err:
        raise TokenFileError(f"http.token_file: cannot read {path}: "
                             f"{err.strerror or err}") from None
    token = raw.decode("utf-8", "replace").strip()
    if not token or len(raw) > MAX_TOKEN_BYTES or any(c.isspace() for c in token):
        raise TokenFileError(f"http.token_file: {path} must hold one token (no spaces, "
                             f"at most {MAX_TOKEN_BYTES} bytes)")
    return token
