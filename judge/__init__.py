"""judge: score trajectories into the DuckDB store (python -m judge)."""
