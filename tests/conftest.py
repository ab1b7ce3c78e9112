import os
import sys
from pathlib import Path

# Offline, hermetic: no hub, and the embedded model is built into a per-session folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["AGENTSCOPE_DISABLE_CONSOLE_OUTPUT"] = "true"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def astuner_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("astuner-home")
    os.environ["ASTUNER_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model(astuner_home):
    from astuner.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def engine(tiny_model):
    from astuner.engines import load_engine

    eng = load_engine("transformers", tiny_model)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def tokenizer(engine):
    return engine.tokenizer
