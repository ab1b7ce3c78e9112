"""`ajet.task_judge.base_judge`: see astuner.task_judge."""
