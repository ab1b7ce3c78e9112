"""The messages between collect (collect/pool.py) and its worker processes (collect/worker.py).

One duplex multiprocessing Pipe per worker carries them pickled (lists of ints and floats pickle
exactly, so the ids and logprobs that come back are the engine's):

    collect -> worker   StartRun   GenReply   Stop
    worker -> collect   Ready   InitError   RunStarted   GenRequest   CallMade   RunDone   Idle

Idle: the work that collect's messages woke up (runs resumed by their generations, new runs) has
all run to its next wait. Until then collect's engine holds its next batch for this worker's
requests (Engine.expected_requests), as the engine in one process does for the runs of its loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from astuner.engines import Generation, SamplingParams
from astuner.trajectory import ModelCall, Trajectory
from astuner.workflow import Task


class Message:
    """Pickled as (class, field values): a third cheaper than the dataclass default, which reads
    dataclasses.fields() each time (a collect sends a few messages per model call)."""

    __slots__ = ()

    def __reduce__(self):
        return type(self), tuple([getattr(self, name) for name in self.__slots__])


# ----- collect -> worker ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartRun(Message):
    key: int
    task: Task
    sample_index: int


@dataclass(frozen=True, slots=True)
class GenReply(Message):
    """The answer to GenRequest `request`: its generation, or the exception the engine raised."""

    request: int
    generation: Generation | None
    error: Exception | None


@dataclass(frozen=True, slots=True)
class Stop(Message):
    """Every run is recorded: end once the runs in hand have ended."""


# ----- worker -> collect ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready(Message):
    """Set up (workflow loaded, tokenizers read): the worker takes runs."""


@dataclass(frozen=True, slots=True)
class InitError(Message):
    text: str


@dataclass(frozen=True, slots=True)
class RunStarted(Message):
    key: int
    wall_time: float


@dataclass(frozen=True, slots=True)
class GenRequest(Message):
    request: int  # the worker's number for it, answered by GenReply
    engine_key: int
    prompt_ids: list[int]
    sampling: SamplingParams


@dataclass(frozen=True, slots=True)
class CallMade(Message):
    """One model call of run `key`, as it is recorded (a run collect has to stop keeps the calls it made)."""

    key: int
    call: ModelCall


@dataclass(frozen=True, slots=True)
class RunDone(Message):
    key: int
    trajectory: Trajectory  # without its calls: they came one by one in CallMade
    roles: set[str]


@dataclass(frozen=True, slots=True)
class Idle(Message):
    received: int  # collect's messages handled so far
