"""Real model families (issue 15): the engine on padded vocabularies, tool-call / thinking parsing
per family, and render parity over the real chat templates (tests/fixtures/templates)."""

import json

import pytest

from astuner.chat import detect_family, parse_completion, render_prompt, render_prompt_ids
from astuner.engines import SamplingParams, load_engine
from family_models import FAMILIES, build_family_model


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return lambda family: build_family_model(family, root / family)


@pytest.fixture(scope="session")
def mistral_engine(family_dir):
    eng = load_engine("transformers", family_dir("mistral-nemo"))
    yield eng
    eng.close()


# ----- item 5: the engine serves real-vocabulary checkpoints -------------------------------------
def test_engine_never_samples_a_padded_row(mistral_engine):
    eng = mistral_engine
    rows = eng.model.config.vocab_size
    assert rows > len(eng.tokenizer), "the fixture must have padded embedding rows"

    def favour_padding(_module, _inputs, logits):  # the padded rows would win every draw
        logits[..., len(eng.tokenizer):] += 1000.0
        return logits

    hook = eng.model.lm_head.register_forward_hook(favour_padding)
    try:
        gens = eng.generate_batch([[5, 6, 7]] * 4, [SamplingParams(max_tokens=8, seed=s) for s in range(3)]
                                  + [SamplingParams(max_tokens=8, temperature=0)])
    finally:
        hook.remove()
    sampled = [i for g in gens for i in g.completion_token_ids]
    assert sampled and max(sampled) < len(eng.tokenizer), f"sampled ids past the tokenizer: {sorted(set(sampled))[-3:]}"


def test_prefill_keeps_only_the_last_logits(mistral_engine):
    eng = mistral_engine
    widths = []
    hook = eng.model.lm_head.register_forward_hook(lambda _m, inputs, _out: widths.append(inputs[0].shape[1]))
    try:
        eng.generate_batch([list(range(5, 45)), list(range(5, 25))], SamplingParams(max_tokens=3, temperature=0))
    finally:
        hook.remove()
    assert widths and max(widths) == 1, f"lm_head ran over {max(widths)} positions in prefill"
