#!/usr/bin/env python3
"""What the disk under a directory charges for the syncs a commit could make.

    python3 scripts/syncs.py [dir] [rounds]

Times, over `rounds` repetitions (default 300), the shapes of sync a store
could use for one commit, on two preallocated files in `dir` (default: a
temporary directory under the current one):

- LMDB's commit with MDB_NOMETASYNC plus the explicit sync of a lone group:
  four scattered data pages and one fdatasync, then the meta page and a
  second fdatasync (two flushes in a row);
- the same data sync while a second thread appends one page to a log file
  and syncs it (a log record written beside the commit, both flushes at
  once);
- the data sync alone (four pages, one flush);
- one page of a log file and its fdatasync (what a write-ahead log pays
  per group when it is the only sync);
- the data sync, then the meta page written through a second descriptor
  opened with O_DSYNC (how LMDB syncs its meta page without
  MDB_NOMETASYNC).

Prints the median and the 90th percentile of each, in microseconds.
docs/storage.md, "What one sync per group would take", has the figures.
"""
import os
import statistics
import sys
import tempfile
import threading
import time

PAGE = 4096


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "."
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory(dir=base) as d:
        data = os.open(os.path.join(d, "data"), os.O_RDWR | os.O_CREAT)
        log = os.open(os.path.join(d, "log"), os.O_RDWR | os.O_CREAT)
        for fd in (data, log):
            # Written and synced once, so later syncs flush data only (no
            # block allocation, no size change).
            os.pwrite(fd, b"\0" * (PAGE * 64), 0)
            os.fsync(fd)
        dsync = os.open(os.path.join(d, "data"), os.O_RDWR | os.O_DSYNC)
        page = os.urandom(PAGE)

        def sync(fd, pages):
            for p in pages:
                os.pwrite(fd, page, p * PAGE)
            os.fdatasync(fd)

        def data_then_meta():
            sync(data, [1, 9, 17, 33])
            sync(data, [0])

        def data_then_dsync_meta():
            sync(data, [1, 9, 17, 33])
            os.pwrite(dsync, page, 0)

        def data_beside_log():
            t = threading.Thread(target=sync, args=(log, [0]))
            t.start()
            sync(data, [1, 9, 17, 33])
            t.join()

        shapes = [
            ("data (4 pages) then meta: two syncs in a row", data_then_meta),
            ("data (4 pages) beside a log page: two syncs at once", data_beside_log),
            ("data (4 pages): one sync", lambda: sync(data, [1, 9, 17, 33])),
            ("a log page: one sync", lambda: sync(log, [0])),
            ("data (4 pages) then meta through O_DSYNC", data_then_dsync_meta),
        ]
        for name, f in shapes:
            xs = []
            for _ in range(rounds):
                t = time.perf_counter()
                f()
                xs.append(time.perf_counter() - t)
            xs.sort()
            print(
                f"{name}: median {statistics.median(xs) * 1e6:.0f} us, "
                f"p90 {xs[int(len(xs) * 0.9)] * 1e6:.0f} us"
            )
        for fd in (data, log, dsync):
            os.close(fd)


if __name__ == "__main__":
    main()
