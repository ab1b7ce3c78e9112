import sys

print("judge: not built yet (issue 3); only 'python -m collect' works in this version", file=sys.stderr)
raise SystemExit(2)
