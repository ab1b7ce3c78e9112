"""Prefix-shared training: the sequences of a batch packed into a prefix tree, each distinct prefix forwarded once.

The sequences (SFT rows; DPO's prompt+chosen and prompt+rejected) are sorted, so a trie over their token ids is
laid out depth-first by walking them in order; each sequence adds only the tokens after its longest common prefix
with the one before it. Every token attends to itself and its ancestors (a tree attention mask), and its position
id is its depth, so its hidden state is exactly the one it has in each sequence that holds it.

Where a sequence branches off at depth l, the node at depth l-1 is forwarded once more (a copy: same token, same
depth, same ancestors) right before the new branch. So every tree token's parent sits just before it, and the
model's own next-token shift scores each token from its parent: TRL's fused LM head and loss code run unchanged.

The Trainer still sees the per-sequence batch (input_ids, labels, completion_mask as today); the tree rides along
under `tree_*` keys. The model's forward, patched here, runs the tree and scatters each token's log-probability
(entropy, top-1) back to every sequence position that holds it, so TRL sums per-sequence log-probs (DPO), counts
trained tokens and averages the loss exactly as it does for the per-sequence batch.

A tree holds at most --max_length tokens, and a sequence sharing too little with the open tree starts a new one
(a dense mask computes every query-key pair of a tree); the trees of a batch are one padded forward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

TREE_KEYS = ("tree_input_ids", "tree_position_ids", "tree_end", "tree_index", "tree_attention_mask")
# attention kernels that take an arbitrary mask (flash attention takes only lengths)
TREE_ATTENTION = ("sdpa", "eager", "flex_attention")


@dataclass
class Forest:
    """Sequences packed into trees of at most `max_length` tokens. Per tree: token ids, depths (position ids) and,
    per token, the end of its subtree (it is visible to the tokens in [itself, end)). Per sequence: its tree and,
    per token, the tree position whose log-probability is that token's."""

    input_ids: list[list[int]] = field(default_factory=list)
    position_ids: list[list[int]] = field(default_factory=list)
    ends: list[list[int]] = field(default_factory=list)
    row_tree: list[int] = field(default_factory=list)
    row_positions: list[list[int]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.input_ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def pack(rows: list[list[int]], max_length: int | None = None, attention_cost: float = 0.0) -> Forest:
    """The trie of `rows`, in trees of at most max_length tokens (a tree that would exceed it is closed and the next
    sequence starts a new one: trees split between branches, a sequence is never cut). Rows must each fit.

    attention_cost: what one query-key pair of a dense attention mask costs, in tokens forwarded. With it, a
    sequence that shares too little with the open tree starts a new one: a dense mask computes every pair of a
    tree, so a tree of n tokens costs n + attention_cost * n**2, and sequences that share only a short prefix
    (a system prompt) are cheaper forwarded apart than as one long tree."""
    forest = Forest(row_tree=[0] * len(rows), row_positions=[[] for _ in rows])
    ids = pos = ends = path = None  # the open tree; path: the positions of the last sequence's tokens, by depth
    prev = None  # the last row added to the open tree

    def close():
        for p in path:
            ends[p] = len(ids)

    for r in sorted(range(len(rows)), key=lambda i: rows[i]):
        seq = rows[r]
        if max_length is not None and len(seq) > max_length:
            raise ValueError(f"--max_length {max_length}: a sequence of {len(seq)} tokens reached the prefix tree")
        shared = 0 if prev is None else _common_prefix(rows[prev], seq)
        copy = 0 < shared < len(seq) and shared < len(rows[prev])  # a branch below the root: its parent again
        cost = len(seq) - shared + copy
        if prev is not None:  # joined: the new tokens and the pairs they add, (n + cost)^2 - n^2; apart: a tree alone
            joined = cost + attention_cost * (2 * len(ids) + cost) * cost
            apart = len(seq) + attention_cost * len(seq) ** 2
        if prev is None or (max_length is not None and len(ids) + cost > max_length) or joined > apart:
            if prev is not None:
                close()
            ids, pos, ends, path = [], [], [], []
            forest.input_ids.append(ids)
            forest.position_ids.append(pos)
            forest.ends.append(ends)
            prev, shared, copy = None, 0, False
        tree = len(forest.input_ids) - 1
        if prev is not None and shared < len(path):  # the branch: what lies below it leaves the path
            for p in path[max(shared - 1, 0) if copy else shared :]:
                ends[p] = len(ids)
            del path[shared:]
        if copy:
            path[shared - 1] = len(ids)
            ids.append(seq[shared - 1])
            pos.append(shared - 1)
            ends.append(0)
        positions = list(forest.row_positions[prev][:shared]) if prev is not None else []
        for depth in range(shared, len(seq)):
            path.append(len(ids))
            positions.append(len(ids))
            ids.append(seq[depth])
            pos.append(depth)
            ends.append(0)
        forest.row_tree[r], forest.row_positions[r] = tree, positions
        prev = r
    if prev is not None:
        close()
    return forest


def visible(end: torch.Tensor) -> torch.Tensor:
    """[trees, 1, q, kv] bool: query q sees key j iff j is q or an ancestor of q (j <= q < end[j])."""
    n = end.shape[-1]
    at = torch.arange(n, device=end.device)
    return ((at[None, None, :] <= at[None, :, None]) & (at[None, :, None] < end[:, None, :]))[:, None]


def attention_mask(end: torch.Tensor, implementation: str, dtype: torch.dtype):
    """The tree mask in the form the model's attention kernel takes: bool for SDPA, additive for eager, a block
    mask for flex attention."""
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def mask_mod(b, h, q, kv):
            return (kv <= q) & (q < end[b, kv])

        n = end.shape[-1]
        return create_block_mask(mask_mod, end.shape[0], None, n, n, device=end.device)
    allowed = visible(end)
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=end.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


class TreeCollator:
    """The trainer's own collator, then the batch's sequences (its attention_mask rows, right-padded) packed into
    trees under `tree_*` keys."""

    def __init__(self, collator, max_length: int | None, pad_token_id: int = 0, attention_cost: float = 0.0):
        self.collator, self.max_length, self.pad_token_id = collator, max_length, pad_token_id
        self.attention_cost = attention_cost

    def __call__(self, examples):
        batch = self.collator(examples)
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(dim=1)
        if not bool((mask.cumsum(dim=1) == torch.arange(1, mask.shape[1] + 1).clamp(max=lengths[:, None])).all()):
            raise ValueError(
                "--prefix_sharing true: the collated batch is not right-padded; pass --prefix_sharing false"
            )
        rows = [input_ids[i, : int(n)].tolist() for i, n in enumerate(lengths)]
        forest = pack(rows, self.max_length, self.attention_cost)
        width = max(len(t) for t in forest.input_ids)
        trees = len(forest.input_ids)
        tree_ids = torch.full((trees, width), self.pad_token_id, dtype=input_ids.dtype)
        tree_pos = torch.zeros((trees, width), dtype=torch.long)
        tree_end = torch.arange(1, width + 1).repeat(trees, 1)  # padding sees only itself
        tree_mask = torch.zeros((trees, width), dtype=torch.long)
        for t, (ids, pos, ends) in enumerate(zip(forest.input_ids, forest.position_ids, forest.ends)):
            tree_ids[t, : len(ids)] = torch.tensor(ids, dtype=input_ids.dtype)
            tree_pos[t, : len(ids)] = torch.tensor(pos)
            tree_end[t, : len(ids)] = torch.tensor(ends)
            tree_mask[t, : len(ids)] = 1
        index = torch.zeros(input_ids.shape, dtype=torch.long)
        for i, positions in enumerate(forest.row_positions):
            index[i, : len(positions)] = torch.tensor(positions, dtype=torch.long) + forest.row_tree[i] * width
        batch.update(
            tree_input_ids=tree_ids,
            tree_position_ids=tree_pos,
            tree_end=tree_end,
            tree_index=index,
            tree_attention_mask=tree_mask,
        )
        return batch


@dataclass
class TokenCount:
    """Tokens of the training forwards on this rank: forwarded (the trees) and unshared (the sequences). Summed
    as tensors on the device (no host sync per step); `totals()` reads them."""

    forwarded: torch.Tensor | int = 0
    unshared: torch.Tensor | int = 0

    def add(self, forwarded: torch.Tensor, unshared: torch.Tensor) -> None:
        self.forwarded = self.forwarded + forwarded.sum()
        self.unshared = self.unshared + unshared.sum()

    def totals(self) -> tuple[int, int]:
        return int(self.forwarded), int(self.unshared)


def _per_sequence(value: torch.Tensor | None, index: torch.Tensor, trained: torch.Tensor):
    """A per-tree-token field [trees, width - 1] as the per-sequence field [rows, length - 1] (zero off `trained`)."""
    if value is None:
        return None
    flat = torch.cat([value.new_zeros(value.shape[0], 1), value], dim=1).reshape(-1)
    return torch.where(trained, flat[index], torch.zeros((), dtype=value.dtype, device=value.device))


def tree_forward(original, attn_implementation: str, dtype: torch.dtype, count: TokenCount):
    """`original` (a forward with TRL's fused LM head) made to run a batch's tree where the batch has one, its
    per-token outputs returned in the batch's per-sequence layout. Counts the tokens of forwards with gradients
    (the trained model's, not the reference's)."""

    @functools.wraps(original)
    def forward(*args, **kwargs):
        tree = {key: kwargs.pop(key, None) for key in TREE_KEYS}
        if tree["tree_input_ids"] is None:
            if torch.is_grad_enabled() and kwargs.get("attention_mask") is not None:
                count.add(kwargs["attention_mask"], kwargs["attention_mask"])
            return original(*args, **kwargs)
        if args or not kwargs.get("fused_lm_head"):
            raise RuntimeError("prefix sharing: the tree is only run through TRL's fused LM head (keyword inputs)")
        labels, num_items = kwargs.pop("labels"), kwargs.pop("num_items_in_batch", None)
        rows_mask = kwargs.pop("attention_mask")
        kwargs.pop("input_ids")
        kwargs.pop("position_ids", None)
        if torch.is_grad_enabled():
            count.add(tree["tree_attention_mask"], rows_mask)
        shifted = labels[:, 1:]
        trained = shifted != -100
        index = tree["tree_index"][:, 1:]
        tree_ids = tree["tree_input_ids"]
        tree_labels = torch.full((tree_ids.numel(),), -100, dtype=labels.dtype, device=labels.device)
        tree_labels[index[trained]] = shifted[trained]
        mask = attention_mask(tree["tree_end"], attn_implementation, dtype)
        out = original(
            input_ids=tree_ids,
            position_ids=tree["tree_position_ids"],
            attention_mask=mask,
            labels=tree_labels.view(tree_ids.shape),
            **kwargs,
        )
        log_probs = _per_sequence(out.log_probs, index, trained)
        # as the fused head computes it; TRL's loss code sums log_probs itself. A MoE load-balancing loss (aux_loss)
        # is the tree's tokens', not the sequences'
        loss = -log_probs.sum() / (trained.sum().clamp(min=1) if num_items is None else num_items)
        return type(out)(
            loss=loss,
            log_probs=log_probs,
            entropy=_per_sequence(out.entropy, index, trained),
            log_sum_sq_probs=_per_sequence(out.log_sum_sq_probs, index, trained),
            mean_logits=_per_sequence(out.mean_logits, index, trained),
            is_top1=_per_sequence(out.is_top1, index, trained),
            label_mask=trained,
            aux_loss=out.aux_loss,
        )

    return forward


def install(trainer, prefix_sharing: bool) -> TokenCount:
    """Patch the trainer's models (the trained one and a reference model) to run trees and count tokens; with
    prefix_sharing, wrap its collator to build them. Returns the count, which grows as training runs."""
    count = TokenCount()
    args = trainer.args
    if prefix_sharing and (getattr(args, "padding_free", False) or getattr(args, "packing", False)):
        raise ValueError(
            "--prefix_sharing true: cannot be combined with --packing or --padding_free (the tree is its own "
            "packing); drop those or pass --prefix_sharing false"
        )
    if prefix_sharing and getattr(args, "label_smoothing_factor", 0):
        raise ValueError(
            f"--label_smoothing_factor {args.label_smoothing_factor}: needs full logits, and the prefix tree returns "
            "per-token log-probabilities only; pass --prefix_sharing false"
        )
    models = [trainer.model] + ([trainer.ref_model] if getattr(trainer, "ref_model", None) is not None else [])
    for model in models:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the patched model
        implementation = base.config._attn_implementation  # transformers 5 has no public getter
        if prefix_sharing and implementation not in TREE_ATTENTION:
            raise ValueError(
                f"--attn_implementation {implementation}: cannot take the prefix tree's attention mask; use one of "
                f"{', '.join(TREE_ATTENTION)}, or pass --prefix_sharing false"
            )
        base.forward = tree_forward(base.forward, implementation, base.dtype, count)
    if prefix_sharing:
        pad = trainer.processing_class.pad_token_id
        cost = attention_cost(models[0].config, models[0].config._attn_implementation)
        trainer.data_collator = TreeCollator(trainer.data_collator, args.max_length, 0 if pad is None else pad, cost)
    return count


def attention_cost(config, implementation: str) -> float:
    """One query-key pair of a dense mask in tokens forwarded: per layer a pair costs ~4*hidden flops (scores and
    values), a token ~2*(4*hidden**2 + 3*hidden*intermediate) (projections and MLP). Flex attention skips the
    mask's empty blocks, so a long tree costs it no more than its sequences' pairs: 0."""
    if implementation == "flex_attention":
        return 0.0
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    return 2.0 / (4 * hidden + 3 * intermediate)
