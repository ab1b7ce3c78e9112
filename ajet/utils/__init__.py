"""AgentJet's `ajet.utils` path, kept for peers' files: see astuner/compat/."""
