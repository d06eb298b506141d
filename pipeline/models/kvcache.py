"""KV caches for batched greedy decoding on a CPU (used by pipeline.models.target).

- `RoomyLayer`: transformers' DynamicLayer torch.cat's the whole cache at every decoding
  step, a copy of every row's keys and values; with 80 rows of ~400 positions that is
  ~1.5 GB of memory traffic per step on 2 cores. This layer writes each step into room
  reserved up front and hands attention a view.
- `prefix_cache`: rows that share a prefix (the system prompt, or a one-shot
  demonstration) get its keys and values from one forward pass per distinct prefix.
  Several prefixes can share one batch: each sits at positions 0..len-1 of its rows,
  zeros after it up to the longest prefix, masked, so a step of decoding serves several
  candidates' dev rows at once (on a CPU a decoding step streams all weights whatever
  the batch, so more rows per step is nearly free).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    """A DynamicLayer that writes into preallocated room (`room` positions beyond the
    first update) instead of concatenating; it grows by doubling if the room runs out."""

    def __init__(self, room: int):
        super().__init__()
        self.room, self.n = room, 0
        self._k = self._v = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        m = key_states.shape[-2]
        if self._k is None:
            self._k = self._alloc(key_states, m + self.room)
            self._v = self._alloc(value_states, m + self.room)
        elif self.n + m > self._k.shape[-2]:  # out of room: double, copying once
            self._k = self._grown(self._k, 2 * (self.n + m))
            self._v = self._grown(self._v, 2 * (self.n + m))
        self._k[:, :, self.n:self.n + m] = key_states
        self._v[:, :, self.n:self.n + m] = value_states
        self.n += m
        self._views()
        return self.keys, self.values

    @staticmethod
    def _alloc(like: torch.Tensor, capacity: int) -> torch.Tensor:
        b, h, _, d = like.shape
        return like.new_empty((b, h, capacity, d))

    def _grown(self, buf: torch.Tensor, capacity: int) -> torch.Tensor:
        out = self._alloc(buf, capacity)
        out[:, :, :self.n] = buf[:, :, :self.n]
        return out

    def _views(self) -> None:
        self.keys = self._k[:, :, :self.n]
        self.values = self._v[:, :, :self.n]

    def get_seq_length(self) -> int:
        return self.n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is not None:  # copy the filled part only, into the same room
            self._k, self._v = (self._kept(b, indices) for b in (self._k, self._v))
            self._views()

    def _kept(self, buf: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = buf.new_empty((len(indices),) + tuple(buf.shape[1:]))
        out[:, :, :self.n] = buf[indices, :, :self.n]
        return out

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._views()


def prefix_cache(model, prefixes: list[list[int]], row_prefix: list[int],
                 room: int) -> tuple[DynamicCache, int]:
    """A cache of RoomyLayers for len(row_prefix) rows, row i holding the keys and values
    of prefixes[row_prefix[i]] at positions 0..len-1 and zeros (to be masked) up to the
    longest prefix, P; `room` more positions reserved. Each prefix runs once. Returns
    (cache, P)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [RoomyLayer(room) for _ in cache.layers]
    width = max((len(p) for p in prefixes), default=0)
    if not width:
        return cache, 0
    per_layer: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for ids in prefixes:
        one = DynamicCache(config=model.config)
        if ids:
            model(input_ids=torch.tensor([ids], device=model.device), cache=one,
                  use_cache=True)
        per_layer.append([(lay.keys, lay.values) for lay in one.layers])
    pick = torch.tensor(row_prefix, device=model.device)
    for li, layer in enumerate(cache.layers):
        kv = []
        for j in (0, 1):
            like = next(p[li][j] for p in per_layer if p[li][j] is not None and p[li][j].numel())
            stack = like.new_zeros((len(prefixes), like.shape[1], width, like.shape[3]))
            for g, p in enumerate(per_layer):
                t = p[li][j]
                if t is not None and t.numel():
                    stack[g, :, :t.shape[-2]] = t[0]
            kv.append(stack.index_select(0, pick))
        layer.update(kv[0], kv[1])
    return cache, width
