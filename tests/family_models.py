"""Random-init checkpoints carrying real model families' tokenizers and chat templates, built offline.

    build_family_model("qwen2.5", out_dir)   # also "qwen3", "llama3.2", "mistral-nemo"

Qwen2.5 / Qwen3: the real Qwen BPE (151,643 ranks in `dashscope/resources/qwen.tiktoken`, which
agentscope installs) + the real special tokens + 151,936 embedding rows (padded, like the real
checkpoints). Llama 3.2 / Mistral-Nemo: their real vocabularies are not available offline, so
astuner's tiny BPE + that family's control tokens (rows padded to a multiple of 64). Templates:
tests/fixtures/templates (sources in its README). Used by tests/test_families.py and
benchmarks/prefill_memory.py.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "templates"

_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added but not "special" in the real tokenizers: decode(skip_special_tokens=True) keeps them.
_QWEN25_PLAIN = ["<tool_call>", "</tool_call>"]
_QWEN_FIM = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
_QWEN3_PLAIN = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN_ROWS = 151936

FAMILIES = {
    # name: (template file, family parser expected from detect_family)
    "qwen2.5": ("qwen2_5.jinja", "hermes"),
    "qwen3": ("qwen3.jinja", "qwen3"),
    "llama3.2": ("llama3_2.jinja", "llama3"),
    "mistral-nemo": ("mistral_nemo.jinja", "mistral"),
}


def qwen_tiktoken_path() -> Path:
    import dashscope

    return Path(dashscope.__file__).parent / "resources" / "qwen.tiktoken"


@functools.lru_cache(maxsize=1)
def _qwen_vocab_merges():
    # transformers' own tiktoken -> BPE conversion (~10 s for 151k ranks): once per process
    from transformers.convert_slow_tokenizer import TikTokenConverter

    return TikTokenConverter(vocab_file=str(qwen_tiktoken_path())).extract_vocab_merges_from_model(
        str(qwen_tiktoken_path())
    )


def _qwen_tokenizer_object(qwen3: bool):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    from astuner.tiny import _QWEN2_SPLIT

    vocab, merges = _qwen_vocab_merges()
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Real ids: 151643 <|endoftext|> ... 151664 <|file_sep|> (Qwen2.5), then Qwen3's four.
    order = _QWEN_SPECIAL + _QWEN25_PLAIN + _QWEN_FIM + (_QWEN3_PLAIN if qwen3 else [])
    for token in order:
        tok.add_tokens([AddedToken(token, special=token not in _QWEN25_PLAIN + _QWEN3_PLAIN, normalized=False)])
    assert tok.token_to_id("<|endoftext|>") == 151643 and tok.token_to_id("<|file_sep|>") == 151664
    return tok


def _tiny_tokenizer_object(specials: list[str]):
    from tokenizers import AddedToken

    from astuner.tiny import _train_tokenizer

    tok = _train_tokenizer(1024)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def build_family_model(
    family: str, out_dir: str | os.PathLike, *, layers: int = 1, hidden: int = 64, seed: int = 0
) -> Path:
    """Write a random-init checkpoint of `family` to out_dir (cached: an existing one is reused)."""
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    template = (TEMPLATES / FAMILIES[family][0]).read_text()
    shape = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    if family.startswith("qwen"):
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model

        raw = _qwen_tokenizer_object(qwen3=family == "qwen3")
        kwargs = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
        rows, eos, klass = QWEN_ROWS, ["<|im_end|>", "<|endoftext|>"], "Qwen2Tokenizer"
    elif family == "llama3.2":
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model

        raw = _tiny_tokenizer_object(
            [
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|eom_id|>",
                "<|python_tag|>",
            ]
        )
        kwargs = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        rows, eos, klass = None, ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"], None
    elif family == "mistral-nemo":
        from transformers import MistralConfig as Config
        from transformers import MistralForCausalLM as Model

        raw = _tiny_tokenizer_object(
            [
                "<unk>",
                "<s>",
                "</s>",
                "[INST]",
                "[/INST]",
                "[AVAILABLE_TOOLS]",
                "[/AVAILABLE_TOOLS]",
                "[TOOL_RESULTS]",
                "[/TOOL_RESULTS]",
                "[TOOL_CALLS]",
            ]
        )
        kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        rows, eos, klass = None, ["</s>"], None
    else:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, chat_template=template, model_max_length=32768, **kwargs)
    n = len(tokenizer)
    rows = rows or (n + 63) // 64 * 64 + 64  # padded embedding rows, as real checkpoints have
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    if klass:
        config_path = tmp / "tokenizer_config.json"
        tok_config = json.loads(config_path.read_text())
        tok_config["tokenizer_class"] = klass
        config_path.write_text(json.dumps(tok_config, indent=2))
    eos_ids = [raw.token_to_id(t) for t in eos]
    pad = raw.token_to_id(kwargs.get("pad_token", eos[0]))
    config = Config(
        vocab_size=rows,
        bos_token_id=raw.token_to_id(kwargs["bos_token"]) if "bos_token" in kwargs else None,
        eos_token_id=eos_ids[0],
        pad_token_id=pad,
        **shape,
    )
    torch.manual_seed(seed)
    model = Model(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=pad)
    model.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir
