"""The package surface: what `engine` exports, and a CLI that starts without the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import engine


def test_every_exported_name_resolves() -> None:
    for name in engine.__all__:
        assert getattr(engine, name).__name__ == name


def test_cli_start_up_does_not_import_the_data_libraries() -> None:
    probe = (
        "import sys, pipelines.cli; "
        "print(sorted(m for m in ('polars', 'pyarrow', 'deltalake', 'duckdb', 's3fs') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
