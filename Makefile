# Two commands on a fresh machine: `make demo` (one iteration of the loop, collect -> judge -> finetune,
# on the bundled example and the embedded tiny model, with a DuckDB store) and `make test`. Both create .venv once; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
# CPU build lying on this project's machines; a GPU machine can pass its own, e.g. TORCH=torch.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo learn test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	@# one iteration of collect -> judge -> finetune -> held-out eval (examples/math_agent/recipe.yaml); re-running resumes
	$(PY) -m astuner iterate --recipe examples/math_agent/recipe.yaml --iterations 1
	$(PY) -m judge report --db runs/demo/store.duckdb --out runs/demo/report

# the loop teaching the tiny model: a format-only warm-up, then 3 iterations of SFT and of DPO (examples/learn_to_answer)
learn: $(VENV)/.installed
	$(PY) examples/learn_to_answer/warmup.py --out runs/learn/warmup
	$(PY) -m astuner iterate --recipe examples/learn_to_answer/sft.yaml --iterations 3
	$(PY) -m astuner iterate --recipe examples/learn_to_answer/dpo.yaml --iterations 3

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/collect_throughput.py
	$(PY) benchmarks/finetune_overhead.py
	$(PY) benchmarks/collect_soak.py

clean:
	rm -rf $(VENV) runs
