"""Benchmark provenance: the record names the code that ran."""

from shared.provenance import code_state, run_record


def test_run_record_keeps_the_code_state_taken_at_the_start():
    start = code_state()
    assert set(start) == {"commit", "commit_dirty"}
    record = run_record(code={"commit": "abc123", "commit_dirty": False})
    assert record["commit"] == "abc123" and record["commit_dirty"] is False
    assert len(record["load_average"]) == 3 and record["threads"] >= 1
    assert run_record()["commit"] == start["commit"]  # default: the state now
