"""The durable question store: the feed plus a SQLite index beside it (see
``docs/architecture.md``, "Question store")."""

from .index import IndexInvalid, QuestionIndex
from .store import FeedStore, Recovery

__all__ = ["FeedStore", "IndexInvalid", "QuestionIndex", "Recovery"]
