"""Child process for test_crash.py: an engine resyncing a disk-log mirror under writes.

argv: A B LOG SECTORS REGION. Prints "SYNC k n" as the resync progresses and "ACK block
seq" after each acknowledged write (flushed at once), until it is killed.
"""

from __future__ import annotations

import random
import sys
import threading
import time

from devmapper.library import DeviceMapper


def main() -> None:
    a, b, log, sectors, region = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5])
    dm = DeviceMapper.in_process()
    dm.create("m", f"0 {sectors} mirror disk 2 {log} {region} 2 {a} 0 {b} 0")
    out = sys.stdout
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        seq = 0
        with dm.open("m") as blk:
            while True:
                n = rng.randrange(seed, sectors // 8, 4)  # 4 KiB blocks, disjoint per thread
                seq += 1
                blk.write(n * 4096, memoryview(bytes([seq % 251 + 1]) * 4096))
                with lock:
                    out.write(f"ACK {n} {seq}\n")
                    out.flush()
                time.sleep(0.001)

    for i in range(4):
        threading.Thread(target=writer, args=(i,), daemon=True).start()
    while True:
        words = dm.status("m")[0].params.split()
        with lock:
            out.write(f"SYNC {words[3].replace('/', ' ')}\n")
            out.flush()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
