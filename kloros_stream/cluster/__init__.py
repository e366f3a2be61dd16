"""Distributed mode on NATS JetStream (``[cluster]``; see ``docs/distributed.md``).

- :mod:`.wire`: subjects, message ids, the validated envelope (pure);
- :mod:`.spool`: the edge's bounded on-disk buffer;
- :mod:`.merge`: question records in the key-value bucket, one signal's effect (pure);
- :mod:`.connect`: the NATS connection and the stream, consumer and bucket declarations;
- :mod:`.edge`, :mod:`.core`: the two roles; :mod:`.node`: what one process runs.
"""
