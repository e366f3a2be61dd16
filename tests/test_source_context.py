"""Source context of an exception's in-app frames, read from the watched tree."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.analysis.source_context import frame_context, read_source_lines
from kloros_stream.analysis.tracebacks import assemble_text


def test_in_app_frames_of_the_final_exception_with_lines_around(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("".join(f"line {n}\n" for n in range(1, 11)))
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            f'  File "{app}", line 2, in outer',
            '  File "/usr/lib/python3.11/json/decoder.py", line 337, in decode',
            f'  File "{app}", line 9, in inner',
            '  File "<string>", line 1, in <module>',
            "ValueError: bad",
        ]
    )
    [tb] = assemble_text(text)
    blocks = frame_context(tb.chain, read_source_lines)
    assert [b.splitlines()[0] for b in blocks] == [f"{app}:2 in outer", f"{app}:9 in inner"]
    assert blocks[1].splitlines()[1:] == [
        "      7 | line 7",
        "      8 | line 8",
        ">     9 | line 9",
        "     10 | line 10",
    ]


def test_unreadable_or_short_files_give_no_block(tmp_path: Path) -> None:
    short = tmp_path / "short.py"
    short.write_text("x = 1\n")
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            f'  File "{tmp_path / "gone.py"}", line 3, in f',
            f'  File "{short}", line 40, in g',
            "KeyError: 'k'",
        ]
    )
    [tb] = assemble_text(text)
    assert frame_context(tb.chain, read_source_lines) == []
