"""The vLLM engine: in-process AsyncLLM over the same checkpoint folder and the same prompt
ids as the transformers engine. Installed by the `vllm` extra (CUDA only); imported only
when `--engine vllm` is chosen. vLLM batches concurrent requests itself (continuous batching).
"""

from __future__ import annotations

import asyncio
import itertools

from astuner.engines.base import Engine, Generation, SamplingParams


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, checkpoint: str, **engine_args):
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ImportError(
                f"--engine vllm: cannot import vllm ({exc}). Install the extra on a CUDA machine: "
                "pip install -e '.[vllm]', or use --engine transformers"
            ) from None
        from transformers import AutoTokenizer

        self.checkpoint = checkpoint
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        args = {"model": checkpoint, "tokenizer": checkpoint, "enable_prefix_caching": True, **engine_args}
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        self._ids = itertools.count()

    def _params(self, sampling: SamplingParams):
        from vllm import SamplingParams as VSamplingParams

        # logprobs=0: only the sampled token's logprob, from the raw (untempered) distribution.
        return VSamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            logprobs=0,
            detokenize=False,
        )

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> Generation:
        final = None
        request_id = f"astuner-{next(self._ids)}"
        async for output in self._engine.generate(
            {"prompt_token_ids": list(prompt_token_ids)}, self._params(sampling), request_id
        ):
            final = output
        completion = final.outputs[0]
        ids = list(completion.token_ids)
        logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs or [])]
        return Generation(
            prompt_token_ids=list(prompt_token_ids),
            completion_token_ids=ids,
            completion_logprobs=logprobs,
            text=self.decode(ids),
            finish_reason="length" if completion.finish_reason == "length" else "stop",
        )

    def generate_batch(self, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Generation]:
        if isinstance(sampling, SamplingParams):
            sampling = [sampling] * len(prompts)

        async def run_all():
            return await asyncio.gather(*(self.generate(p, s) for p, s in zip(prompts, sampling)))

        return asyncio.run(run_all())

    def close(self) -> None:
        self._engine.shutdown()
