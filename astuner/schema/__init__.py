"""ASTuner's schema module path (`from astuner.schema.task import Task`)."""
