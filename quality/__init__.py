"""Signal quality on real code: labelled corpora and the harness that scores our analysis.

``python -m quality`` (``make quality``) fetches each corpus (a pinned PyPI sdist, or a
local tree named by an environment variable, skipped when absent), runs the same analysis
the monitors run over it (never importing the analysed code), and prints precision,
recall and, for gap types that group, grouping, per gap type and corpus, against the
labels in ``quality/labels/<gap_type>/<corpus>.toml``. See ``quality/README.md``.
"""
