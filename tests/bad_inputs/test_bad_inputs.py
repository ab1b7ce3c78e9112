"""The bad-input corpus (corpus.py): each case's exit code, its one error line, no traceback, no corruption."""

import pytest
from corpus import CASES
from harness import build_world, run_case


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    return build_world(tmp_path_factory.mktemp("bad-inputs-world"))


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert {c.command for c in CASES} == {"collect", "judge ingest", "judge score", "judge sql", "finetune", "iterate"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, world, tmp_path):
    outcome = run_case(case, world, tmp_path / "case")
    assert not outcome.problems, (
        f"{case.id} ({case.input}): "
        + "; ".join(outcome.problems)
        + f"\n--- stderr ---\n{outcome.result.stderr[-4000:]}\n--- stdout ---\n{outcome.result.stdout[-2000:]}"
    )
