"""Kotomi's stand-in in the deployment test, run in a container as uid 1000 like Kotomi's image.

Usage: python kotomi_standin.py DB_PATH RATE

Makes a demo Kotomi database at DB_PATH when there is none, then commits Kotomi-like requests
(the project's KotomiWriter, WAL mode, Kotomi's pragmas) about RATE times a second until
SIGTERM (`docker stop`). Prints `ready` once writing, then `comment <id>` after each committed
comment, so the container's log is the order in which comments were committed.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

from kotomi_backup_dagster.demo import KotomiWriter, connect_like_kotomi, generate_demo_database

stopping = False


def stop(signum: int, frame: FrameType | None) -> None:
    global stopping
    stopping = True


def main() -> None:
    db, rate = Path(sys.argv[1]), float(sys.argv[2])
    signal.signal(signal.SIGTERM, stop)  # as PID 1, only a handler makes SIGTERM do anything
    if not db.exists():
        generate_demo_database(db, size_bytes=1_000_000, seed=11)
    conn = connect_like_kotomi(db)
    writer = KotomiWriter(conn)
    print("ready", flush=True)
    while not stopping:
        comment_id = writer.request()
        if comment_id:
            print(f"comment {comment_id}", flush=True)
        time.sleep(1 / rate)
    conn.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
