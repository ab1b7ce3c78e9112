"""Advanced mode, as in the reference: a complete 9-player werewolves game. Every role is
registered with its default model and every agent is bound with get_model(role); only the
trainable targets (the werewolves, unless --trainable-targets says otherwise) are trained.

    python -m collect --workflow examples/werewolves/workflow.py:WerewolvesWorkflow \
        --tasks examples/werewolves/tasks.jsonl --max-tokens 24 --out runs/werewolves
    python -m collect ... --trainable-targets seer,witch   # train the good side's specialists

Default models for roles not being trained: the collected checkpoint itself (recorded as not
trainable), unless OPENAI_BASE_URL and WEREWOLVES_GOOD_MODEL / WEREWOLVES_BAD_MODEL name an
OpenAI-compatible endpoint and its models (OPENAI_API_KEY if the endpoint needs one).

Every decision is parsed from free text (the first valid "PlayerN" or number) with a seeded
random fallback, and someone dies every day, so even a model that writes garbage finishes
each game, in at most 9 rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from collections import Counter

from agentscope.agent import ReActAgent
from agentscope.formatter import OpenAIMultiAgentFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import Msg

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

ROLES = ["werewolf"] * 3 + ["villager"] * 3 + ["seer", "witch", "hunter"]
WEREWOLVES, VILLAGERS = "werewolves", "villagers"
MAX_ROUNDS = 9  # a day vote kills one player each round, so 9 players cannot outlast this


def side_of(role: str) -> str:
    return WEREWOLVES if role == "werewolf" else VILLAGERS


def default_model_for(role: str):
    """The model serving `role` when it is not trained: an endpoint if configured, else None
    (the checkpoint, recorded as not trainable)."""
    env = "WEREWOLVES_BAD_MODEL" if side_of(role) == WEREWOLVES else "WEREWOLVES_GOOD_MODEL"
    if not (os.environ.get("OPENAI_BASE_URL") and os.environ.get(env)):
        return None
    from agentscope.model import OpenAIChatModel

    return OpenAIChatModel(
        model_name=os.environ[env],
        api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
        stream=False,
        client_kwargs={"base_url": os.environ["OPENAI_BASE_URL"]},
    )


def trainable_side(targets: list[str] | None) -> str:
    """The side the trained roles play; None (every role) or mixed sides reward the villagers."""
    sides = {side_of(r) for r in targets or [] if r in ROLES}
    return WEREWOLVES if sides == {WEREWOLVES} else VILLAGERS


def named(text: str, options: list[str], bare_numbers: bool = True) -> str | None:
    """The first option the text names, as "Player3" or (bare_numbers) a bare "3"."""
    pattern = r"(?:player\s*)?(\d+)" if bare_numbers else r"player\s*(\d+)"
    for number in re.findall(pattern, text or "", flags=re.IGNORECASE):
        if f"Player{int(number)}" in options:
            return f"Player{int(number)}"
    return None


def pick(text: str, options: list[str], rng: random.Random) -> str:
    return named(text, options) or rng.choice(options)


def task_seed(task: WorkflowTask) -> int:
    seed = task.metadata.get("seed")
    if seed is None:  # a stable seed from the task id
        seed = int(hashlib.sha256(task.task_id.encode()).hexdigest()[:8], 16)
    return int(seed)


def player_prompt(name: str, role: str, wolves: list[str]) -> str:
    prompt = (
        f"You are {name} in a game of werewolves with 9 players: 3 werewolves, 3 villagers, a seer, "
        f"a witch and a hunter. Your role: {role}. Answer in one short sentence."
    )
    if role == "werewolf":
        prompt += f" Your fellow werewolves: {', '.join(w for w in wolves if w != name)}."
    return prompt


class WerewolvesWorkflow(Workflow):
    name: str = "werewolves"
    trainable_targets: list = ["werewolf"]

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        seed = task_seed(task)
        roles = list(ROLES)
        random.Random(seed).shuffle(roles)  # the same deal for every sample of a task
        self.rng = random.Random(f"{seed}-{task.sample_index}")  # fallbacks differ per sample
        self.roles = {f"Player{i + 1}": role for i, role in enumerate(roles)}
        wolves = [n for n, r in self.roles.items() if r == "werewolf"]

        self.players: dict[str, ReActAgent] = {}
        for i, role in enumerate(roles):
            model_tuner.register_model(role, default_model=default_model_for(role))
            name = f"Player{i + 1}"
            self.players[name] = ReActAgent(
                name=name,
                sys_prompt=player_prompt(name, role, wolves),
                model=model_tuner.get_model(role),
                formatter=OpenAIMultiAgentFormatter(),
                memory=InMemoryMemory(),
                max_iters=1,
            )
        self.alive = list(self.players)
        self.eliminated: list[dict] = []
        self.potions = {"save": True, "poison": True}

        winner, rounds = None, 0
        while winner is None and rounds < MAX_ROUNDS:
            rounds += 1
            winner = await self.night(rounds) or await self.day(rounds)
        winner = winner or self.winner() or VILLAGERS  # unreachable: a guard, not a rule

        side = trainable_side(model_tuner.trainable_targets)
        return WorkflowOutput(
            reward=1.0 if winner == side else 0.0,
            metadata={
                "winner": winner,
                "trainable_side": side,
                "roles": self.roles,
                "rounds": rounds,
                "eliminated": self.eliminated,
                "survivors": self.alive,
            },
        )

    # ----- helpers --------------------------------------------------------------------
    def alive_with(self, role: str) -> list[str]:
        return [n for n in self.alive if self.roles[n] == role]

    def winner(self) -> str | None:
        wolves = len(self.alive_with("werewolf"))
        if wolves == 0:
            return VILLAGERS
        return WEREWOLVES if wolves >= len(self.alive) - wolves else None

    async def ask(self, name: str, text: str) -> str:
        reply = await self.players[name](Msg("moderator", text, "user"))
        return reply.get_text_content() or ""

    async def announce(self, text: str, to: list[str] | None = None) -> None:
        msg = Msg("moderator", text, "user")
        for name in self.alive if to is None else to:
            await self.players[name].observe(msg)

    async def kill(self, name: str, round_no: int, cause: str) -> None:
        self.alive.remove(name)
        self.eliminated.append({"player": name, "role": self.roles[name], "round": round_no, "cause": cause})
        if self.roles[name] == "hunter" and cause != "poison" and self.alive:  # a poisoned hunter cannot shoot
            target = pick(
                await self.ask(name, f"You are dead. Shoot one of: {', '.join(self.alive)}."), self.alive, self.rng
            )
            await self.announce(f"The hunter {name} shoots {target}.")
            await self.kill(target, round_no, "hunter")
        elif self.alive:  # last words: also a night-one victim gets a say
            await self.announce(f"{name}'s last words: {await self.ask(name, 'You are out. Your last words?')}")

    # ----- the phases -----------------------------------------------------------------
    async def night(self, n: int) -> str | None:
        # Short memories keep prompts short: each night starts from a public summary.
        for name in self.alive:
            await self.players[name].memory.clear()
        out = ", ".join(e["player"] for e in self.eliminated) or "nobody"
        await self.announce(f"Night {n}. Alive: {', '.join(self.alive)}. Out: {out}.")

        wolves = self.alive_with("werewolf")
        prey = [p for p in self.alive if p not in wolves]
        votes = []
        for wolf in wolves:  # one after another: each wolf hears the earlier proposals
            text = await self.ask(wolf, f"Werewolves, name a player to kill: {', '.join(prey)}.")
            votes.append(pick(text, prey, self.rng))
            await self.announce(f"{wolf} proposes {votes[-1]}.", to=[w for w in wolves if w != wolf])
        victim = self.plurality(votes)
        await self.announce(f"The werewolves kill {victim}.", to=wolves)

        for seer in self.alive_with("seer"):
            others = [p for p in self.alive if p != seer]
            checked = pick(
                await self.ask(seer, f"Seer, name a player to check: {', '.join(others)}."), others, self.rng
            )
            is_wolf = "is" if self.roles[checked] == "werewolf" else "is not"
            await self.announce(f"{checked} {is_wolf} a werewolf.", to=[seer])

        poisoned = None
        for witch in self.alive_with("witch"):
            if not any(self.potions.values()):
                break
            choices = ["'save'"] * self.potions["save"] + ["a player to poison"] * self.potions["poison"]
            text = await self.ask(witch, f"Witch, {victim} was attacked. Reply {', '.join(choices)} or 'pass'.")
            if self.potions["save"] and "save" in text.lower():
                self.potions["save"], victim = False, None
            elif self.potions["poison"]:
                # Optional, so only an explicit "PlayerN" counts: a stray digit must not kill.
                poisoned = named(text, [p for p in self.alive if p != witch], bare_numbers=False)
                self.potions["poison"] = poisoned is None

        dead = [p for p in (victim, poisoned) if p is not None]
        for name in dict.fromkeys(dead):
            if name in self.alive:
                await self.kill(name, n, "werewolves" if name == victim else "poison")
        return self.winner()

    async def day(self, n: int) -> str | None:
        night_dead = [e["player"] for e in self.eliminated if e["round"] == n]
        await self.announce(
            f"Day {n}. Died last night: {', '.join(night_dead) or 'nobody'}. Alive: {', '.join(self.alive)}."
        )
        for name in list(self.alive):
            speech = await self.ask(name, "Speak briefly: who do you suspect?")
            await self.announce(f"{name} says: {speech}", to=[p for p in self.alive if p != name])

        # Votes are secret and simultaneous: asked together (the engine batches them), parsed in seat order.
        ballots = {name: [p for p in self.alive if p != name] for name in self.alive}
        texts = await asyncio.gather(
            *(self.ask(name, f"Vote to eliminate one of: {', '.join(others)}.") for name, others in ballots.items())
        )
        votes = [pick(text, others, self.rng) for text, others in zip(texts, ballots.values())]
        out = self.plurality(votes)
        await self.announce(f"Votes: {', '.join(votes)}. {out} is eliminated.")
        await self.kill(out, n, "vote")
        return self.winner()

    def plurality(self, votes: list[str]) -> str:
        counts = Counter(votes)
        top = max(counts.values())
        return self.rng.choice(sorted(p for p, c in counts.items() if c == top))
