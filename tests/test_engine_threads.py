"""The transformers engine's CPU threads (astuner/engines/transformers_engine.py cpu_threads): half the
cores, so a decode that shares the machine with collect's workers and other load does not collapse
(benchmarks/collect_throughput.py --background-load 1 measures it)."""

import os
import threading

import torch

from astuner.engines import SamplingParams
from astuner.engines.transformers_engine import TransformersEngine, cpu_threads


def test_cpu_threads_is_half_the_cores_unless_omp_num_threads_is_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu_threads() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3


def test_the_decode_runs_on_the_engines_threads(tiny_model, monkeypatch):
    """The threads are set in the thread that decodes (torch's setting is per thread): 3 there, whatever the
    caller's, and the engine reports them."""
    seen = []
    decode = TransformersEngine._decode

    def spy(self, prompts, sampling):
        result = decode(self, prompts, sampling)
        seen.append(torch.get_num_threads())
        return result

    monkeypatch.setattr(TransformersEngine, "_decode", spy)
    engine = TransformersEngine(str(tiny_model), device="cpu", threads=3)
    caller = torch.get_num_threads()
    try:
        assert engine.threads == 3
        worker = threading.Thread(target=engine.generate_batch, args=([[1, 2, 3]], SamplingParams(max_tokens=2)))
        worker.start()
        worker.join()
        assert seen == [3]
        assert torch.get_num_threads() == caller  # this thread's own setting is untouched
    finally:
        engine.close()
        torch.set_num_threads(caller)  # the default of threads started later, which the decode thread changed
