"""cluster/spool.py: the edge's bounded on-disk buffer."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.cluster.spool import Spool


def _records(spool: Spool, limit: int = 10_000) -> list[bytes]:
    return [r for _, r in spool.peek(limit)]


def test_records_come_back_in_order_across_segments_and_acks(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=100, segment_records=4)
    seqs = [spool.append(f"r{i}".encode()) for i in range(10)]
    assert seqs == list(range(10))
    assert spool.pending == 10
    assert _records(spool) == [f"r{i}".encode() for i in range(10)]
    assert [s for s, _ in spool.peek(3)] == [0, 1, 2]
    spool.ack(6)
    assert spool.pending == 4 and spool.cursor == 6
    assert _records(spool) == [b"r6", b"r7", b"r8", b"r9"]
    assert len(list(tmp_path.glob("*.seg"))) == 2  # the first segment is gone
    spool.ack(3)  # an older acknowledgement changes nothing
    assert spool.cursor == 6
    spool.ack(10)
    assert spool.pending == 0 and spool.peek(5) == []
    assert spool.stats() | {"segments": 0} == {"pending": 0, "appended": 10, "acked": 10,
                                                "dropped": 0, "segments": 0}


def test_past_the_bound_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=5, segment_records=3)
    for i in range(12):
        spool.append(f"r{i}".encode())
    assert spool.pending == 5 and spool.dropped == 7
    assert _records(spool) == [f"r{i}".encode() for i in range(7, 12)]


def test_a_restart_resumes_at_the_cursor_and_cuts_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=100, segment_records=4)
    for i in range(6):
        spool.append(f"r{i}".encode())
    spool.ack(2)
    spool.close()
    tail = max(tmp_path.glob("*.seg"))
    with tail.open("ab") as fh:
        fh.write(b"half a rec")  # a crash in the middle of a write
    again = Spool(tmp_path, max_records=100, segment_records=4)
    assert again.cursor == 2 and again.next_seq == 6
    assert _records(again) == [b"r2", b"r3", b"r4", b"r5"]
    assert again.append(b"r6") == 6
    assert _records(again)[-1] == b"r6"


def test_a_lost_cursor_file_resends_rather_than_loses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=100, segment_records=4)
    for i in range(3):
        spool.append(f"r{i}".encode())
    spool.ack(1)
    spool.close()
    (tmp_path / "cursor").write_bytes(b"garbage")
    again = Spool(tmp_path, max_records=100, segment_records=4)
    assert _records(again) == [b"r0", b"r1", b"r2"]


def test_everything_acknowledged_survives_a_restart_as_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=100, segment_records=2)
    for i in range(4):
        spool.append(f"r{i}".encode())
    spool.ack(4)
    spool.close()
    again = Spool(tmp_path, max_records=100, segment_records=2)
    assert again.pending == 0 and again.next_seq == 4
    assert again.append(b"r4") == 4
