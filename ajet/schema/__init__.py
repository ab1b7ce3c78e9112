"""`ajet.schema.task`: the task records."""
