"""A flow index as plain data (:class:`FlowIndexJson`, a mixin of
:class:`~.flow_index.FlowIndex`): every file's flows, rebuilt by updating a fresh index.
The service itself no longer saves the index (the source index's journal keeps the
facts); this is the format for tools and tests that want one file."""

from __future__ import annotations

from typing import Any

from .flow_model import FileFlows, FileHead

INDEX_FORMAT = 2


class FlowIndexJson:
    files: dict[str, FileHead]
    _json: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """Plain data for a checkpoint. Per-file parts are cached: after the first call this
        costs a dict copy plus the files changed since. Treat the result as read-only."""
        cache = self._json
        for path, head in self.files.items():
            if path not in cache:
                cache[path] = head.flows.to_json()
        return {"format": INDEX_FORMAT, "files": dict(cache)}

    @classmethod
    def from_json(cls, data: Any, prefix_match: bool = True) -> tuple[Any, list[str]]:
        """Rebuild an index; malformed file entries are skipped and their paths returned."""
        index = cls(prefix_match=prefix_match)
        skipped: list[str] = []
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            return index, skipped
        files = data.get("files")
        if not isinstance(files, dict):
            return index, skipped
        for path, raw in files.items():
            try:
                flows = FileFlows.from_json(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                skipped.append(str(path))
                continue
            index.update(str(path), flows)
        return index, skipped
