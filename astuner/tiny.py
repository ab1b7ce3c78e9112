"""The embedded default model: a tiny Qwen2-shaped chat model built locally, no download.

    python -c "import astuner.tiny as t; print(t.ensure_tiny_model())"

Random-init weights + a byte-level BPE trained here with `tokenizers` + a ChatML template
with tools. Deterministic: the same torch/tokenizers versions give the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# v2: a 32,768-token context (v1: 4,096, which a 9-player werewolves prompt of ~3,000 tokens and
# a multi-step FrozenLake episode overflow). The weights and every output are v1's: the rotary
# embedding does not depend on the context length. A new version is a new folder, so a cached v1
# is not reused.
TINY_VERSION = "v2"
CONTEXT_LENGTH = 32768

# Qwen2's own pre-tokenizer split. With a plain ByteLevel split, AutoTokenizer (Qwen2Tokenizer
# for a qwen2 config) re-splits text differently and ids stop matching tokenizer.json.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Not "special": decode(skip_special_tokens=True) must keep them, as Qwen2.5's tokenizer does.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# ChatML with Qwen2.5's tools block. {% generation %} marks assistant tokens for TRL's
# assistant-only loss: the turn's text and its <|im_end|>, not the header.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message.content }}"
    "{%- if message.tool_calls %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    '{{- \'<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endgeneration %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A small, fixed corpus so the BPE (and thus every id) is identical on every machine.
_CORPUS = [
    "You are a helpful assistant. Solve the problem step by step and give the final answer.",
    "What is 12 plus 30? The answer is 42. What is 7 times 6? The answer is 42.",
    "Compute the sum, the product and the difference of two numbers, then report the result.",
    "The werewolves wake up at night and choose a victim. The seer checks one player. "
    "The witch may save or poison. In the day, every player votes and the hunter shoots.",
    "Create a worker to finish the given task. The worker is equipped with python execution.",
    "Execute hello world in Python: print('hello world')",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    '{"name": "execute_python_code", "arguments": {"code": "print(1 + 1)", "timeout": 300}}',
    '{"name": "generate_response", "arguments": {"result": "42"}}',
    "<|im_start|>system\nYou are Player1.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { }",
    "Structured output is required, go on to finish your task or call generate_response.",
]


def default_model_dir() -> Path:
    home = Path(os.environ.get("ASTUNER_HOME", Path.home() / ".cache" / "astuner"))
    return home / "models" / f"tiny-chat-{TINY_VERSION}"


def _train_tokenizer(vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def build_tiny_model(out_dir: str | os.PathLike, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a tiny random-init chat checkpoint to `out_dir` (atomically) and return it."""
    import torch
    from tokenizers import AddedToken
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        raw = _train_tokenizer(vocab_size)
        raw.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            chat_template=CHAT_TEMPLATE,
            model_max_length=CONTEXT_LENGTH,
        )
        tokenizer.save_pretrained(tmp)
        # AutoTokenizer picks Qwen2Tokenizer, which keeps tokenizer.json's split and ids.
        config_path = tmp / "tokenizer_config.json"
        tok_config = json.loads(config_path.read_text())
        tok_config["tokenizer_class"] = "Qwen2Tokenizer"
        config_path.write_text(json.dumps(tok_config, indent=2))

        im_end = raw.token_to_id("<|im_end|>")
        pad = raw.token_to_id("<|endoftext|>")
        config = Qwen2Config(
            vocab_size=raw.get_vocab_size(),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=CONTEXT_LENGTH,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=im_end,
            pad_token_id=pad,
        )
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
        model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad)
        model.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").exists():
                raise  # else another process finished the same build first: keep theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_tiny_model(path: str | os.PathLike | None = None) -> Path:
    """The embedded default checkpoint, built on first use."""
    path = Path(path) if path else default_model_dir()
    if not (path / "config.json").exists():
        build_tiny_model(path)
    return path
