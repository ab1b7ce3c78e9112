"""collect: run a Workflow over tasks against a frozen checkpoint; see collect/main.py."""
