"""Prefix-shared training: the trie packing, its attention mask, and training with it equal to per-sequence
training (SFT and DPO, full and LoRA, gradient accumulation, --min_call_reward, --pair_by call), which a wrong
mask (a sibling branch visible) breaks."""

import json
import random

import pytest
import torch
from helpers import make_call, make_traj, write

from finetune import prefix_tree
from finetune.main import main
from finetune.prefix_tree import pack, visible

CALL_JUDGER = """
def first_token_even(calls, **_):
    return [float(call["completion_text"] == "good") for call in calls]
first_token_even.level = "call"
"""


def agent_store(path, tasks=3, samples=3, calls=3, seed=0):
    """Shaped like a ReAct agent under a formatter that edits history: a system prompt shared by every call, a task
    prompt shared by its samples, and each call's prompt = the earlier turns + a hint the next call drops (so no call
    extends the one before it). Samples of a task often start their completions alike (DPO pairs then share them)."""
    from judge.main import main as judge_main

    rng = random.Random(seed)
    system = [rng.randrange(10, 590) for _ in range(12)]
    trajs = []
    for t in range(tasks):
        question = [rng.randrange(10, 590) for _ in range(rng.randrange(4, 9))]
        opening = [rng.randrange(10, 590) for _ in range(3)]
        hint = rng.randrange(10, 590)  # the first call's: its samples' prompts are identical (DPO pairs them)
        for s in range(samples):
            history, episode = system + question, []
            for c in range(calls):
                head = opening[: rng.randrange(0, 4)] if c == 0 else []
                completion = head + [rng.randrange(10, 590) for _ in range(rng.randrange(2, 6))]
                prompt = history + [hint if c == 0 else rng.randrange(10, 590)]  # a hint the next call drops
                text = "good" if completion[0] % 2 == 0 else "bad"
                episode.append(make_call(c, prompt=prompt, completion=completion, text=text))
                history = history + completion + [rng.randrange(10, 590) for _ in range(3)]  # a tool result
            trajs.append(make_traj(f"t{t}", s, reward=[1.0, 0.5, 0.0][s % 3], calls=episode))
    db, judger = path / "store.duckdb", path / "call_judger.py"
    judger.write_text(CALL_JUDGER)
    assert judge_main(["ingest", str(write(path / "traces.jsonl", trajs)), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db), "--judger", "workflow", "--judger", f"{judger}:first_token_even"]) == 0
    return db


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return agent_store(tmp_path_factory.mktemp("prefix"))


def test_trie_layout_attends_ancestors_only():
    """Random rows sharing prefixes: each tree position sees exactly its ancestors (depths 0..d), each row's
    tokens are found in the tree and each is scored from an occurrence of the row's prefix before it."""
    rng = random.Random(0)
    for _ in range(300):
        base = [rng.randrange(5) for _ in range(rng.randrange(0, 6))]
        rows = []
        for _ in range(rng.randrange(1, 7)):
            cut = rng.randrange(len(base) + 1)
            rows.append(base[:cut] + [rng.randrange(3) for _ in range(rng.randrange(0 if cut else 1, 5))])
        limit = rng.choice([None, max(len(r) for r in rows) + rng.randrange(4)])
        forest = pack(rows, limit)
        assert forest.tokens <= sum(len(r) for r in rows) + len(rows)
        for t, ids in enumerate(forest.input_ids):
            assert limit is None or len(ids) <= limit
            seen = visible(torch.tensor([forest.ends[t]]))[0, 0]
            for q in range(len(ids)):
                depths = [forest.position_ids[t][a] for a in seen[q].nonzero().flatten().tolist()]
                assert depths == list(range(forest.position_ids[t][q] + 1))
        for r, row in enumerate(rows):
            t, positions = forest.row_tree[r], forest.row_positions[r]
            ids, seen = forest.input_ids[t], visible(torch.tensor([forest.ends[t]]))[0, 0]
            assert [ids[p] for p in positions] == row
            for k in range(1, len(row)):
                assert [ids[a] for a in seen[positions[k] - 1].nonzero().flatten().tolist()] == row[:k]


def test_shared_prefixes_are_forwarded_once():
    """Two calls sharing a 5-token prompt, a DPO pair sharing its prompt and first completion token."""
    forest = pack([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 8], [1, 2, 3, 4, 5, 6, 7]])
    # 1 2 3 4 5 6 7, then 5 again (the copy the branch is scored from) and 8
    assert forest.input_ids == [[1, 2, 3, 4, 5, 6, 7, 5, 8]]
    assert forest.position_ids == [[0, 1, 2, 3, 4, 5, 6, 4, 5]]
    assert forest.row_positions[1] == [0, 1, 2, 3, 4, 8] and forest.row_positions[0] == forest.row_positions[2]
    # at most max_length tokens a tree: split between sequences, none cut
    split = pack([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6, 7]], max_length=6)
    assert split.input_ids == [[1, 2, 3, 4, 3, 5], [1, 2, 6, 7]] and split.row_tree == [0, 0, 1]
    with pytest.raises(ValueError, match="--max_length 3: a sequence of 4 tokens"):
        pack([[1, 2, 3, 4]], max_length=3)
    # a dense mask computes every pair of a tree: sequences that share only a short prefix are forwarded apart
    system, long_history = [1, 2], list(range(10, 40))
    apart = [system + [100 + i] * 30 for i in range(4)]
    assert len(pack(apart).input_ids) == 1 and len(pack(apart, attention_cost=0.05).input_ids) == 4
    together = [long_history + [100 + i] * 3 for i in range(4)]
    assert len(pack(together, attention_cost=0.05).input_ids) == 1


TRAIN = [
    "--seed",
    "0",
    "--learning_rate",
    "1e-3",
    "--max_steps",
    "3",
    "--per_device_train_batch_size",
    "6",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
    "--gradient_checkpointing",
    "false",
    "--lr_scheduler_type",
    "constant",
    "--train_sampling_strategy",
    "sequential",
]
LORA = [
    "--use_peft",
    "--lora_r",
    "4",
    "--lora_alpha",
    "8",
    "--lora_dropout",
    "0",
    "--lora_target_modules",
    "q_proj",
    "v_proj",
]
CASES = {
    "sft-full-accumulation-min_call_reward": [
        "--top_k",
        "3",
        "--min_reward",
        "0",
        "--min_call_reward",
        "0.5",
        "--gradient_accumulation_steps",
        "2",
    ],
    "sft-lora-max_length": ["--top_k", "3", "--min_reward", "0", "--max_length", "64", *LORA],  # trees split
    "dpo-full-pair_by_call": ["--method", "dpo", "--pairing", "all", "--pair_by", "call", "--beta", "0.1"],
    "dpo-lora-checkpointing": [
        *("--method", "dpo", "--pairing", "all", "--beta", "0.1", *LORA, "--gradient_checkpointing", "true")
    ],
}


def trained(store, tiny_model, out, case, *extra):
    args = ["--db", str(store), "--model_name_or_path", str(tiny_model), "--output_dir", str(out)]
    assert main([*args, *TRAIN, *CASES[case], *extra]) == 0
    from safetensors.torch import load_file

    manifest = json.loads((out / "finetune.json").read_text())
    return manifest, load_file(str(out / "model.safetensors"))


def differences(a, b):
    (ma, wa), (mb, wb) = a, b
    la = [e["loss"] for e in ma["log_history"] if "loss" in e]
    lb = [e["loss"] for e in mb["log_history"] if "loss" in e]
    assert len(la) == len(lb) == 3
    loss = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb))
    weight = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    return loss, weight


@pytest.mark.parametrize("case", list(CASES))
def test_prefix_sharing_trains_what_per_sequence_training_does(store, tiny_model, tmp_path, monkeypatch, case):
    per_sequence = trained(store, tiny_model, tmp_path / "per-sequence", case, "--prefix_sharing", "false")
    shared = trained(store, tiny_model, tmp_path / "shared", case)
    m = shared[0]
    assert m["prefix_sharing"] is True and per_sequence[0]["prefix_sharing"] is False
    assert per_sequence[0]["tokens_forwarded"] == per_sequence[0]["tokens_unshared"] == m["tokens_unshared"]
    assert m["tokens_forwarded"] < 0.75 * m["tokens_unshared"], (m["tokens_forwarded"], m["tokens_unshared"])
    loss, weight = differences(per_sequence, shared)
    update = max((per_sequence[1][k].double() - base).abs().max().item() for k, base in _parent(tiny_model).items())
    print(
        f"{case}: tokens {m['tokens_forwarded']} of {m['tokens_unshared']}; max rel dloss {loss:.2g}, max |dw| {weight:.2g}, update {update:.2g}"
    )
    assert loss < 1e-5 and weight < 1e-4 and update > 1e-3
    # a sibling branch made visible (a plain causal mask over the packed tree): the training is not the same
    monkeypatch.setattr(prefix_tree, "visible", _causal)
    loss, weight = differences(per_sequence, trained(store, tiny_model, tmp_path / "wrong-mask", case))
    print(f"{case} with a wrong mask: max rel dloss {loss:.2g}, max |dw| {weight:.2g}")
    assert loss > 1e-4 and weight > 1e-3, "a wrong mask trained the same"


def _causal(end):
    n = end.shape[-1]
    return torch.ones(n, n, dtype=torch.bool, device=end.device).tril()[None, None].expand(end.shape[0], 1, n, n)


def _parent(tiny_model):
    from safetensors.torch import load_file

    return load_file(str(tiny_model / "model.safetensors"))


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--packing", "true"], "--prefix_sharing true: cannot be combined with --packing or --padding_free"),
        (["--label_smoothing_factor", "0.1"], "--label_smoothing_factor 0.1: needs full logits"),
    ],
    ids=["packing", "label_smoothing"],
)
def test_what_the_tree_cannot_do_is_refused_in_one_line(store, tiny_model, tmp_path, capsys, flags, says):
    args = ["--db", str(store), "--model_name_or_path", str(tiny_model), "--output_dir", str(tmp_path / "o")]
    assert main([*args, *TRAIN, "--top_k", "3", "--min_reward", "0", *flags]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finetune: error: ")]
    assert len(errors) == 1 and says in errors[0], errors
