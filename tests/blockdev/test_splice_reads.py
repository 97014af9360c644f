"""Large reads through devmapperd, answered by splice (expose/fuse_raw.py's _Splicer) where a
request is one direct extent and by read() where it spans two: fio verifies every block
while the device is suspended and resumed under it."""

from __future__ import annotations

import subprocess

from blockdevlib import Served, run

MiB = 1 << 20


def test_fio_verify_large_blocks_across_two_targets(served: Served) -> None:
    a, b = served.file("a.img", 24 * MiB), served.file("b.img", 32 * MiB)
    # 24 MiB of a, then 24 MiB of b from 8 MiB in: two extents, a boundary fio's 1 MiB blocks
    # at 512-byte granularity straddle now and then.
    half = 24 * MiB // 512
    with served.dm() as dm:
        dm.create("sp", f"0 {half} linear {a} 0\n{half} {half} linear {b} {8 * MiB // 512}")
        node = served.node("sp")
        results = []
        with served.suspend_resume_cycles("sp", pause=0.1) as cycles:
            # Blocks shifted off page alignment (so a splice takes an extra page) and across
            # the boundary at 24 MiB now and then; one block size a run, so fio's random map
            # writes each block once and verify checks each.
            for bs, shift in [("1m", 7680), ("512k", 3584), ("128k", 0), ("768k", 512)]:
                results.append(run(
                    "fio", "--name=verify", f"--filename={node}", "--rw=randwrite",
                    f"--bs={bs}", f"--offset={shift}", "--size=46M", "--direct=1",
                    "--ioengine=libaio", "--iodepth=4", "--verify=crc32c", "--verify_fatal=1",
                    "--do_verify=1", "--verify_state_save=0", "--loops=8", check=False))
        for r in results:
            assert r.returncode == 0, r.stdout + r.stderr
        assert cycles[0] > 3
        # And sequentially once more, every byte compared with the files behind the device.
        got = subprocess.run(["dd", f"if={node}", "bs=1M", "iflag=direct", "status=none"],
                             check=True, capture_output=True).stdout
        with open(a, "rb") as fa, open(b, "rb") as fb:
            fb.seek(8 * MiB)
            assert got == fa.read(24 * MiB) + fb.read(24 * MiB)
