"""judge: not built yet (issue 3). It will read only files that the earlier stages write."""
