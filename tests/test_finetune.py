"""finetune: data built from stored ids for the trainable role only (checked token by token),
SFT and DPO that move the model the right way, checkpoints that collect serves, accelerate
launch from a fresh shell, and one-line errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_call, make_traj, workflow_ref, write, write_tasks

from astuner.store import open_store
from finetune.data import SftCall, build, merge_calls
from finetune.main import main
from finetune.options import FinetuneConfig

ROOT = Path(__file__).resolve().parent.parent
FAST = [
    "--max_steps",
    "4",
    "--per_device_train_batch_size",
    "4",
    "--gradient_checkpointing",
    "false",
    "--seed",
    "0",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
]


@pytest.fixture(scope="module")
def debate_store(tmp_path_factory, tiny_model):
    """Real collect of the Debate workflow (solver trained, critic on the checkpoint but not
    trained) over 3 tasks x 4 samples, ingested and scored by its reward (even samples win)."""
    from collect.main import main as collect_main
    from judge.main import main as judge_main

    tmp = tmp_path_factory.mktemp("debate")
    tasks = write_tasks(tmp / "tasks.jsonl", 3)
    assert (
        collect_main(
            [
                "--workflow",
                workflow_ref("Debate"),
                "--tasks",
                str(tasks),
                "--out",
                str(tmp / "c0"),
                "--samples-per-task",
                "4",
                "--max-tokens",
                "24",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    db = tmp / "store.duckdb"
    assert judge_main(["ingest", str(tmp / "c0"), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    return db


def store_calls(db):
    con = open_store(db, read_only=True)
    try:
        rows = con.execute(
            "SELECT trajectory_id, call_index, role, trainable, prompt_token_ids, completion_token_ids FROM calls"
        ).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def built(db, **selection):
    con = open_store(db, read_only=True)
    try:
        return build(con, FinetuneConfig(**selection))
    finally:
        con.close()


def test_merge_masks_exactly_the_trained_completions():
    """Hand-made: solver calls 0 and 2 form one sequence (call 2's prompt extends call 0), the
    critic's engine call 1 sits between, masked; solver call 3 restarts."""
    calls = [  # task, iteration, trajectory, reward, rank, call_index, role, agent, prompt, completion, drift
        ("t", 0, "a", 1.0, 1, 0, "solver", "S", [10, 11, 12], [20, 21], None),
        ("t", 0, "a", 1.0, 1, 2, "solver", "S", [10, 11, 12, 20, 21, 30, 40, 41, 31], [22, 23], None),
        ("t", 0, "a", 1.0, 1, 3, "solver", "S", [50, 51], [24], None),
    ]
    rows = merge_calls([SftCall(*c) for c in calls])
    assert [r["input_ids"] for r in rows] == [[10, 11, 12, 20, 21, 30, 40, 41, 31, 22, 23], [50, 51, 24]]
    assert [r["completion_mask"] for r in rows] == [[0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1], [0, 0, 1]]
    assert [r["call_indices"] for r in rows] == [[0, 2], [3]]


def test_untrained_role_never_in_the_loss(tmp_path):
    """Through the store: the critic's calls (engine ids, trainable=false) only ever appear as
    masked context, and the views rank/threshold trajectories as documented."""
    solver0 = make_call(0, role="solver", agent="S", prompt=(10, 11, 12), completion=(20, 21))
    critic = make_call(
        1, role="critic", agent="C", trainable=False, prompt=(10, 11, 12, 20, 21, 30), completion=(40, 41)
    )
    solver2 = make_call(2, role="solver", agent="S", prompt=(10, 11, 12, 20, 21, 30, 40, 41, 31), completion=(22, 23))
    trajs = [
        make_traj("t0", 0, reward=1.0, calls=[solver0, critic, solver2]),
        make_traj(
            "t0", 1, reward=0.0, calls=[make_call(0, role="solver", agent="S", prompt=(10, 11, 12), completion=(25,))]
        ),
        make_traj("t1", 0, reward=1.0, calls=[critic | {"index": 0}]),
    ]
    db = tmp_path / "store.duckdb"
    from judge.main import main as judge_main

    assert judge_main(["ingest", str(write(tmp_path / "a.jsonl", trajs)), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    data = built(db, top_k=2, min_reward=1.0)
    assert [r["input_ids"] for r in data.rows] == [[10, 11, 12, 20, 21, 30, 40, 41, 31, 22, 23]]
    assert data.rows[0]["completion_mask"] == [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1]
    expected = {"samples": 1, "calls": 2, "merged_calls": 1, "merged_sequences": 1, "tasks": 1, "completion_tokens": 4}
    assert {k: data.counts[k] for k in expected} == expected
    # with min_reward 0 the losing sample joins; t1 has only the critic: nothing from it
    data = built(db, top_k=2, min_reward=0.0)
    assert sorted(len(r["input_ids"]) for r in data.rows) == [4, 11] and {r["task_id"] for r in data.rows} == {"t0"}


def test_sft_data_from_real_collect_token_by_token(debate_store):
    data = built(debate_store, top_k=2, min_reward=1.0)
    calls = store_calls(debate_store)
    assert data.counts["tasks"] == 3 and data.counts["trajectories"] == 6
    covered = []
    for row in data.rows:
        ids, mask = row["input_ids"], row["completion_mask"]
        expected_mask = [0] * len(ids)
        for index in row["call_indices"]:
            role, trainable, prompt, completion = calls[(row["trajectory_id"], index)]
            assert role == "solver" and trainable
            start = len(prompt)
            assert ids[:start] == prompt and ids[start : start + len(completion)] == completion
            expected_mask[start : start + len(completion)] = [1] * len(completion)
            covered.append((row["trajectory_id"], index))
        assert mask == expected_mask  # token by token: 1 exactly on the solver's sampled tokens
    # every solver call of the chosen trajectories is used once, and no critic call is
    chosen = {r["trajectory_id"] for r in data.rows}
    solver_calls = sorted(k for k, v in calls.items() if k[0] in chosen and v[0] == "solver")
    assert sorted(covered) == solver_calls
    assert all(calls[k][0] == "critic" and not calls[k][1] for k in calls if k[0] in chosen and k not in covered)
    # what TRL receives: labels are the ids on the mask and -100 elsewhere
    from finetune.train import training_dataset

    labels = training_dataset(data)["labels"]
    for row, lab in zip(data.rows, labels):
        assert lab == [t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]


def test_dpo_pairs_share_prompts_and_respect_margin(debate_store):
    calls = store_calls(debate_store)
    for pairing in ("best_worst", "all"):
        data = built(debate_store, method="dpo", pairing=pairing, min_margin=0.5)
        assert data.rows and all(r["margin"] >= 0.5 and r["chosen_reward"] > r["rejected_reward"] for r in data.rows)
        for r in data.rows:
            chosen = calls[(r["chosen_trajectory_id"], r["chosen_call_index"])]
            rejected = calls[(r["rejected_trajectory_id"], r["rejected_call_index"])]
            assert chosen[2] == rejected[2] == r["prompt_ids"]  # identical prompt ids
            assert (chosen[3], rejected[3]) == (r["chosen_ids"], r["rejected_ids"]) and r["chosen_ids"] != r[
                "rejected_ids"
            ]
            assert chosen[0] == rejected[0] == "solver"
    assert len(built(debate_store, method="dpo", pairing="best_worst").rows) == 3  # one per task: the first call
    assert len(built(debate_store, method="dpo", pairing="all").rows) == 12  # 2 winners x 2 losers x 3 tasks


def test_export_reads_back(debate_store, tmp_path, capsys):
    from datasets import load_dataset

    out = tmp_path / "sft.parquet"
    assert main(["--db", str(debate_store), "--top_k", "2", "--export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SFT data: 12 sequences from 12 trainable calls" in printed and "6 trajectories, 3 tasks" in printed
    ds = load_dataset("parquet", data_files=str(out), split="train")
    assert len(ds) == 12 and {"input_ids", "completion_mask", "trajectory_id", "call_indices"} <= set(ds.column_names)
    out = tmp_path / "dpo.parquet"
    assert main(["--db", str(debate_store), "--method", "dpo", "--export", str(out)]) == 0
    assert "DPO data: 3 pairs from 3 prompts of 3 tasks" in capsys.readouterr().out
    assert load_dataset("parquet", data_files=str(out), split="train").column_names[-3:] == [
        "prompt_ids",
        "chosen_ids",
        "rejected_ids",
    ]


def sequence_logps(model_path, sequences):
    """Per sequence: summed log-probability of its masked tokens, under the model at model_path."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids, mask in sequences:
            logits = model(torch.tensor([ids])).logits[0, :-1]
            logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            out.append(float((logp * torch.tensor(mask[1:], dtype=torch.float32)).sum()))
    return out


def run_collect_on(checkpoint, tmp_path):
    from collect.main import main as collect_main

    tasks = write_tasks(tmp_path / "t.jsonl", 2)
    out = tmp_path / f"collect-{Path(checkpoint).name}"
    assert (
        collect_main(
            [
                "--model",
                str(checkpoint),
                "--workflow",
                workflow_ref("Debate"),
                "--tasks",
                str(tasks),
                "--out",
                str(out),
                "--max-tokens",
                "8",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for f in (out / "traces").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(lines) == 2 and all(t["status"] == "ok" and t["checkpoint"]["path"] == str(checkpoint) for t in lines)


def test_sft_full_lowers_loss_and_collect_serves_it(debate_store, tiny_model, tmp_path, capsys):
    out = tmp_path / "ckpt-sft"
    assert (
        main(
            [
                "--db",
                str(debate_store),
                "--top_k",
                "2",
                "--output_dir",
                str(out),
                "--learning_rate",
                "3e-3",
                *FAST,
                "--max_steps",
                "15",
            ]
        )
        == 0
    )
    assert "trained sft on 12 examples" in capsys.readouterr().out
    assert not Path(f"{out}.partial").exists()
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["method"] == "sft" and manifest["parent_checkpoint"] == str(Path(tiny_model).resolve())
    assert manifest["counts"]["samples"] == 12 and manifest["peft"] is False and "train_loss" in manifest["metrics"]
    assert len(manifest["dataset_sha256"]) == 64 and "sft_candidates" in manifest["query"]
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    data = built(debate_store, top_k=2)
    seqs = [(r["input_ids"], r["completion_mask"]) for r in data.rows]
    n_tokens = sum(sum(m) for _, m in seqs)
    before, after = (-sum(sequence_logps(p, seqs)) / n_tokens for p in (tiny_model, out))
    print(f"SFT masked NLL per token: {before:.4f} -> {after:.4f}")
    assert after < before - 0.05
    run_collect_on(out, tmp_path)


def test_dpo_lora_raises_margin_and_collect_serves_it(debate_store, tiny_model, tmp_path):
    out = tmp_path / "ckpt-dpo"
    assert (
        main(
            [
                "--db",
                str(debate_store),
                "--method",
                "dpo",
                "--pairing",
                "all",
                "--output_dir",
                str(out),
                "--use_peft",
                "--lora_r",
                "8",
                "--lora_alpha",
                "32",
                "--lora_target_modules",
                "q_proj",
                "v_proj",
                "o_proj",
                "--learning_rate",
                "2e-2",
                "--beta",
                "0.1",
                *FAST,
                "--max_steps",
                "12",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["method"] == "dpo" and manifest["peft"] is True and manifest["counts"]["samples"] == 12
    assert not any(p.name.startswith("adapter_") for p in out.iterdir())  # merged: a plain full checkpoint
    pairs = built(debate_store, method="dpo", pairing="all").rows

    def margin(path):
        chosen = sequence_logps(
            path,
            [
                (r["prompt_ids"] + r["chosen_ids"], [0] * len(r["prompt_ids"]) + [1] * len(r["chosen_ids"]))
                for r in pairs
            ],
        )
        rejected = sequence_logps(
            path,
            [
                (r["prompt_ids"] + r["rejected_ids"], [0] * len(r["prompt_ids"]) + [1] * len(r["rejected_ids"]))
                for r in pairs
            ],
        )
        return sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)

    before, after = margin(tiny_model), margin(out)
    print(f"DPO chosen-minus-rejected logp: {before:.4f} -> {after:.4f}")
    assert after > before + 0.05
    run_collect_on(out, tmp_path)


def test_dpo_keeps_the_stored_ids(debate_store, tiny_model):
    """TRL's DPO preparation would re-tokenize; ours hands the stored ids through unchanged."""
    from transformers import AutoTokenizer
    from trl import DPOConfig, ModelConfig

    from finetune.train import build_trainer, training_dataset

    data = built(debate_store, method="dpo", pairing="all")
    args = DPOConfig(output_dir="/tmp/unused-dpo", report_to="none", bf16=False, use_cpu=True)
    trainer = build_trainer(
        "dpo",
        args,
        ModelConfig(model_name_or_path=str(tiny_model)),
        training_dataset(data),
        AutoTokenizer.from_pretrained(tiny_model),
    )
    got = trainer.train_dataset
    assert got["prompt_ids"] == [r["prompt_ids"] for r in data.rows]
    assert got["chosen_ids"] == [r["chosen_ids"] for r in data.rows] and got["rejected_ids"] == [
        r["rejected_ids"] for r in data.rows
    ]


@pytest.mark.slow
def test_accelerate_launch_from_a_fresh_shell(debate_store, tmp_path):
    """No `accelerate config` ever ran: HOME and HF_HOME are empty folders."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "HF_HOME": str(home / "hf"), "PYTHONPATH": str(ROOT)}
    accelerate = Path(sys.executable).parent / "accelerate"
    for name, launch in (
        ("bare", []),
        ("cpu-config", ["--config_file", str(ROOT / "finetune" / "accelerate" / "cpu.yaml")]),
    ):
        out = tmp_path / f"ckpt-{name}"
        proc = subprocess.run(
            [
                str(accelerate),
                "launch",
                *launch,
                "-m",
                "finetune",
                "--db",
                str(debate_store),
                "--top_k",
                "2",
                "--output_dir",
                str(out),
                *FAST,
                "--max_steps",
                "2",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (
            proc.stdout.count("trained sft on 12 examples") == 1 and (out / "finetune.json").is_file()
        )  # rank 0 speaks
        assert json.loads((out / "finetune.json").read_text())["world_size"] == 1


@pytest.mark.slow
def test_killed_training_resumes_and_never_leaves_a_half_checkpoint(debate_store, tmp_path):
    import signal
    import time

    out = tmp_path / "ckpt"
    partial = Path(f"{out}.partial")
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "--db",
        str(debate_store),
        "--top_k",
        "2",
        "--output_dir",
        str(out),
        *FAST,
        "--max_steps",
        "60",
        "--save_strategy",
        "steps",
        "--save_steps",
        "5",
        "--save_total_limit",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(partial.glob("checkpoint-*/trainer_state.json")):  # killed right after the first complete save
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written where collect would look
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the unfinished run" in again.stdout
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["log_history"][-1]["step"] == 60 and not partial.exists()


def test_one_line_errors(debate_store, tmp_path, capsys):
    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("finetune: error: "), err
        return err

    out = ["--output_dir", str(tmp_path / "o")]
    assert "0 tasks with a reward >= --min_reward 5.0 (best reward 1)" in error(
        ["--db", str(debate_store), "--min_reward", "5", *out]
    )
    assert "0 with a reward margin >= --min_margin 2.0 (widest 1)" in error(
        ["--db", str(debate_store), "--method", "dpo", "--min_margin", "2", *out]
    )
    assert "no store at" in error(["--db", str(tmp_path / "missing.duckdb"), *out])
    (tmp_path / "junk.duckdb").write_text("not a database")
    assert "cannot open as a DuckDB store" in error(["--db", str(tmp_path / "junk.duckdb"), *out])
    other = tmp_path / "other.duckdb"
    shutil.copy(debate_store, other)
    con = open_store(other)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    assert "store schema version 99" in error(["--db", str(other), *out])
    assert "--output_dir: required" in error(["--db", str(debate_store)])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("x")
    assert "already exists and is not empty" in error(["--db", str(debate_store), *out])
    assert "--method 'ppo'" in error(["--db", str(debate_store), "--method", "ppo"])
    assert "--iterations [7]: not in the store" in error(
        ["--db", str(debate_store), "--iterations", "7", "--export", "x.parquet"]
    )
    assert "not a checkpoint folder" in error(
        ["--db", str(debate_store), "--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "n")]
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dpo\nmin_margin: 2\nnot_an_option: 1\n")
    assert "not_an_option" in error(["--config", str(recipe), "--db", str(debate_store), *out])


def test_recipe_and_flags(debate_store, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"method: dpo\ndb: {debate_store}\npairing: all\nbeta: 0.3\nexport: {tmp_path / 'p.parquet'}\n")
    assert main(["--config", str(recipe), "--pairing", "best_worst"]) == 0  # the flag wins
    assert "DPO data: 3 pairs" in capsys.readouterr().out
    from finetune.main import parse_args

    args, training_args, _ = parse_args(["--config", str(recipe)])
    assert args.method == "dpo" and training_args.beta == 0.3 and training_args.report_to in ("none", [])
    assert main(["--help"]) == 0 and "accelerate launch -m finetune" in capsys.readouterr().out


@pytest.mark.parametrize(
    "method,extra", [("sft", ["--use_peft", "--lora_r", "4"]), ("dpo", [])], ids=["sft-lora", "dpo-full"]
)
def test_other_combinations_write_servable_checkpoints(debate_store, tmp_path, method, extra):
    from astuner.engines import SamplingParams, load_engine

    out = tmp_path / f"ckpt-{method}"
    assert (
        main(
            [
                "--db",
                str(debate_store),
                "--method",
                method,
                "--top_k",
                "2",
                "--output_dir",
                str(out),
                *FAST,
                "--max_steps",
                "2",
                *extra,
            ]
        )
        == 0
    )
    engine = load_engine("transformers", out, device="cpu")
    try:
        from astuner.chat import render_prompt_ids

        prompt = render_prompt_ids(engine.tokenizer, [{"role": "user", "content": "What is 1 + 1?"}], None)
        [gen] = engine.generate_batch([prompt], [SamplingParams(max_tokens=4, seed=0)])
        assert gen.prompt_token_ids == prompt and gen.completion_token_ids
    finally:
        engine.close()


def test_max_length_cuts_are_reported_before_training(debate_store):
    from finetune.train import length_report

    data = built(debate_store, top_k=2)
    limit = min(r["completion_mask"].index(1) for r in data.rows) + 1
    dropped = sum(1 for r in data.rows if r["completion_mask"].index(1) >= limit)
    assert length_report(data, 10_000) is None
    note = length_report(data, limit)
    assert 0 < dropped < 12 and note.startswith(
        f"--max_length {limit}: of 12 examples, {dropped} have no trained token"
    )
    assert f"{12 - dropped} are cut short" in note


CALL_JUDGER = """
def half_per_good_call(calls, **_):
    return [0.5 * (call["completion_text"] == "good") for call in calls]
half_per_good_call.level = "call"
"""


def test_dpo_pairs_and_sft_masks_follow_the_calls_own_scores(tmp_path, capsys):
    """Episodes of two calls that part at call 0: s0 (a bad first call, then a good one: 0.5), s1 (two bad
    calls: 0), s2 (a good first call, then a bad one: 0.5). Ranked by the episode's reward, s0's bad first
    call is preferred to s1's; ranked by each call's own score, only s2's good first call is chosen. SFT with
    --min_call_reward trains the good calls only, the bad ones kept as masked context."""
    from judge.main import main as judge_main

    def episode(sample, first, second, reward):
        (a, text_a), (b, text_b) = first, second
        return make_traj(
            "t0",
            sample,
            reward=reward,
            calls=[
                make_call(0, prompt=(1, 2, 3), completion=(a,), text=text_a),
                make_call(1, prompt=(1, 2, 3, a, 9), completion=(b,), text=text_b),
            ],
        )

    trajs = [
        episode(0, (7, "bad"), (20, "good"), 0.5),
        episode(1, (8, "bad"), (21, "bad"), 0.0),
        episode(2, (6, "good"), (22, "bad"), 0.5),
    ]
    db, judger = tmp_path / "store.duckdb", tmp_path / "call_judger.py"
    judger.write_text(CALL_JUDGER)
    assert judge_main(["ingest", str(write(tmp_path / "t.jsonl", trajs)), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db), "--judger", "workflow"]) == 0
    with pytest.raises(ValueError, match=r"--pair_by call, and iteration 0 has 0 call-level scores; score the calls"):
        built(db, method="dpo", pairing="all", pair_by="call")
    assert (
        judge_main(["score", "--db", str(db), "--judger", "workflow", "--judger", f"{judger}:half_per_good_call"]) == 0
    )
    capsys.readouterr()

    def chosen_first_calls(pair_by):
        rows = built(db, method="dpo", pairing="all", pair_by=pair_by).rows
        assert all(
            r["prompt_ids"] == [1, 2, 3] and r["chosen_call_index"] == 0 for r in rows
        )  # call-1 prompts all differ
        return sorted((r["chosen_ids"][0], r["rejected_ids"][0], r["margin"]) for r in rows)

    assert chosen_first_calls("trajectory") == [(6, 8, 0.5), (7, 8, 0.5)]  # 7 (bad) chosen for what call 1 did after it
    assert chosen_first_calls("call") == [(6, 7, 0.5), (6, 8, 0.5)]
    with pytest.raises(ValueError, match=r"--pair_by 'episode': use one of trajectory, call"):
        built(db, method="dpo", pair_by="episode")
    assert (
        main(
            [
                "--db",
                str(db),
                "--method",
                "dpo",
                "--pairing",
                "all",
                "--pair_by",
                "call",
                "--export",
                str(tmp_path / "d.parquet"),
            ]
        )
        == 0
    )
    assert "DPO data: 2 pairs from 1 prompts of 1 tasks" in capsys.readouterr().out
    # SFT on the calls that earned their own score: the others stay in the sequence, masked; s1 (no good call) is dropped
    sft = built(db, top_k=3, min_reward=0.0, min_call_reward=0.5)
    assert {r["input_ids"][3]: r["completion_mask"] for r in sft.rows} == {  # keyed by the first completion
        7: [0, 0, 0, 0, 0, 1],  # s0: 1 2 3 | 7 (bad, masked) | 9 | 20 (good, trained)
        6: [0, 0, 0, 1, 0, 0],  # s2: 1 2 3 | 6 (good, trained) | 9 | 22 (bad, masked)
    }
    assert sft.counts["masked_calls"] == 4 and sft.counts["merged_sequences"] == 2
    assert "4 calls below --min_call_reward kept as context, not trained" in sft.summary()
    assert [sum(r["completion_mask"]) for r in built(db, top_k=3, min_reward=0.0).rows] == [
        2,
        2,
        2,
    ]  # default: every call
