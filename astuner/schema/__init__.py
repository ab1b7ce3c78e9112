"""ASTuner's schema module path (`from astuner.schema.task import Task`), kept for peers' files: see astuner/compat/."""
