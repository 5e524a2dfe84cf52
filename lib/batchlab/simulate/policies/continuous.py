"""Continuous batching: iteration-level scheduling with a paged KV cache (Orca, vLLM)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batchlab.errors import InputError
from batchlab.simulate.policies.base import BATCH_LIMIT, Knob, Policy, Slider, register_policy
from batchlab.simulate.state import (
    INF,
    Batch,
    SimState,
    WaitQueue,
    blocks,
    check_kv_feasible,
)
from batchlab.steptime import StepBatch

__all__ = ["BATCHED_TOKENS", "CHUNKED_PREFILL", "ContinuousPolicy", "Prefill"]

_MAX_RUN = 1 << 16  # longest run of decode steps simulated at once (a row of the step table)
_NEVER = np.iinfo(np.int64).max  # decode tick of a free slot
_TOKEN_STEP = 256
_EMPTY = np.zeros(0, dtype=np.float64)


def _default_batched_tokens(requests) -> int:
    """The library default without chunked prefill, rounded up to the slider's step."""
    longest = int((requests["prompt_len"] + requests["gen_len"]).max())
    return max(8192, -(-longest // _TOKEN_STEP) * _TOKEN_STEP)


#: The policy explorer's control of ``max_num_batched_tokens``.
BATCHED_TOKENS = Slider(
    "max_num_batched_tokens",
    int,
    None,
    start=_default_batched_tokens,
    min_val=1,
    low=_TOKEN_STEP,
    max_val=lambda requests: max(32768, _default_batched_tokens(requests)),
    step=_TOKEN_STEP,
    unit="tokens",
    help="tokens per step at most",
    allow_none=True,
)
#: The policy explorer's chunked-prefill switch.
CHUNKED_PREFILL = Slider(
    "chunked_prefill", bool, False, help="prompts in chunks that share steps with decodes"
)


@dataclass(slots=True, eq=False)
class Prefill:
    """A prefill in progress (chunked mode): ``request`` (position), ``cached`` tokens already
    in its KV cache, ``prefill_left`` prompt (and recomputed) tokens still to prefill,
    ``tokens_left`` tokens still to emit, and its preemption ``key`` (largest goes first)."""

    request: int
    cached: int
    prefill_left: int
    tokens_left: int
    key: int


@register_policy
class ContinuousPolicy(Policy):
    """Iteration-level scheduling (Orca, vLLM) with a paged KV cache.

    Every step, sequences may join or leave the running batch (at most ``max_num_seqs``).
    KV cache: ``kv_blocks`` blocks of ``block_size`` tokens; a sequence holding ``c`` cached
    tokens holds ``⌈c / block_size⌉`` blocks; a request is admitted only if, after taking the
    blocks of what it prefills in that step, ``watermark · kv_blocks`` blocks stay free.

    * Without chunked prefill (vLLM's default scheduler): when requests can be admitted (in
      queue order, while their prompts total at most ``max_num_batched_tokens`` and the blocks
      allow), the step is a prefill of just those (running sequences wait one step);
      otherwise it is a decode step of every running sequence.
    * With chunked prefill (``chunk_size`` or ``chunked_prefill=True``; Sarathi-Serve, vLLM's
      chunked scheduler): a step holds every running decode (one token each), then the running
      partial prefills, then new admissions, each a chunk of at most ``chunk_size`` prompt
      tokens, while the step's tokens total at most ``max_num_batched_tokens``.
    * Preemption by recompute: when a step needs a new block for a decoding sequence and none
      is free, the running sequence last in (priority, admission) order is preempted: its
      blocks are freed and it goes back to the front of its waiting queue; when re-admitted it
      prefills its prompt and the tokens it had generated, which emits its next token. With
      chunked prefill, a step that preempted admits no new request (as vLLM).

    ``max_num_batched_tokens`` defaults to 2048 with chunked prefill and otherwise to
    ``max(8192, longest prompt + gen_len)`` (every request fits a step, as with vLLM's
    ``max_model_len``).

    Internals: the decoding sequences advance together, so they live in slots relative to a
    decode tick ``T`` (cached tokens ``base + T``, last token at tick ``fin``), with counts of
    ``base mod block_size``: a step's new blocks, the next completion and the context sum are
    O(1), and a run of ``k`` decode steps costs one vectorized call.
    """

    name = "continuous"
    iteration_level = True
    knobs = (
        Knob(
            "max_num_seqs",
            int,
            256,
            "running sequences at most",
            unit="sequences",
            min_val=1,
            explorer=BATCH_LIMIT,
        ),
        Knob(
            "max_num_batched_tokens",
            int,
            None,
            "tokens per step at most (None: 2048 with chunked prefill, else max(8192, longest "
            "prompt + gen_len))",
            unit="tokens",
            min_val=1,
            allow_none=True,
            explorer=BATCHED_TOKENS,
        ),
        Knob(
            "chunked_prefill",
            bool,
            None,
            "split prompts into chunks that share steps with decodes (None: on when chunk_size "
            "is given)",
            allow_none=True,
            explorer=CHUNKED_PREFILL,
        ),
        Knob(
            "chunk_size",
            int,
            None,
            "prompt tokens per chunk with chunked prefill (None: max_num_batched_tokens)",
            unit="tokens",
            min_val=1,
            allow_none=True,
        ),
        Knob(
            "watermark",
            float,
            0.01,
            "share of the KV blocks kept free when admitting",
            min_val=0,
            max_val=1,
            include_boundaries="left",
        ),
    )

    def validate(self) -> None:
        if self.chunked_prefill is False and self.chunk_size is not None:
            raise InputError(
                "chunk_size needs chunked prefill, but chunked_prefill=False was given",
                field="chunk_size",
            )

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, state: SimState) -> None:
        self._chunked = bool(self.chunked_prefill) or self.chunk_size is not None
        if self.max_num_batched_tokens is not None:
            tokens = self.max_num_batched_tokens
        elif self._chunked:
            tokens = 2048
        else:
            tokens = max(8192, int((state.prompt + state.gen).max()))
        self._tokens = tokens
        self._chunk = min(self.chunk_size or tokens, tokens)
        if self._chunked and tokens < self.max_num_seqs:
            raise InputError(
                f"max_num_batched_tokens ({tokens}) must be >= max_num_seqs ({self.max_num_seqs}) "
                "with chunked prefill (every running sequence decodes one token per step)",
                field="max_num_batched_tokens",
            )
        self._wm = int(self.watermark * state.kv_blocks)
        check_kv_feasible(state, self._wm, f" plus the {self._wm} watermark blocks")
        if not self._chunked:
            bad = state.prompt > tokens
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"prompt of {int(state.prompt[i])} tokens exceeds max_num_batched_tokens "
                    f"({tokens}) without chunked prefill",
                    field="max_num_batched_tokens",
                    request_id=state.request_ids[i],
                )
        bs = state.block_size
        self._bs = bs
        self._queue = WaitQueue(state.n_levels)
        self._generated = np.zeros(state.n, dtype=np.int64)
        self._key_scale = 1 << 40  # key = level · 2⁴⁰ + admission counter
        self._admitted = 0
        self._used = 0  # KV blocks held by running sequences
        self._preempted = False  # a preemption happened while composing the current step
        # decoding sequences in slots, relative to the decode tick T
        self._T = 0
        cap = min(self.max_num_seqs, 64)
        self.d_idx = np.zeros(cap, dtype=np.int64)  # request
        self.d_base = np.zeros(cap, dtype=np.int64)  # cached tokens = base + T
        self.d_fin = np.full(cap, _NEVER, dtype=np.int64)  # tick of the last token
        self.d_key = np.full(cap, -1, dtype=np.int64)  # preemption order: largest goes first
        self.d_on = np.zeros(cap, dtype=bool)
        self._free_slots = list(range(cap - 1, -1, -1))
        self._n_dec = 0
        self._base_sum = 0
        self._res = [0] * bs  # decoders per value of base mod bs
        self._lens = state.context_lens  # the step-time model wants each context length
        self._next_fin = INF
        self._partials: list[Prefill] = []  # prefills in progress (chunked mode)

    def on_arrivals(self, state: SimState, idx: np.ndarray) -> None:
        self._queue.push(idx, state.level)

    # -- running-set bookkeeping ---------------------------------------------------------------

    def _n_running(self) -> int:
        return self._n_dec + len(self._partials)

    def _next_key(self, level: int) -> int:
        k = level * self._key_scale + self._admitted
        self._admitted += 1
        return k

    def _grow(self) -> None:
        cap = self.d_idx.size
        new = min(max(2 * cap, 1), self.max_num_seqs + 1)
        extra = new - cap
        self.d_idx = np.concatenate([self.d_idx, np.zeros(extra, dtype=np.int64)])
        self.d_base = np.concatenate([self.d_base, np.zeros(extra, dtype=np.int64)])
        self.d_fin = np.concatenate([self.d_fin, np.full(extra, _NEVER, dtype=np.int64)])
        self.d_key = np.concatenate([self.d_key, np.full(extra, -1, dtype=np.int64)])
        self.d_on = np.concatenate([self.d_on, np.zeros(extra, dtype=bool)])
        self._free_slots.extend(range(new - 1, cap - 1, -1))

    def _add_decoder(self, i: int, cached: int, rem: int, key: int) -> None:
        """A sequence whose prefill is complete, with ``rem`` >= 1 tokens to emit, decodes."""
        if not self._free_slots:
            self._grow()
        s = self._free_slots.pop()
        base = cached - self._T
        fin = self._T + rem
        self.d_idx[s] = i
        self.d_base[s] = base
        self.d_fin[s] = fin
        self.d_key[s] = key
        self.d_on[s] = True
        self._base_sum += base
        self._res[base % self._bs] += 1
        self._n_dec += 1
        if fin < self._next_fin:
            self._next_fin = fin

    def _drop_slots(self, slots: list[int]) -> None:
        """Remove decoders and free their KV blocks."""
        bs, T = self._bs, self._T
        for s in slots:
            base = int(self.d_base[s])
            self._base_sum -= base
            self._res[base % bs] -= 1
            self._used -= blocks(base + T, bs)
            self.d_fin[s] = _NEVER
            self.d_key[s] = -1
            self.d_on[s] = False
            self._free_slots.append(s)
        self._n_dec -= len(slots)
        self._next_fin = int(self.d_fin.min()) if self._n_dec else INF

    def _new_blocks(self, k: int) -> int:
        """KV blocks the decoders need for their next ``k`` tokens: a decoder needs one at
        tick ``t`` when ``(base + t) mod bs == 0``."""
        T, bs, res = self._T, self._bs, self._res
        if k == 1:
            return res[(-T) % bs]
        full, r = divmod(k, bs)
        return full * self._n_dec + sum(res[(-(T + j)) % bs] for j in range(r))

    def _kv_steps(self, k: int, free: int) -> int:
        """Largest j <= k whose new blocks fit in ``free`` (k when they all fit)."""
        if self._new_blocks(k) <= free:
            return k
        n, bs, T, res = self._n_dec, self._bs, self._T, self._res
        full = free // n  # whole cycles of bs ticks: n blocks each
        left = free - full * n
        r = 0
        acc = res[(-T) % bs]
        while r < bs - 1 and acc <= left:
            r += 1
            acc += res[(-(T + r)) % bs]
        return min(k, full * bs + r)

    def _preempt_one(self, state: SimState) -> None:
        """Preempt the running sequence last in (priority, admission) order (recompute)."""
        bs = self._bs
        dk = int(self.d_key.max()) if self._n_dec else -1
        pk = max((p.key for p in self._partials), default=-1)
        if pk > dk:
            j = max(range(len(self._partials)), key=lambda t: self._partials[t].key)
            victim = self._partials.pop(j)
            i = victim.request
            self._used -= blocks(victim.cached, bs)
        else:
            v = int(np.argmax(self.d_key))
            i = int(self.d_idx[v])
            self._generated[i] = int(state.gen[i] - (self.d_fin[v] - self._T))
            self._drop_slots([v])
        state.preemptions[i] += 1
        self._queue.push_front(i, int(state.level[i]))
        self._preempted = True

    def _make_room_for_decodes(self, state: SimState) -> int:
        """Preempt until every decoder can take its next token's block; return those blocks."""
        while True:
            need = self._res[(-self._T) % self._bs] if self._n_dec else 0
            if need <= state.kv_blocks - self._used or self._n_running() <= 1:
                return need
            self._preempt_one(state)

    def _decoders(self, n: int) -> tuple[int, float, np.ndarray | None]:
        """(decoders, their context sum, their context lengths when the model wants them) at
        the next step, for ``n`` decoders (all of them, or none)."""
        if not n:
            return 0, 0.0, _EMPTY if self._lens else None
        s = float(self._base_sum + n * (self._T + 1))
        lens = None
        if self._lens:
            lens = (self.d_base[self.d_on] + (self._T + 1)).astype(np.float64)
        return n, s, lens

    def _step_ms(
        self, state: SimState, p: int, pairs: float, cached: int, seqs: int, n: int
    ) -> float:
        """One step: ``p`` prefill tokens (``pairs`` attention pairs, ``cached`` tokens read,
        ``seqs`` prefills ending) and a decode token for each of the ``n`` decoders (all of
        them, or none)."""
        n, s, lens = self._decoders(n)
        # positional: prefill_tokens, prefill_pairs, prefill_cached, prefill_seqs, decode_seqs,
        # decode_context, decode_context_lens (faster than keywords on this hot path)
        return state.step_ms(StepBatch(p, pairs, cached, seqs, n, s, lens))

    def _run_ms(self, state: SimState, k: int) -> np.ndarray:
        """Durations of the next ``k`` decode steps of every decoder."""
        n, s, lens = self._decoders(self._n_dec)
        return state.decode_steps_ms(StepBatch(0, 0.0, 0, 0, n, s, lens), k)

    def _finished_now(self) -> np.ndarray | None:
        """Requests of the decoders whose last token came out at the current tick."""
        if self._next_fin != self._T:
            return None
        return self.d_idx[self.d_fin == self._T]

    # -- scheduling ----------------------------------------------------------------------------

    def next_batch(self, state: SimState) -> Batch | None:
        self._preempted = False
        if self._n_running() == 0 and not len(self._queue):
            return None
        if self._chunked:
            return self._chunked_step(state)
        return self._plain_step(state)

    def _plain_step(self, state: SimState) -> Batch | None:
        q = self._queue
        idx: list[int] = []
        targets: list[int] = []
        if len(q):
            room = self.max_num_seqs - self._n_running()
            tokens = 0
            free = state.kv_blocks - self._used
            bs = self._bs
            prompt, generated = state.prompt, self._generated
            while len(q) and len(idx) < room:
                i = q.peek()
                t = int(prompt[i] + generated[i])
                if idx and tokens + t > self._tokens:
                    break
                need = blocks(t, bs)
                if free - need < self._wm:
                    break
                q.pop()
                idx.append(i)
                targets.append(t)
                tokens += t
                free -= need
        if idx:
            return self._prefill_only(state, idx, targets)
        if self._n_dec == 0:
            return None
        return self._decode_run(state)

    def _prefill_only(self, state: SimState, idx: list[int], targets: list[int]) -> Batch:
        bs = self._bs
        total = sum(targets)
        pairs = sum(t * (t + 1) / 2.0 for t in targets)
        dur = self._step_ms(state, total, pairs, 0, len(idx), 0)
        end = state.clock + dur
        b = Batch(state.clock, dur, 1, len(idx))
        b.running = self._n_running() + len(idx)
        b.prefill_tokens = total
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = len(idx)
        b.limit = self.max_num_seqs
        ia = np.asarray(idx, dtype=np.int64)
        b.started = ia
        first = state.first
        fresh = [i for i in idx if first[i] != first[i]]  # NaN: no token yet
        if fresh:
            b.first = np.asarray(fresh, dtype=np.int64)
            b.first_ms = end
        gen, generated, level = state.gen, self._generated, state.level
        done: list[int] = []
        release = 0
        for i, t in zip(idx, targets, strict=True):
            rem = int(gen[i] - generated[i]) - 1
            key = self._next_key(int(level[i]))
            held = blocks(t, bs)
            self._used += held
            if rem == 0:
                done.append(i)
                release += held
            else:
                self._add_decoder(i, t, rem, key)
        b.kv_blocks = self._used
        if done:
            b.finished = np.asarray(done, dtype=np.int64)
            self._used -= release
        return b

    def _decode_run(self, state: SimState) -> Batch:
        """A run of decode steps of every decoder (partial prefills wait), up to the next
        completion, the next arrival that could be admitted, or KV exhaustion."""
        self._make_room_for_decodes(state)
        n = self._n_dec
        T0 = self._T
        k = min(int(self._next_fin) - T0, _MAX_RUN)
        free = state.kv_blocks - self._used
        if free < n * blocks(k, self._bs):
            k = self._kv_steps(k, free)
        if self._preempted and len(self._queue):
            k = 1  # the next step may admit
        t0 = state.clock
        first = -1.0
        arrival = INF
        if self._n_running() < self.max_num_seqs:
            arrival = state.next_arrival()
            if arrival < INF:
                first = self._step_ms(state, 0, 0.0, 0, 0, n)
                if first > 0:
                    # step durations never decrease along a run: the arrival is passed after
                    # at most ceil(gap / first step) steps
                    k = max(1, min(k, math.ceil((arrival - t0) / first)))
        if k == 1:
            dur = first if first >= 0 else self._step_ms(state, 0, 0.0, 0, 0, n)
        else:
            cum = np.cumsum(self._run_ms(state, k))
            if arrival < INF:
                m = int(np.searchsorted(cum, arrival - t0, side="left")) + 1
                if m < k:
                    k = m
            dur = float(cum[k - 1])
        self._used += self._new_blocks(k)
        self._T = T0 + k
        b = Batch(t0, dur, k, n)
        b.running = self._n_running()
        b.decode_seqs = n
        b.kv_blocks = self._used
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = n * k
        b.limit = self.max_num_seqs
        b.finished = self._finished_now()
        return b

    def _chunked_step(self, state: SimState) -> Batch | None:
        bs = self._bs
        while True:
            need = self._make_room_for_decodes(state) if self._n_dec else 0
            n_dec = self._n_dec
            free = state.kv_blocks - self._used - need
            budget = self._tokens - n_dec
            work: list[tuple[Prefill, int]] = []  # (prefill in progress, chunk)
            for rec in self._partials:
                if budget <= 0:
                    break
                c = rec.cached
                held = blocks(c, bs)
                cap = (held + free) * bs - c  # tokens that fit in held + free blocks
                chunk = min(rec.prefill_left, self._chunk, budget, cap)
                if chunk <= 0:
                    continue
                work.append((rec, chunk))
                budget -= chunk
                free -= blocks(c + chunk, bs) - held
            started: list[int] = []
            if not self._preempted:  # no admission in a step that preempted
                q = self._queue
                room = self.max_num_seqs - self._n_running()
                while len(q) and budget > 0 and len(started) < room:
                    i = q.peek()
                    t = int(state.prompt[i] + self._generated[i])
                    chunk = min(t, self._chunk, budget)
                    first_blocks = blocks(chunk, bs)
                    if free - first_blocks < self._wm:
                        break
                    q.pop()
                    rec = Prefill(
                        request=i,
                        cached=0,
                        prefill_left=t,
                        tokens_left=int(state.gen[i] - self._generated[i]),
                        key=self._next_key(int(state.level[i])),
                    )
                    self._partials.append(rec)
                    started.append(i)
                    work.append((rec, chunk))
                    budget -= chunk
                    free -= first_blocks
            if work:
                return self._mixed_step(state, work, started, need)
            if n_dec:
                return self._decode_run(state)
            if not self._partials:
                return None
            # only partial prefills, none can get a block: free some by preemption
            if self._n_running() <= 1:  # cannot happen: every request fits alone
                raise RuntimeError("a lone partial prefill cannot get a KV block")
            self._preempt_one(state)

    def _mixed_step(
        self, state: SimState, work: list[tuple[Prefill, int]], started: list[int], need: int
    ) -> Batch:
        bs = self._bs
        n_dec = self._n_dec
        total = 0
        pairs = 0.0
        cached = 0
        ending = 0
        for rec, chunk in work:
            c = rec.cached
            total += chunk
            pairs += chunk * c + chunk * (chunk + 1) / 2.0
            cached += c
            ending += chunk == rec.prefill_left
        dur = self._step_ms(state, total, pairs, cached, ending, n_dec)
        b = Batch(state.clock, dur, 1, n_dec + len(work))
        b.running = self._n_running()
        # decoders advance one tick
        if n_dec:
            self._used += need
            self._T += 1
            b.finished = self._finished_now()
        # prefill chunks; a prefill's last chunk emits a token
        completed: list[int] = []
        finished_now: list[int] = []
        first = state.first
        fresh: list[int] = []
        release = 0
        for rec, chunk in work:
            c = rec.cached
            self._used += blocks(c + chunk, bs) - blocks(c, bs)
            rec.cached = c + chunk
            rec.prefill_left -= chunk
            if rec.prefill_left == 0:
                i = rec.request
                rec.tokens_left -= 1
                completed.append(i)
                if first[i] != first[i]:  # NaN: no token yet
                    fresh.append(i)
                if rec.tokens_left == 0:
                    finished_now.append(i)
                    release += blocks(rec.cached, bs)
                else:
                    self._add_decoder(i, rec.cached, rec.tokens_left, rec.key)
        if completed:
            self._partials = [p for p in self._partials if p.prefill_left > 0]
            if fresh:
                b.first = np.asarray(fresh, dtype=np.int64)
                b.first_ms = state.clock + dur
            if finished_now:
                fn = np.asarray(finished_now, dtype=np.int64)
                b.finished = fn if b.finished is None else np.concatenate([b.finished, fn])
        b.prefill_tokens = total
        b.decode_seqs = n_dec
        b.kv_blocks = self._used
        self._used -= release
        b.queue_len = len(self._queue)
        b.gen_tokens = b.slot_tokens = n_dec + len(completed)
        b.limit = self.max_num_seqs
        if started:
            b.started = np.asarray(started, dtype=np.int64)
        return b

    def on_batch_end(self, state: SimState, batch: Batch) -> None:
        if self._next_fin == self._T:
            self._drop_slots(np.flatnonzero(self.d_fin == self._T).tolist())
