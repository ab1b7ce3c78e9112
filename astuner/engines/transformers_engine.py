"""The transformers engine: CPU or GPU, batching concurrent requests from many workflows.

Requests that arrive while a batch is generating wait in a queue; when the batch ends, every
waiting request (up to max_batch_size) goes into the next one. Sampling is a plain decode
loop over a KV cache so that per-request seeds hold whatever the batch composition is.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from astuner.engines.base import Engine, Generation, SamplingParams


def cpu_threads() -> int:
    """The decode's torch threads on CPU: half the cores this process may use (at least one).

    Each decode step is a parallel region whose threads meet at a barrier, so one thread that waits
    for a core stalls them all: with one busy process beside it on 2 cores, the tiny model decoded
    982 tok/s on torch's default 2 threads and 7,734 on 1 (an 8x loss), while on an idle machine the
    second thread added only ~1.3x (12.0k vs 9.3k tok/s). The engine shares the machine with collect's
    worker processes and whatever else runs there; the other half of the cores is left to them.
    An OMP_NUM_THREADS set in the environment wins."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_size: int = 64,
        batch_wait_s: float = 0.002,
        worker_wait_s: float = 1.0,
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.checkpoint = checkpoint
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = (
            getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        )
        # CPU: torch's intra-op threads for the decode (None: cpu_threads() decides); a GPU decode uses one
        self.threads = (threads or cpu_threads()) if self.device.type == "cpu" else None
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch_dtype).to(self.device).eval()
        try:
            gen_eos = GenerationConfig.from_pretrained(checkpoint).eos_token_id
        except OSError:
            gen_eos = None
        eos = gen_eos if gen_eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        # Checkpoints pad their embedding rows (Qwen: 151,936 rows for 151,665 tokens); a row past the
        # tokenizer is no token at all, so sampling never picks one (finetune would refuse the store).
        self.vocab_size = len(self.tokenizer)
        # Prefill asks only for the last position's logits ([batch, 1, vocab], not [batch, prompt, vocab]):
        # with a 152k vocabulary the full tensor is ~10 GB for 16 prompts of 1,024 tokens.
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.worker_wait_s = worker_wait_s
        self._pending: list[tuple[list[int], SamplingParams, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="astuner-generate")
        self._lock = threading.Lock()

    # ----- async, batched -------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> Generation:
        # checked here, not only in the batch: one prompt past the context must fail its own call,
        # not every concurrent request batched with it
        self._check_fits(prompt_token_ids, sampling)
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.done() or self._batcher.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._pending = []
            self._batcher = loop.create_task(self._batch_loop())
        future = loop.create_future()
        self._pending.append((list(prompt_token_ids), sampling, future))
        self._wakeup.set()
        return await future

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Workflows resumed by the last batch are still on their way to their next call:
            # give them a moment so one batch takes them all.
            count, started = -1, time.monotonic()
            while len(self._pending) != count and len(self._pending) < self.max_batch_size:
                count = len(self._pending)
                await asyncio.sleep(self.batch_wait_s)
                if time.monotonic() - started > 10 * self.batch_wait_s:
                    break
            await self._wait_for_expected()
            batch = [r for r in self._pending[: self.max_batch_size] if not r[2].done()]
            del self._pending[: self.max_batch_size]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self._executor, self.generate_batch, [r[0] for r in batch], [r[1] for r in batch]
                )
            except Exception as exc:  # a failed batch fails its requests, not the engine
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), result in zip(batch, results):
                if not future.done():  # a timed-out workflow cancelled it
                    future.set_result(result)

    async def _wait_for_expected(self) -> None:
        """Fed by worker processes (expected_requests set): while runs that may call any moment are
        running in them, wait for their requests, as one process's engine waits for its loop to run
        them; at most worker_wait_s (collect stops counting a worker whose loop one run holds)."""
        if self.expected_requests is None:
            return
        deadline = time.monotonic() + self.worker_wait_s
        while len(self._pending) < self.max_batch_size and self.expected_requests() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(self.batch_wait_s)

    def _check_fits(self, ids: list[int], params: SamplingParams) -> None:
        if not ids:
            raise ValueError("empty prompt")
        if self.max_context and len(ids) + params.max_tokens > self.max_context:
            raise ValueError(
                f"prompt of {len(ids)} tokens + max_tokens {params.max_tokens} exceeds the "
                f"model's context of {self.max_context}; lower --max-tokens or shorten the prompt"
            )

    # ----- sync, one batch ------------------------------------------------------------
    def generate_batch(self, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Generation]:
        if isinstance(sampling, SamplingParams):
            sampling = [sampling] * len(prompts)
        for ids, params in zip(prompts, sampling):
            self._check_fits(ids, params)
        with self._lock:
            return self._decode(prompts, sampling)

    def _decode(self, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Generation]:
        import torch

        if self.threads and torch.get_num_threads() != self.threads:  # per thread: set in the one that decodes
            torch.set_num_threads(self.threads)
        dev = self.device
        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, ids in enumerate(prompts):  # left padding: every row ends at the same column
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        temps = torch.tensor([p.temperature for p in sampling], device=dev, dtype=torch.float32)
        top_ps = torch.tensor([p.top_p for p in sampling], device=dev, dtype=torch.float32)
        greedy = temps <= 0
        generators = {}
        for i, params in enumerate(sampling):
            if params.seed is not None and params.temperature > 0:
                generators[i] = torch.Generator(device=dev).manual_seed(params.seed)
        unseeded = [i for i in range(batch) if i not in generators and not greedy[i]]
        limits = [p.max_tokens for p in sampling]
        stop_on_eos = torch.tensor([not p.ignore_eos for p in sampling], device=dev)
        eos = torch.tensor(sorted(self.eos_ids), device=dev, dtype=torch.long)

        out_ids: list[list[int]] = [[] for _ in range(batch)]
        out_lps: list[list[float]] = [[] for _ in range(batch)]
        finish = [None] * batch
        past = None
        keep = {"logits_to_keep": 1} if self._logits_to_keep else {}
        with torch.inference_mode():
            for _ in range(max(limits)):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                    **keep,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                del out  # without logits_to_keep this frees the whole prefill's logits before sampling
                # The logprob stays the model's own (all rows), what a forward pass in finetune reproduces;
                # only the sampling excludes the padded rows, like top-p excludes the tail.
                logprobs_all = torch.log_softmax(logits, dim=-1)
                if logits.shape[-1] > self.vocab_size:
                    logits[:, self.vocab_size :] = float("-inf")
                next_ids = self._sample(logits, temps, top_ps, greedy, generators, unseeded)
                logprobs = logprobs_all.gather(1, next_ids[:, None])[:, 0]
                hit_eos = torch.isin(next_ids, eos) & stop_on_eos
                ids_list, lps_list, eos_list = next_ids.tolist(), logprobs.tolist(), hit_eos.tolist()
                for i in range(batch):
                    if finish[i] is not None:
                        continue
                    out_ids[i].append(ids_list[i])
                    out_lps[i].append(lps_list[i])
                    if eos_list[i]:
                        finish[i] = "stop"
                    elif len(out_ids[i]) >= limits[i]:
                        finish[i] = "length"
                if all(f is not None for f in finish):
                    break
                input_ids = next_ids[:, None]
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=dev)], dim=1)
                positions = positions[:, -1:] + 1

        return [
            Generation(
                prompt_token_ids=list(prompts[i]),
                completion_token_ids=out_ids[i],
                completion_logprobs=out_lps[i],
                text=self.decode(out_ids[i]),
                finish_reason=finish[i] or "length",
            )
            for i in range(batch)
        ]

    @staticmethod
    def _sample(logits, temps, top_ps, greedy, generators, unseeded):
        import torch

        next_ids = logits.argmax(dim=-1)
        if greedy.all():
            return next_ids
        probs = torch.softmax(logits / temps.clamp(min=1e-5)[:, None], dim=-1)
        if (top_ps < 1).any():
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # drop a token when the mass before it already reaches top_p (the first always stays)
            drop = (sorted_probs.cumsum(-1) - sorted_probs) >= top_ps[:, None]
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(1, order, sorted_probs)
        if unseeded:
            rows = torch.tensor(unseeded, device=logits.device)
            next_ids[rows] = torch.multinomial(probs[rows], 1)[:, 0]
        for i, gen in generators.items():
            next_ids[i] = torch.multinomial(probs[i], 1, generator=gen)[0]
        return next_ids

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
