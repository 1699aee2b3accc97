"""zstd exports: one frame per chunk, compressed in parallel, against one frame per file.

The export compresses each chunk (about 4 MiB of encoded rows) on its own in two worker
threads, so a zstd file is a run of frames. One frame per file needs one streaming compressor
per file, fed in order: with zstd's own worker threads (`threads=2`) or without; splitting into
parts of `max_file_size` needs each chunk's compressed size, so a block is flushed after each
chunk (without the flush, the size is known only at the end). This measures them on the same
CSV rows in one run: wall time (best of `--repeat`) and size.

    python -m benchmarks.bench_zstd_frames [--mib 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import zstandard

from benchmarks.common import measured_on, write_section

CHUNK = 4 << 20


def rows(mib: int) -> bytes:
    """CSV rows like an audience export's, `mib` MiB of them."""
    pick = random.Random(7)
    out = []
    size = 0
    i = 0
    while size < mib << 20:
        line = (
            f"{i},user{pick.randrange(10**7)}@example.com,{pick.choice(['GB', 'US', 'FR'])},"
            f"{pick.random() * 1000:.2f},2026-11-{1 + i % 28:02d}T00:00:00Z,"
            f"tag{i % 9}&tag{i % 4},{pick.getrandbits(64):x}\n"
        ).encode()
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)


def frames_in_parallel(chunks: list[bytes]) -> int:
    with ThreadPoolExecutor(2) as pool:
        packed = pool.map(lambda c: zstandard.ZstdCompressor(level=3).compress(c), chunks)
        return sum(len(p) for p in packed)


def one_frame(threads: int, *, flush: bool = True) -> Callable[[list[bytes]], int]:
    def run(chunks: list[bytes]) -> int:
        packer = zstandard.ZstdCompressor(level=3, threads=threads).compressobj()
        total = 0
        for chunk in chunks:
            total += len(packer.compress(chunk))
            if flush:  # a block flushed after each chunk: what a part's size needs to be known
                total += len(packer.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        return total + len(packer.flush())

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB of CSV rows")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (the best is kept)")
    args = parser.parse_args()
    data = rows(args.mib)
    chunks = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
    kinds = {
        "a frame per 4 MiB chunk, 2 worker threads (what exports do)": frames_in_parallel,
        "one frame per file, zstd threads=2, a block flushed per chunk": one_frame(2),
        "one frame per file, one thread, a block flushed per chunk": one_frame(0),
        "one frame per file, zstd threads=2, no flush (no part sizes)": one_frame(2, flush=False),
    }
    best = dict.fromkeys(kinds, float("inf"))
    sizes = dict.fromkeys(kinds, 0)
    for _ in range(args.repeat):
        for name, work in kinds.items():  # the kinds take turns
            started = time.perf_counter()
            sizes[name] = work(chunks)
            best[name] = min(best[name], time.perf_counter() - started)
    first = next(iter(kinds))
    lines = [
        "",
        f"{measured_on()}. {len(data) / 2**20:,.0f} MiB of CSV rows, zstd level 3, the best of "
        f"{args.repeat} runs of each, the kinds taking turns, in one process.",
        "",
        "| how | seconds | MB/s | compressed MiB | vs frames per chunk |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in kinds:
        lines.append(
            f"| {name} | {best[name]:.3f} | {len(data) / best[name] / 1e6:,.0f} | "
            f"{sizes[name] / 2**20:,.1f} | {best[name] / best[first]:.2f}x |"
        )
    for line in lines:
        print(line)
    write_section("zstd frames (`python -m benchmarks.bench_zstd_frames`)", lines)


if __name__ == "__main__":
    main()
