# Two commands on a fresh machine: `make demo` (the loop teaching the embedded tiny model: a cached format-only
# warm-up, then 3 iterations of collect -> judge -> finetune, held-out reward rising) and `make test`. Both create .venv once; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
# CPU build lying on this project's machines; a GPU machine can pass its own, e.g. TORCH=torch.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo learn learn-tool-use learn-two-roles test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,ray]"  # ray: tests/test_ray.py runs collect --ray on a local cluster
	touch $@

demo: $(VENV)/.installed
	@# the warm-up is built once into runs/learn/warmup (kept: later runs reuse it); then 3 rounds of
	@# collect -> judge -> held-out eval -> SFT (examples/learn_to_answer/sft.yaml) into runs/demo; re-running resumes
	$(PY) examples/learn_to_answer/warmup.py --out runs/learn/warmup
	$(PY) -m astuner iterate --recipe examples/learn_to_answer/sft.yaml --iterations 3 --run-dir runs/demo
	$(PY) -m judge report --db runs/demo/store.duckdb --out runs/demo/report

# the loop teaching the tiny model: a format-only warm-up, then 3 iterations of SFT and of DPO (examples/learn_to_answer)
learn: $(VENV)/.installed
	$(PY) examples/learn_to_answer/warmup.py --out runs/learn/warmup
	$(PY) -m astuner iterate --recipe examples/learn_to_answer/sft.yaml --iterations 3
	$(PY) -m astuner iterate --recipe examples/learn_to_answer/dpo.yaml --iterations 3

# a ReAct agent learning to call a tool and use its result (examples/learn_tool_use)
learn-tool-use: $(VENV)/.installed
	$(PY) examples/learn_tool_use/warmup.py --out runs/tool/warmup
	$(PY) -m astuner iterate --recipe examples/learn_tool_use/sft.yaml --iterations 3
	$(PY) -m astuner iterate --recipe examples/learn_tool_use/dpo.yaml --iterations 3

# two roles on one checkpoint, one trained, then the other (examples/learn_two_roles)
learn-two-roles: $(VENV)/.installed
	$(PY) examples/learn_two_roles/warmup.py --out runs/two/warmup
	$(PY) -m astuner iterate --recipe examples/learn_two_roles/sft.yaml --iterations 3
	$(PY) -m astuner iterate --recipe examples/learn_two_roles/sft.yaml --iterations 3 --trainable-targets listener --run-dir runs/two/listener
	$(PY) examples/learning_table.py runs/two/speaker --roles
	$(PY) examples/learning_table.py runs/two/listener --roles

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/collect_throughput.py
	$(PY) benchmarks/finetune_overhead.py
	$(PY) benchmarks/collect_soak.py

clean:
	rm -rf $(VENV) runs
