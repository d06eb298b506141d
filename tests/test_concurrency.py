"""The documented DuckDB pattern: a writer job and a reading process side by side, zero
errors surfaced to the reader, zero writes lost."""

import json
import subprocess
import sys
import textwrap

import pytest

from pipeline.loop import jobs

# The reader reads until it has made READS reads while the writer was committing (it saw
# the count grow), or until the writer job has ended (what it sees in the jobs table it
# reads anyway); a deadline ends it otherwise, which it reports and the test fails on.
READS = 100  # twice the least the test asks for
READER = textwrap.dedent("""
    import json, sys, time
    from pipeline.storage.store import Store
    s = Store(sys.argv[1])
    jid, wanted = int(sys.argv[2]), int(sys.argv[3])
    end = time.monotonic() + float(sys.argv[4])
    reads = errors = 0
    last = -1
    regressions = 0
    msgs = []
    seen = set()
    writer_done = enough = False
    while not (writer_done or enough):
        if time.monotonic() > end:
            break
        try:
            n = s.scalar("SELECT count(*) FROM ticks WHERE tag = 'cc'")
            js = s.jobs()       # what the app's jobs page reads
            s.runs()            # and its overview
            reads += 1
            if n < last:
                regressions += 1
            last = n
            seen.add(n)
            writer_done = any(j["job_id"] == jid and j["status"] not in ("queued", "running")
                              for j in js)
            enough = reads >= wanted and len(seen) > 1
        except Exception as e:  # anything here would have reached a user
            errors += 1
            msgs.append(repr(e)[:200])
    print(json.dumps({"reads": reads, "errors": errors, "last": last,
                      "regressions": regressions, "msgs": msgs[:5],
                      "stopped": writer_done or enough, "counts_seen": len(seen)}))
""")


@pytest.mark.slow
def test_reader_and_writer_side_by_side(store):
    store.migrate()
    # a writer longer than the reader needs (2,000 commits): the reader's reads all land
    # while it writes, however slow the machine; then it is cancelled (what it committed
    # stays)
    n = 2000
    jid = jobs.submit(store, "ticks", {"n": n, "seconds": 0.02, "tag": "cc"})
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.path), str(jid),
                               str(READS), "240"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-2000:]
    res = json.loads(out)
    assert res["stopped"], f"the reader timed out before its reads or the writer's end: {res}"
    j = jobs.cancel(store, jid, wait=60)
    assert j["status"] == "cancelled", j  # it was still writing when the reader was done
    assert res["errors"] == 0, res["msgs"]
    assert res["regressions"] == 0
    assert res["reads"] >= READS and res["counts_seen"] > 1  # it read while counts grew
    rows = store.rows("SELECT i FROM ticks WHERE tag = 'cc' ORDER BY i")
    # every committed write is there, in order, none lost: as many as the reader last saw
    # at least, and those the writer made before its cancel landed
    assert [r["i"] for r in rows] == list(range(len(rows)))
    assert res["last"] <= len(rows) < n
    print(f"\nreader: {res['reads']} reads ({res['counts_seen']} counts seen), 0 errors; "
          f"writer: {len(rows)} commits")
