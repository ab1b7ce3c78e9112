# Two commands on a fresh machine: `make demo` (collect, judge and finetune the bundled example on
# the embedded tiny model, with a DuckDB store) and `make test`. Both create .venv once; later runs reuse it.
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
	@# --min_reward 0: the random-init model earns no reward yet; a finished checkpoint is kept, not retrained
	@if [ -f runs/demo/checkpoint-1/finetune.json ]; then echo "runs/demo/checkpoint-1 is already trained"; else \
	  $(VENV)/bin/accelerate launch --config_file finetune/accelerate/cpu.yaml -m finetune --db runs/demo/store.duckdb \
	    --min_reward 0 --output_dir runs/demo/checkpoint-1 --max_steps 20 --learning_rate 1e-3 --logging_steps 5 --max_length 4096; fi

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/collect_throughput.py
	$(PY) benchmarks/finetune_overhead.py

clean:
	rm -rf $(VENV) runs
