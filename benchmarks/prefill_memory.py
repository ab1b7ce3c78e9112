"""Peak memory of the transformers engine's prefill on a real-vocabulary checkpoint, before and after
`logits_to_keep=1`.

    python benchmarks/prefill_memory.py                                  # CPU, Qwen vocabulary
    python benchmarks/prefill_memory.py --batches 1 4 16 --lengths 256 1024 --max-before-gb 12

The checkpoint is random-init with one tiny layer but the real Qwen2.5 tokenizer (151,665 tokens)
and its 151,936 embedding rows, built offline from dashscope's qwen.tiktoken (tests/family_models.py),
so the logits tensor is the real one. "before" asks the model for logits at every prompt position
(the engine before it kept only the last position); "after" is the engine as it is (logits_to_keep=1). Memory is the peak
of process RSS (CPU, sampled every millisecond) or torch.cuda.max_memory_allocated (GPU) above
what was in use before the call. "before" runs whose logits alone would exceed --max-before-gb are
skipped and show their estimate, so the benchmark cannot exhaust a shared machine.
"""

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_above_baseline(fn, device) -> tuple[int, float]:
    """(peak bytes above the memory in use before fn, seconds) of one fn() call."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, time.perf_counter() - started
    base, peak, done = _rss(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
    return max(peak[0], _rss()) - base, seconds


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: build the Qwen2.5-vocabulary one in a temp dir)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="batch sizes")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024], help="prompt lengths in tokens")
    parser.add_argument("--max-tokens", type=int, default=2, help="tokens sampled per request after the prefill")
    parser.add_argument(
        "--max-before-gb",
        type=float,
        default=6.0,
        help="skip a 'before' run whose full-prompt logits alone would exceed this many GB",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()

    from astuner.engines import SamplingParams, load_engine

    model = args.model
    if model is None:
        from family_models import build_family_model

        model = str(build_family_model("qwen2.5", Path(tempfile.mkdtemp(prefix="prefill-bench-")) / "qwen2.5"))
    engine = load_engine("transformers", model, device=args.device)
    rows, vocab = engine.model.config.vocab_size, len(engine.tokenizer)
    print(
        f"checkpoint {model}: {vocab:,} tokens, {rows:,} embedding rows, device {engine.device}, "
        f"dtype {engine.model.dtype}; peak memory above baseline per prefill + {args.max_tokens} tokens"
    )
    print(f"{'batch':>5} {'prompt':>6} | {'before (all logits)':>22} | {'after (logits_to_keep=1)':>26} | ratio")
    element = 4  # the engine upcasts to float32; the model's own logits are float32 on CPU
    keep = engine._logits_to_keep
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=0, ignore_eos=True)
    engine.generate_batch([[1, 2, 3]], sampling)  # warm-up: first-call allocations are not the prefill's
    for batch in args.batches:
        for length in args.lengths:
            prompts = [[(7 * i + j) % 150000 + 10 for j in range(length)] for i in range(batch)]
            results = {}
            for mode in ("after", "before"):  # after first: what "before" frees is not reused by it
                estimate = batch * length * rows * element / 1e9
                if mode == "before" and estimate > args.max_before_gb:
                    results[mode] = None, estimate
                    continue
                engine._logits_to_keep = keep and mode == "after"
                peak, seconds = _peak_above_baseline(
                    functools.partial(engine.generate_batch, prompts, sampling), engine.device
                )
                results[mode] = peak, seconds
            engine._logits_to_keep = keep
            before, after = results["before"], results["after"]
            before_text = (
                f"skipped (~{before[1]:.1f} GB est.)"
                if before[0] is None
                else f"{before[0] / 1e6:>9,.0f} MB {before[1]:>6.2f}s"
            )
            after_text = f"{after[0] / 1e6:>9,.1f} MB {after[1]:>6.2f}s"
            # below 1 MB the RSS sampling cannot tell: the ratio is then a lower bound
            ratio = (
                "-"
                if before[0] is None
                else (f"{before[0] / after[0]:.0f}x" if after[0] >= 1e6 else f">{before[0] / 1e6:.0f}x")
            )
            print(f"{batch:>5} {length:>6} | {before_text:>22} | {after_text:>26} | {ratio}")
    engine.close()


if __name__ == "__main__":
    main()
