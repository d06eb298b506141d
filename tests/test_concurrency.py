"""The documented DuckDB pattern: a writer job and a reading process side by side for
about 30 seconds, zero errors surfaced to the reader, zero writes lost."""

import json
import subprocess
import sys
import textwrap

import pytest

from pipeline import jobs

READER = textwrap.dedent("""
    import json, sys, time
    from pipeline.store import Store
    s = Store(sys.argv[1])
    end = time.monotonic() + float(sys.argv[2])
    reads = errors = 0
    last = -1
    regressions = 0
    msgs = []
    while time.monotonic() < end:
        try:
            n = s.scalar("SELECT count(*) FROM ticks WHERE tag = 'cc'")
            s.jobs()            # what the app's jobs page reads
            s.runs()            # and its overview
            reads += 1
            if n < last:
                regressions += 1
            last = n
        except Exception as e:  # anything here would have reached a user
            errors += 1
            msgs.append(repr(e)[:200])
    print(json.dumps({"reads": reads, "errors": errors, "last": last,
                      "regressions": regressions, "msgs": msgs[:5]}))
""")


@pytest.mark.slow
def test_reader_and_writer_side_by_side(store):
    store.migrate()
    n = 500
    jid = jobs.submit(store, "ticks", {"n": n, "seconds": 0.02, "tag": "cc"})
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.path), "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-2000:]
    res = json.loads(out)
    j = jobs.wait(store, jid, timeout=300)
    assert j["status"] == "succeeded", j
    assert res["errors"] == 0, res["msgs"]
    assert res["regressions"] == 0
    assert res["reads"] > 50          # the reader really read throughout
    assert 0 < res["last"] <= n
    rows = store.rows("SELECT i FROM ticks WHERE tag = 'cc' ORDER BY i")
    assert [r["i"] for r in rows] == list(range(n))  # every committed write is there
    print(f"\nreader: {res['reads']} reads, 0 errors; writer: {n} commits")
