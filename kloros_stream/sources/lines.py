"""One bounded line splitter for every byte stream read in chunks (tailed files, the
journalctl pipe, the history log).

:class:`LineSplitter` turns chunks into complete lines (without their newline), each with
the offset it starts at. A partial last line is held until its newline arrives, but never
more than ``max_line_bytes`` of it: a longer line is reported to ``on_too_long(offset,
bytes_seen)`` once and skipped through its newline without being buffered whole.
:attr:`LineSplitter.offset` is the offset just past the last complete line (what a
checkpoint may record); :attr:`LineSplitter.pending` says whether a partial line (or the
skipped rest of one) is outstanding, which at the end of a file is a torn write.
"""

from __future__ import annotations

from collections.abc import Callable


class LineSplitter:
    """Chunks in, ``(offset, line)`` out; memory bounded by one chunk and one line."""

    def __init__(
        self,
        max_line_bytes: int,
        on_too_long: Callable[[int, int], None] | None = None,
        *,
        offset: int = 0,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.on_too_long = on_too_long
        self.offset = offset
        """Just past the last complete line (or skipped over-long line)."""
        self._pos = offset
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> bool:
        """A partial line is held, or an over-long one is being skipped."""
        return bool(self._buf) or self._skipping

    @property
    def held(self) -> int:
        """Bytes of the partial line held."""
        return len(self._buf)

    @property
    def position(self) -> int:
        """How far the stream has been fed."""
        return self._pos

    def drop_partial(self) -> None:
        """Forget the partial line (the stream is closed); offsets stay."""
        self._buf.clear()
        self._skipping = False

    def reset(self, offset: int = 0) -> None:
        """Forget any partial line and start again at ``offset`` (truncation, rotation)."""
        self._buf.clear()
        self._skipping = False
        self.offset = self._pos = offset

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """The complete lines ``chunk`` finishes, oldest first, with their start offsets."""
        start = self._pos
        self._pos += len(chunk)
        i = 0
        if self._skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                return []
            self._skipping = False
            i = nl + 1
            self.offset = start + i
        last_nl = chunk.rfind(b"\n", i)
        if last_nl < 0:
            self._hold(chunk, i)
            return []
        if self._buf:
            self._buf += chunk[i:last_nl]
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = chunk[i:last_nl]
        line_offset = self.offset
        self.offset = start + last_nl + 1
        self._hold(chunk, last_nl + 1)
        out: list[tuple[int, bytes]] = []
        limit = self.max_line_bytes
        for line in data.split(b"\n"):
            if len(line) > limit:
                self._too_long(line_offset, len(line))
            else:
                out.append((line_offset, line))
            line_offset += len(line) + 1
        return out

    def _hold(self, chunk: bytes, begin: int) -> None:
        rest = len(chunk) - begin
        if rest <= 0:
            return
        if len(self._buf) + rest > self.max_line_bytes:
            self._too_long(self.offset, len(self._buf) + rest)
            self._buf.clear()
            self._skipping = True
        else:
            self._buf += chunk[begin:]

    def _too_long(self, offset: int, seen: int) -> None:
        if self.on_too_long is not None:
            self.on_too_long(offset, seen)
