"""finetune: not built yet (issue 4). It will read only files that the earlier stages write."""
