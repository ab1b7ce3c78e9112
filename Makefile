# Two commands on a fresh machine: `make demo` (collect and judge the bundled example on the
# embedded tiny model, into a DuckDB store) and `make test`. Both create .venv once; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
# CPU build lying on this project's machines; a GPU machine can pass its own, e.g. TORCH=torch.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m collect --out runs/demo
	$(PY) -m judge ingest runs/demo --db runs/demo/store.duckdb
	$(PY) -m judge score --db runs/demo/store.duckdb --judger workflow exact
	$(PY) -m judge sql "SELECT * FROM task_stats ORDER BY task_id" --db runs/demo/store.duckdb
	$(PY) -m judge report --db runs/demo/store.duckdb --out runs/demo/report

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/collect_throughput.py

clean:
	rm -rf $(VENV) runs
