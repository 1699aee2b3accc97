"""Encrypted audience export: the CSV export of N profiles plain and encrypted to an OpenPGP key,
and `gpg --encrypt` of the plain export's file as the baseline, in the same run.

The profiles are bench_export's (loaded, not timed). Timed, each a fresh process: the export to
a local folder under an authorization without keys and under one with a Curve25519 public key;
and the gpg command line encrypting the plain export's file to the same key (with
`--compress-algo none`, as lakeport runs it: the export is compressed already, or not at all).
The target: encrypted ≤ plain + 1.1 x the baseline, with peak RSS unchanged.

    python -m benchmarks.bench_pgp --rows 1000000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_export import EXPORT, LOAD, generate_profiles
from benchmarks.common import Measured, measure, measured_on, median, write_section

AUTH = """
import sys
from pathlib import Path
from engine import Store, pgp
from engine.auth import DefaultChain
store = Store(sys.argv[1])
store.authorizations.add(DefaultChain(name="plain"))
key = Path(sys.argv[2]).read_bytes()
store.authorizations.add(
    DefaultChain(name="sealed", **pgp.authorization_keys([("key.asc", key)], None, None))
)
"""
GPG = """
import subprocess, sys
subprocess.run(
    ["gpg", "--homedir", sys.argv[1], "--batch", "--trust-model", "always", "--compress-algo",
     "none", "--encrypt", "-r", sys.argv[2], "-o", sys.argv[4], sys.argv[3]], check=True
)
print(0, __import__("os").path.getsize(sys.argv[4]))
"""


def job(auth: str, out: Path, compress: str) -> str:
    return (
        f'name = "bench"\ntype = "audience-export"\naudience = "everyone"\nauth = "{auth}"\n'
        f'bucket = "{out}"\nformat = "csv"\ncompress = "{compress}"\nfilename = "audience"\n'
    )


def key(home: Path) -> tuple[str, Path]:
    home.mkdir(mode=0o700)
    base = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    subprocess.run(
        [
            *base,
            "--passphrase",
            "",
            "--quick-gen-key",
            "Bench <b@example.com>",
            "ed25519",
            "default",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [*base, "--list-keys", "--with-colons"], capture_output=True, text=True, check=True
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr"))
    subprocess.run(
        [*base, "--passphrase", "", "--quick-add-key", fingerprint, "cv25519", "encr", "never"],
        check=True,
        capture_output=True,
    )
    exported = home / "public.asc"
    exported.write_bytes(
        subprocess.run(
            [*base, "--armor", "--export", fingerprint], capture_output=True, check=True
        ).stdout
    )
    return fingerprint, exported


def row(rows: int, what: str, m: Measured, note: str = "") -> str:
    _, size = (int(v) for v in m.output.split())
    return (
        f"| {rows:,} | {what} | {m.seconds:.2f} | {size / 1e6:,.0f} | {m.peak_rss_mib:,.0f} "
        f"| {note} |"
    )


def measure_size(rows: int, repeat: int) -> list[str]:
    source = generate_profiles(rows)
    work = Path(tempfile.mkdtemp(prefix="lakeport-bench-pgp-"))
    lines = []
    try:
        store = work / "store"
        measure(LOAD, str(store), str(source))
        fingerprint, public = key(work / "gpg")
        measure(AUTH, str(store), str(public))
        for compress in ("none", "zstd"):
            runs: dict[str, list[Measured]] = {}
            suffix = ".zst" if compress == "zstd" else ""
            for _ in range(repeat):
                for auth in ("plain", "sealed"):
                    out = work / auth
                    shutil.rmtree(out, ignore_errors=True)
                    runs.setdefault(auth, []).append(
                        measure(EXPORT, str(store), job(auth, out, compress))
                    )
                plain_file = work / "plain" / f"audience.csv{suffix}"
                target = work / "baseline.gpg"
                target.unlink(missing_ok=True)
                runs.setdefault("gpg", []).append(
                    measure(GPG, str(work / "gpg"), fingerprint, str(plain_file), str(target))
                )
            plain, sealed, gpg = (median(runs[k]) for k in ("plain", "sealed", "gpg"))
            budget = plain.seconds + 1.1 * gpg.seconds
            lines += [
                row(rows, f"lakeport csv, {compress}, not encrypted", plain),
                row(rows, "baseline: gpg --encrypt of that file", gpg),
                row(
                    rows,
                    f"lakeport csv, {compress}, encrypted",
                    sealed,
                    f"{sealed.seconds - plain.seconds:+.2f} s over plain; target ≤ "
                    f"{budget:.2f} s ({'met' if sealed.seconds <= budget else 'missed'})",
                ),
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="profiles (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the median is kept)")
    args = parser.parse_args()
    lines = [
        "",
        f"{measured_on()}. The median of {args.repeat} runs, the kinds taking turns; each a "
        "fresh process (imports included); peak RSS is the highest of the runs (a child's "
        "gpg included). The key is Ed25519 with a Curve25519 encryption subkey.",
        "",
        "| users | run | seconds | MB | peak RSS MiB | note |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for rows in args.rows or [1_000_000]:
        lines += measure_size(rows, args.repeat)
    write_section("Encrypted audience export (PGP)", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
