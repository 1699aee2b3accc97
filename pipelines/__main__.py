"""`python -m pipelines` is `lakeport`: what the scheduler starts each run with."""

from pipelines.cli import main

main()
