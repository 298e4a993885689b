"""Plain-PyTorch helpers shared by the block- and stripe-selecting peers (MInference, FlexPrefill, XAttention):
pooling over token blocks, the last rows' column and diagonal sums, stable ranking, cumulative-mass counts, JS
distance, block-pattern densities. No host syncs (their `density=` solves bisect on the device:
attention/device_solve.py).

How a default estimate runs on CUDA (`estimate`): captured once per input shape as a CUDA graph and replayed for
every layer (input copies, one graph launch, output clones), which the absence of host syncs and of any state but
per-shape constants (`cached`, on the method instance) makes possible. scripts/count_launches.py counts the launches.

Ties: every ranking here is a stable descending sort, so among equal scores the lower index comes first.
"""
import warnings
from collections.abc import Callable

import torch

from attention.backend import triton_enabled
from attention.kernels.config import estimate_graphs
from attention.density import block_cells, blocks_density  # noqa: F401  (the peers count tiles through here)
from attention.scores import torch_sampled_scores


def last_rows_scores(cache: dict, q, k, scale: float, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns, diagonals) [B, Hq, Sk] fp32: the last `count` query rows' causal softmax summed down each key column
    and each diagonal (attention.scores.sampled_scores with_diag). On the Triton path the stage-1 row plan is built
    once per shape and kept in `cache` (a method's own dict), so later layers spend exactly the two kernel launches."""
    q_len, k_len, dim = q.shape[2], k.shape[2], q.shape[-1]
    if not triton_enabled(q.device):
        return torch_sampled_scores(q, k, scale, torch.arange(max(0, q_len - count), q_len, device=q.device), True)
    from attention.kernels.stage1 import launch_sampled_scores, row_plan  # imported here: it loads triton

    key = ("last_rows", count, q_len, k_len, dim, str(q.device))
    if key not in cache:
        cache[key] = row_plan(torch.arange(max(0, q_len - count), q_len, device=q.device), q_len, k_len, dim, True)
    return launch_sampled_scores(q, k, scale, cache[key], True)


def cached(cache: dict, key, make):
    """cache[key], made once by make() (per-shape constants: index grids, causal masks)."""
    if key not in cache:
        cache[key] = make()
    return cache[key]


GRAPH_MAX_TOKENS = 1 << 16  # longer inputs estimate eagerly: their GPU work hides the launches, and a kept graph
                            # would hold its intermediates (about a GB at 128K) for the method's lifetime


def graphs_enabled(device) -> bool:
    """Whether default estimates replay from CUDA graphs: on CUDA where the Triton kernels run, unless the kernel
    settings say otherwise (attention.kernels.config.override(estimate_graphs=False), recorded in the manifest)."""
    return torch.device(device).type == "cuda" and triton_enabled(device) and estimate_graphs()


def capture(fn: Callable, statics: tuple[torch.Tensor, ...]):
    """(outputs, replay): fn(*statics) run once on a side stream (Triton compiles, per-shape caches fill), then
    captured on that stream as one CUDA graph whose replay rewrites `outputs` from whatever `statics` hold.
    capture_begin / capture_end directly: torch.cuda.graph would also empty the allocator's cache (the model's
    activations re-allocate after every new prompt length). Thread-local capture mode: another thread's CUDA calls
    (a loader, a second device) do not break it."""
    with torch.cuda.device(statics[0].device):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            fn(*statics)
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                outputs = fn(*statics)
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
    return outputs, graph.replay


def estimate(cache: dict, key, fn: Callable, inputs: tuple[torch.Tensor, ...],
             max_tokens: int | None = None) -> tuple[torch.Tensor | None, ...]:
    """fn(*inputs) -> tuple of tensors (or None), without host syncs and with per-shape state only (so one capture
    serves every layer): on CUDA replayed from a graph captured once per `key` (the shape and every host-side
    value fn depends on), so a layer costs the input copies, one graph launch and the output clones instead of
    fn's dozens of launches. Per device the last key's graph is kept (its intermediates hold memory until the
    shape changes); inputs longer than max_tokens (GRAPH_MAX_TOKENS unless the method's intermediates are smaller)
    run eagerly. A capture that fails is reported once and the method runs eagerly from then on."""
    limit = GRAPH_MAX_TOKENS if max_tokens is None else max_tokens
    too_long = max(x.shape[-2] if x.dim() > 1 else 0 for x in inputs) > limit
    if too_long or "graph_failed" in cache or not graphs_enabled(inputs[0].device):
        return fn(*inputs)
    slot = ("graph", str(inputs[0].device))
    entry = cache.get(slot)
    if entry is None or entry[0] != key:
        cache.pop(slot, None)  # free the old shape's graph before capturing the new one
        statics = tuple(x.clone() for x in inputs)
        try:
            outputs, replay = capture(fn, statics)
        except RuntimeError as err:  # e.g. an op that cannot be captured: eager from now on, said once
            cache["graph_failed"] = str(err)
            warnings.warn(f"estimate not captured as a CUDA graph, running eagerly: {str(err)[:200]}", stacklevel=2)
            return fn(*inputs)
        entry = cache[slot] = (key, statics, outputs, replay)
    _, statics, outputs, replay = entry
    with torch.inference_mode():  # statics made under inference mode take the copy outside it too
        for static, x in zip(statics, inputs):
            static.copy_(x)
    replay()
    return tuple(None if out is None else out.clone() for out in outputs)


def block_pool_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over consecutive token blocks along dim -2 ([..., S, D] -> [..., ceil(S/block), D]); a short last
    block is averaged over its real tokens only."""
    length, dim = x.shape[-2], x.shape[-1]
    full = length // block
    parts = []  # summed in fp32 straight from x's dtype: no fp32 copy of x (it is all of q for FlexPrefill)
    if full:
        whole = x[..., :full * block, :].reshape(*x.shape[:-2], full, block, dim)
        parts.append(whole.sum(-2, dtype=torch.float32) / block)
    if length > full * block:
        parts.append(x[..., full * block:, :].sum(-2, keepdim=True, dtype=torch.float32) / (length - full * block))
    return torch.cat(parts, -2) if len(parts) > 1 else parts[0]


FLAT_MAX = 1 << 30  # elements one flat sort takes (XAttention's tile grid at 1M x 32 heads is 2^31)
LONG_ROWS = 4096  # rows longer than this are sorted as one flat array (see ranked)


def ranked(scores: torch.Tensor, values: bool = True, order: bool = True) -> tuple[torch.Tensor | None,
                                                                                   torch.Tensor | None]:
    """(values, order) of a stable descending sort along the last dim (ties: lower index first); values=False or
    order=False leaves that one out (None), saving its gathers on the long-row path.

    A few long rows (a head's keys, a head's tile grid) are sorted as one flat array, then stably by row: two
    radix sorts in all, where a batched sort of long rows runs one sort per row (~15 launches each on CUDA; the
    128K profile counted 564 launches in FlexPrefill's estimate, most of them sorts)."""
    n = scores.shape[-1]
    if n <= LONG_ROWS or scores.numel() == n:
        v, o = torch.sort(scores, dim=-1, descending=True, stable=True)
        return (v if values else None), (o if order else None)
    if scores.numel() > FLAT_MAX:  # torch sorts at most INT_MAX elements along a dim: rank groups of whole rows
        rows = scores.reshape(-1, n)
        step = max(1, FLAT_MAX // n)
        parts = [ranked(rows[i:i + step], values, order) for i in range(0, rows.shape[0], step)]
        return tuple(torch.cat([p[j] for p in parts]).view(scores.shape) if want else None
                     for j, want in enumerate((values, order)))
    v, o = torch.sort(scores.reshape(-1), descending=True, stable=True)
    row = torch.div(o, n, rounding_mode="floor").to(torch.int32)
    row, by_row = torch.sort(row, stable=True)
    v = v[by_row].view(scores.shape) if values else None
    o = (o[by_row] % n).view(scores.shape) if order else None  # flat index -> index in its row
    return v, o


RANK_GROUP = 1 << 24  # entries ranked at once by ranked_prefix (16 rows of 1M keys)


def ranked_prefix(scores: torch.Tensor, count: int) -> torch.Tensor:
    """long [..., count]: the first `count` entries of ranked(scores)'s order (the same stable descending order),
    ranked in groups of rows of at most RANK_GROUP entries so that the whole order and the sort's index arrays are
    never held at once (at 1M keys x 64 rows they are ~3 GiB); one group, as ranked, up to 128K keys x 64 rows."""
    n = scores.shape[-1]
    rows = scores.reshape(-1, n)
    step = max(1, RANK_GROUP // n)
    if step >= rows.shape[0]:  # one group: as ranked (a view of its order)
        return ranked(scores, values=False)[1][..., :count]
    # each group's prefix copied out, so its whole order is freed before the next group's sort
    parts = [ranked(rows[i:i + step], values=False)[1][:, :count].contiguous() for i in range(0, rows.shape[0], step)]
    return torch.cat(parts).view(*scores.shape[:-1], min(count, n))


def cover_count(scores: torch.Tensor, mass: float) -> torch.Tensor:
    """How many of the best entries FlexPrefill takes to cover `mass`: those whose running sum stays <= mass,
    plus one. long [...]."""
    values, _ = ranked(scores)
    return (values.cumsum(-1) <= mass).sum(-1) + 1


def causal_blocks(n: int, device=None) -> torch.Tensor:
    """bool [n, n]: tiles on or below the block diagonal."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def log_ratio_safe(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """p * log(p / m), 0 where p == 0."""
    return torch.where(p > 0, p * torch.log(p / m.clamp(min=torch.finfo(m.dtype).tiny)), 0.0)


def js_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Square root of the Jensen-Shannon divergence (natural log) between distributions along the last dim."""
    m = (p + q) / 2
    return torch.sqrt((0.5 * log_ratio_safe(p, m).sum(-1) + 0.5 * log_ratio_safe(q, m).sum(-1)).clamp(min=0))


__all__ = ["block_cells", "block_pool_mean", "blocks_density", "cached", "causal_blocks", "ceil_div", "cover_count",
           "estimate", "graphs_enabled", "js_distance", "last_rows_scores", "ranked", "ranked_prefix"]
