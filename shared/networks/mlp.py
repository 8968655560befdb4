"""ReLU multilayer perceptrons: one network, or a batch of independent networks.

:class:`BatchedMLP` holds ``B`` independent MLPs with identical shapes and evaluates
them as one batched matrix product per layer::

    h^{l+1}_b = act( h^l_b  W^l_b + c^l_b ),   W^l in R^{B x d_l x d_{l+1}},  b = 1..B

Input ``(B, N, d_in)``, output ``(B, N, d_out)``.  Because the parameters of different
members never mix, a loss summed over the batch gives each member exactly the gradient it
would get alone, and Adam (elementwise) updates each member as if fitted alone: one
optimiser step fits all ``B`` networks.  This is how geoprior fits all patch charts.

**Blocked evaluation.** For a large batch the hidden activations (``B x N x width``
floats per layer) do not fit in cache, and on a CPU the elementwise work (bias, ReLU and
its backward) then runs at memory speed, slower than the matrix products.  With
``block=m`` the members are evaluated ``m`` at a time (members of similar length together,
each block trimmed to its longest member).  A ReLU network's gradients are computed
explicitly, block by block, from the activations each block kept in the forward pass
(two batched products per layer, no autograd graph; beyond :data:`KEEP_BYTES` of
activations the backward pass recomputes them); other activations recompute each block
just before its backward pass (activation checkpointing per block) and differentiate it
with autograd.  The blocks run on worker threads with one intra-op thread each, shared
among ``torch.get_num_threads()`` workers or all on one, whichever has been faster
(:func:`_run_blocks`): products this small split over OpenMP threads wait at a barrier
after every op, which on a shared machine costs more than the op.  The results and
gradients are those of the plain evaluation (to rounding) and do not depend on the
threads; first-order autograd only.  :meth:`BatchedMLP.forward_jacobian` gives the input
Jacobians of a ReLU network by forward-mode propagation (the charts' normals).
Blocking applies to CPU tensors only: on a GPU the whole batch in one launch per layer is
far faster (measured on an H200 with 551 charts x 809 samples: 16x more patch-iterations
per second unblocked; ``benchmarks/results/geoprior_throughput_cuda.json``).

Measured on 2 shared cores under load (``benchmarks/geoprior_profile.py``, the 60k-point
torus's 697 charts of ~310 samples, widths 32-32-32): a chart-fit forward + backward pass
of 0.8-1.4 s (2 intra-op threads, recomputation through autograd) became 0.13-0.17 s; on
one thread 0.16 s became 0.09 s.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "BatchedMLP", "FourierFeatures", "activation"]


def activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
             "softplus": nn.Softplus, "silu": nn.SiLU, "elu": nn.ELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(table)}")
    return table[name]()


class MLP(nn.Module):
    """Plain MLP ``d_in -> hidden... -> d_out`` with an activation between layers.

    Input ``(..., d_in)``, output ``(..., d_out)``; no activation after the last layer.
    """

    def __init__(self, d_in: int, d_out: int, hidden: Sequence[int] = (128, 128, 128), act: str = "relu") -> None:
        super().__init__()
        dims = [d_in, *hidden, d_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(activation(act))
        self.net = nn.Sequential(*layers)
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BatchedMLP(nn.Module):
    """``B`` independent MLPs evaluated together (see the module docstring).

    Parameters are initialised per member as ``torch.nn.Linear`` does
    (uniform in ``+-1/sqrt(fan_in)``), so member ``b`` is distributed like a fresh ``MLP``.
    """

    def __init__(self, batch: int, d_in: int, d_out: int, hidden: Sequence[int] = (128, 128, 128),
                 act: str = "relu", block: int | None = None) -> None:
        super().__init__()
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if block is not None and block < 1:
            raise ValueError(f"block must be >= 1 or None, got {block}")
        self.batch = batch
        self.block = block
        self.dims = [d_in, *hidden, d_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(self.dims[:-1], self.dims[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(batch, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(batch, 1, b).uniform_(-bound, bound)))
        self.act = activation(act)
        self._act_name = act
        self._hold: _HeldOutputs | None = None
        self._plan_cache: tuple | None = None

    def hold_members(self, frozen: Tensor | None) -> None:
        """The caller holds members ``frozen`` (bool ``(B,)``) fixed; ``None`` releases all.

        The engine calls this for a per-member stopping rule (:func:`shared.fit.fit`).  On
        the blocked path a held member is evaluated once more, its output rows are kept,
        and later calls return them without evaluating it while its input rows are
        unchanged (a changed input evaluates it again); its parameters then get zero
        gradient.  The caller promises not to change a held member's parameters: a fit
        whose charts stop one by one then costs about its running members only.
        """
        if frozen is None or not bool(frozen.any()):
            self._hold = None
            return
        frozen = torch.as_tensor(frozen, dtype=torch.bool)
        if frozen.shape != (self.batch,):
            raise ValueError(f"hold_members expects a boolean mask of shape ({self.batch},), got {tuple(frozen.shape)}")
        if self._hold is None:
            self._hold = _HeldOutputs()
        self._hold.wanted = frozen.clone()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Outputs ``(B, N, d_out)`` of input ``(B, N, d_in)``.

        ``lengths`` ``(B,)``: member ``b``'s rows ``>= lengths[b]`` are padding; they are
        not evaluated and their outputs are zero.  The blocked path then groups members
        of similar length and trims each block to its longest member, so a padded batch
        costs about its real rows.
        """
        lengths = self._check(x, lengths)
        params = [*self.weights, *self.biases]
        if self._blocked(x):
            skip = self._hold.skipped(x) if self._hold is not None else None
            plan = self._plan(lengths, x.shape[1], skip)
            if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
                out = _BlockedMLP.apply(x, self.act, plan, *params)
            else:
                with torch.no_grad():
                    out = _blocked_forward(x, self.act, plan, params)
            return out if self._hold is None else self._hold.merge(x, out, skip)
        out = _mlp_forward(x, self.act, params)
        if lengths is not None:
            out = out * (torch.arange(x.shape[1], device=x.device) < lengths[:, None])[..., None]
        return out

    def forward_jacobian(self, x: Tensor, lengths: Tensor | None = None,
                         members: slice | None = None) -> tuple[Tensor, Tensor]:
        """Outputs ``(B, N, d_out)`` and their Jacobians ``d out / d x`` ``(B, N, d_out, d_in)``.

        Forward-mode propagation of the ``d_in`` input directions (one batched product per
        layer for all of them), no autograd: about ``1 + d_in`` forward passes instead of
        a forward and ``d_out`` backward passes.  ReLU networks only (the derivative of
        ReLU is taken as 0 at 0, as autograd does); padding rows (``lengths``) get zeros.
        ``members``: evaluate only these members (a slice of the batch; ``x`` and
        ``lengths`` then hold their rows only), so that a caller can bound its memory by
        evaluating a large batch a part at a time.
        """
        if self._act_name != "relu":
            raise ValueError(f"forward_jacobian supports ReLU networks only, got {self._act_name!r}")
        members = slice(None) if members is None else members
        params = [p.detach()[members] for p in (*self.weights, *self.biases)]
        batch = len(params[0])
        lengths = self._check(x, lengths, batch)
        x = x.detach()
        if self._blocked(x, batch):
            plan = _Plan.of(lengths, batch, self.block, x.shape[1])
        else:
            plan = _Plan.whole(lengths, batch, x.shape[1])
        with torch.no_grad():
            return _blocked_jacobian(x, plan, params)

    @property
    def activation_name(self) -> str:
        """The name of the activation (as given to the constructor)."""
        return self._act_name

    def _check(self, x: Tensor, lengths: Tensor | None, batch: int | None = None) -> Tensor | None:
        batch = self.batch if batch is None else batch
        if x.ndim != 3 or x.shape[0] != batch or x.shape[2] != self.dims[0]:
            raise ValueError(f"BatchedMLP expects input (B={batch}, N, {self.dims[0]}), got {tuple(x.shape)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (batch,) or bool((lengths < 0).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"lengths must be ({batch},) integers in [0, {x.shape[1]}], "
                                 f"got shape {tuple(lengths.shape)}")
        return lengths

    def _plan(self, lengths: Tensor | None, n: int, skip: Tensor | None) -> _Plan:
        """The blocked plan, kept while lengths, rows and skipped members stay the same (a fit
        calls the network with the same ones at every step; building a plan sorts and syncs)."""
        key = (lengths, None if lengths is None else lengths._version, n,
               None if skip is None else skip.cpu().numpy().tobytes())
        cached = self._plan_cache
        if cached is not None and cached[0][0] is key[0] and cached[0][1:] == key[1:]:
            return cached[1]
        members = None if skip is None else (~skip).nonzero().squeeze(1)
        plan = _Plan.of(lengths, self.batch, self.block, n, members)
        self._plan_cache = (key, plan)
        return plan

    def _blocked(self, x: Tensor, batch: int | None = None) -> bool:
        batch = self.batch if batch is None else batch
        return bool(self.block) and batch > self.block and x.device.type == "cpu"

    def member(self, b: int) -> MLP:
        """Member ``b`` as a stand-alone :class:`MLP` with copied weights."""
        mlp = MLP(self.dims[0], self.dims[-1], self.dims[1:-1], self._act_name)
        linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, c in zip(linears, self.weights, self.biases):
                lin.weight.copy_(w[b].T)
                lin.bias.copy_(c[b, 0])
        return mlp


class _HeldOutputs:
    """Kept output rows of held members (:meth:`BatchedMLP.hold_members`).

    ``wanted`` ``(B,)``: the members the caller holds; ``valid``: those whose rows
    ``out`` were computed at their held parameters, on input rows ``x``.
    """

    def __init__(self) -> None:
        self.wanted: Tensor | None = None
        self.valid: Tensor | None = None
        self.x: Tensor | None = None
        self.out: Tensor | None = None

    def skipped(self, x: Tensor) -> Tensor | None:
        """The members this call need not evaluate (None: all are evaluated)."""
        if self.valid is None or self.x is None or self.x.shape != x.shape:
            return None
        same = (self.x == x.detach()).flatten(1).all(1)
        skip = self.valid & self.wanted.to(x.device) & same
        return skip if bool(skip.any()) else None

    def merge(self, x: Tensor, out: Tensor, skip: Tensor | None) -> Tensor:
        """``out`` with the skipped members' kept rows; keeps the rows of held members just evaluated."""
        wanted = self.wanted.to(x.device)
        fresh = wanted & (torch.ones_like(wanted) if skip is None else ~skip)
        if self.x is None or self.x.shape != x.shape or skip is None:
            self.valid = torch.zeros_like(wanted)
            self.x, self.out = x.detach().clone(), out.detach().clone()
        if bool(fresh.any()):
            rows = fresh.nonzero().squeeze(1)
            self.x.index_copy_(0, rows, x.detach().index_select(0, rows))
            self.out.index_copy_(0, rows, out.detach().index_select(0, rows))
            self.valid |= fresh
        if skip is None:
            return out
        # The kept rows enter as constants: no gradient reaches a held member.
        return torch.where(skip[:, None, None], self.out, out)


def _mlp_forward(x: Tensor, act: nn.Module, params: Sequence[Tensor]) -> Tensor:
    """The batched MLP on ``x`` ``(B, N, d)`` with ``params = [W_1..W_L, c_1..c_L]``."""
    L = len(params) // 2
    for i in range(L):
        x = torch.baddbmm(params[L + i], x, params[i])
        if i < L - 1:
            x = act(x)
    return x


class _Block:
    """Members ``idx`` (a slice, or an index tensor of members sorted by length) evaluated
    on their leading ``rows`` rows; ``lengths`` ``(m,)`` their lengths (None: no padding)."""

    __slots__ = ("idx", "rows", "lengths", "_real")

    def __init__(self, idx: slice | Tensor, rows: int, lengths: Tensor | None) -> None:
        self.idx, self.rows, self.lengths = idx, rows, lengths
        self._real: Tensor | None | bool = False  # not computed yet

    @property
    def size(self) -> int:
        return self.idx.stop - self.idx.start if isinstance(self.idx, slice) else len(self.idx)

    def take(self, t: Tensor) -> Tensor:
        """The block's members of ``t`` (a view for a slice, else a copy)."""
        return t[self.idx] if isinstance(self.idx, slice) else t.index_select(0, self.idx)

    def inputs(self, x: Tensor) -> Tensor:
        """The block's evaluated rows of ``x`` ``(m, rows, d)`` (a view for a slice, else a copy)."""
        return x[self.idx, :self.rows]

    def put(self, dst: Tensor, src: Tensor) -> None:
        """``dst[members] = src`` (``src`` covers the members' full extent)."""
        if isinstance(self.idx, slice):
            dst[self.idx] = src
        else:
            dst.index_copy_(0, self.idx, src)

    def put_rows(self, dst: Tensor, src: Tensor) -> None:
        """``dst[members, :rows] = src`` and zeros in the members' other rows."""
        if src.shape[1] != dst.shape[1]:
            full = src.new_zeros((src.shape[0], dst.shape[1], *src.shape[2:]))
            full[:, :src.shape[1]] = src
            src = full
        self.put(dst, src)

    def real(self) -> Tensor | None:
        """``(m, rows, 1)`` mask of the real rows (None: all real); computed once per block."""
        if self._real is False:
            if self.lengths is None or bool((self.lengths >= self.rows).all()):
                self._real = None
            else:
                self._real = (torch.arange(self.rows, device=self.lengths.device) < self.lengths[:, None])[..., None]
        return self._real


class _Plan:
    """The blocks of a blocked evaluation: ``block`` consecutive members without lengths,
    else members sorted by length, each block trimmed to its longest member."""

    def __init__(self, blocks: list[_Block], partial: bool = False) -> None:
        self.blocks = blocks
        self.partial = partial  # some members are not evaluated (their rows are left to the caller)

    @classmethod
    def of(cls, lengths: Tensor | None, batch: int, block: int, n: int, members: Tensor | None = None) -> _Plan:
        """Blocks of all ``batch`` members, or of ``members`` (indices) only (a partial plan)."""
        if members is None and lengths is None:
            return cls([_Block(slice(s, min(s + block, batch)), n, None) for s in range(0, batch, block)])
        if members is None:
            members = torch.arange(batch, device=lengths.device)
        if lengths is None:
            return cls([_Block(members[s:s + block], n, None) for s in range(0, len(members), block)],
                       partial=len(members) < batch)
        sub = lengths[members]
        order = torch.argsort(sub.cpu(), stable=True).to(sub.device)
        idx, sorted_lengths = members[order], sub[order]
        ends = sorted_lengths.cpu().tolist()
        return cls([_Block(idx[s:s + block], int(ends[min(s + block, len(idx)) - 1]), sorted_lengths[s:s + block])
                    for s in range(0, len(idx), block)], partial=len(members) < batch)

    @classmethod
    def whole(cls, lengths: Tensor | None, batch: int, n: int) -> _Plan:
        return cls([_Block(slice(0, batch), n, lengths)])

    def run(self, func, kind: str, threads: bool = True) -> None:
        """``func(block)`` for every block; in parallel threads when torch has several
        and they are faster (each op then single-threaded, see :func:`_run_blocks`).
        ``threads=False``: in the calling thread (autograd inside ``func``: the engine's
        state is per thread, and backward passes from worker threads made the process
        abort at exit now and then)."""
        if threads:
            _run_blocks(func, self.blocks, kind)
        else:
            for b in self.blocks:
                func(b)


_POOL: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, threads) -> pool
_POOL_LOCK = threading.Lock()


class _Schedule:
    """Serial or threaded blocks, whichever has been faster lately (per kind of call).

    Threads win on idle cores (about 1.8x on two) but lose on a machine whose cores other
    processes hold: a descheduled thread holding the GIL stalls the others (measured on 2
    cores under load: 0.34 s per chart-fit step with two threads, 0.12 s serial).  Every
    call is timed per evaluated row; the faster mode is used and the other one re-tried
    every ``probe`` calls, so the choice follows the machine's load.  Results do not
    depend on the choice.
    """

    def __init__(self, probe: int = 16, alpha: float = 0.3) -> None:
        self.probe, self.alpha = probe, alpha
        self.rate: dict[tuple[str, int], float] = {}
        self.calls: dict[str, int] = {}

    def pick(self, kind: str, threads: int) -> int:
        if threads <= 1:
            return 1
        n = self.calls[kind] = self.calls.get(kind, 0) + 1
        serial, threaded = self.rate.get((kind, 1)), self.rate.get((kind, threads))
        if threaded is None:
            return threads
        if serial is None:
            return 1
        best, other = (1, threads) if serial < threaded else (threads, 1)
        return other if n % self.probe == 0 else best

    def record(self, kind: str, mode: int, seconds_per_row: float) -> None:
        old = self.rate.get((kind, mode))
        self.rate[(kind, mode)] = seconds_per_row if old is None else \
            (1 - self.alpha) * old + self.alpha * seconds_per_row


_SCHEDULE = _Schedule()


def _run_blocks(func, blocks: list[_Block], kind: str = "forward") -> None:
    """Run ``func(block)`` for every block on worker threads whose ops run on one intra-op
    thread: all blocks on one worker, or shared among ``torch.get_num_threads()`` workers
    (:class:`_Schedule` picks).

    The blocks' products are small (a few hundred rows x 32 columns): split over OpenMP
    threads, every op ends in a barrier, and on a shared machine where another process
    holds a core the barrier waits for a descheduled thread (measured on 2 cores with one
    busy: 2.2 s per chart-fit step with 2 intra-op threads, 0.13 s with one).  Whole
    blocks per thread have no barrier inside; torch releases the GIL in its ops.  Results
    do not depend on the thread count (each block writes its own slices).  With one
    torch thread the blocks run in the calling thread.
    """
    threads = min(torch.get_num_threads(), _cores())
    if threads <= 1 or len(blocks) < 2:
        for b in blocks:
            func(b)
        return
    pool = _pool(threads)
    mode = _SCHEDULE.pick(kind, threads)
    rows = sum(b.size * b.rows for b in blocks) or 1
    t0 = time.perf_counter()
    if mode == 1:
        pool.submit(_no_grad_call, func, blocks).result()
    else:
        for f in [pool.submit(_no_grad_call, func, [b]) for b in blocks]:
            f.result()
    _SCHEDULE.record(kind, mode, (time.perf_counter() - t0) / rows)


def _pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` workers with one intra-op thread each.

    torch's intra-op thread count is per thread (OpenMP's and MKL's settings of the calling
    thread); a new thread takes the process-wide count when it first asks for it.  The
    workers are started while that count is 1 and it is put back afterwards: changing the
    count around every call instead costs about 13 ms a time (measured), more than a step.
    """
    key = (os.getpid(), threads)  # a forked child has none of its parent's threads
    with _POOL_LOCK:
        pool = _POOL.get(key)
        if pool is None:
            before = torch.get_num_threads()
            ready = threading.Barrier(threads + 1)
            torch.set_num_threads(1)
            try:
                pool = ThreadPoolExecutor(threads, thread_name_prefix="batched-mlp")
                started = [pool.submit(_single_threaded, ready) for _ in range(threads)]
                ready.wait()
                for f in started:
                    f.result()
            finally:
                torch.set_num_threads(before)
            _POOL[key] = pool
    return pool


def _single_threaded(ready: threading.Barrier) -> None:
    torch.get_num_threads()  # fixes this thread's intra-op count (now 1) for good
    ready.wait()


def _no_grad_call(func, blocks: list[_Block]) -> None:
    # Grad mode is per thread: a worker starts with it on.
    with torch.no_grad():
        for b in blocks:
            func(b)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _linear(h: Tensor, W: Tensor, c: Tensor | None = None) -> Tensor:
    """``h W + c`` for a block: ``(m, rows, a) x (m, a, b)`` (+ ``(m, 1, b)``).

    A narrow product (``b < 8``, the charts' last layer) runs as ``(W^T h^T)^T``: MKL's
    batched product is 3-4x slower with 3 output columns than with 3 output rows
    (measured: 230 vs 60 us for 16 x 330 x 32 x 3 on one core).  The result is then a
    transposed view.
    """
    if W.shape[-1] < 8 <= h.shape[1]:
        Wt, ht = W.transpose(1, 2), h.transpose(1, 2)
        out = torch.bmm(Wt, ht) if c is None else torch.baddbmm(c.transpose(1, 2), Wt, ht)
        return out.transpose(1, 2)
    return torch.bmm(h, W) if c is None else torch.baddbmm(c, h, W)


def _weight_grad(h: Tensor, g: Tensor) -> Tensor:
    """``h^T g`` ``(m, a, b)``, a block's weight gradient; narrow ``g`` as ``(g^T h)^T`` (:func:`_linear`)."""
    if g.shape[-1] < 8 <= h.shape[-1]:
        return torch.bmm(g.transpose(1, 2), h).transpose(1, 2)
    return torch.bmm(h.transpose(1, 2), g)


def _blocked_forward(x: Tensor, act: nn.Module, plan: _Plan, params: Sequence[Tensor],
                     keep: dict | None = None) -> Tensor:
    """Outputs of all members, block by block (no autograd; padding rows zero).

    Every block gathers its own members' parameters and writes its own members' outputs,
    in the worker that runs it: the calling thread only allocates.  With ``keep`` (a
    dict) every block leaves its gathered parameters and its layers' inputs there.
    """
    L = len(params) // 2
    shape = (x.shape[0], x.shape[1], params[L - 1].shape[-1])
    out = x.new_zeros(shape) if plan.partial else x.new_empty(shape)
    relu = isinstance(act, nn.ReLU)

    def block(b: _Block) -> None:
        h = b.inputs(x)
        ps = [b.take(p) for p in params]
        hs = [h]
        for i in range(L):
            h = _linear(h, ps[i], ps[L + i])
            if i < L - 1:
                h = h.relu_() if relu else act(h)
                hs.append(h)
        if keep is not None:
            keep[id(b)] = (ps, hs)
        real = b.real()
        b.put_rows(out, h if real is None else h * real)

    plan.run(block, "forward")
    return out


def _blocked_jacobian(x: Tensor, plan: _Plan, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Outputs and input Jacobians of a ReLU network by forward-mode propagation, block by block."""
    L = len(params) // 2
    B, N, d_in = x.shape
    d_out = params[L - 1].shape[-1]
    out = x.new_empty(B, N, d_out)
    jac = x.new_empty(B, N, d_out, d_in)

    def block(b: _Block) -> None:
        m, rows = b.size, b.rows
        W = [b.take(p) for p in params[:L]]
        h = _linear(b.inputs(x), W[0], b.take(params[L]))
        # tangents t[:, k] = d h / d x_k, (m, d_in, rows, width): row k of W_1 through the ReLUs
        t = W[0][:, :, None, :] * (h > 0)[:, None] if L > 1 else W[0][:, :, None, :].expand(m, d_in, rows, -1)
        for i in range(1, L):
            h = _linear(h.relu_(), W[i], b.take(params[L + i]))
            t = _linear(t.reshape(m, d_in * rows, t.shape[-1]), W[i]).reshape(m, d_in, rows, W[i].shape[-1])
            if i < L - 1:
                t = t * (h > 0)[:, None]
        real = b.real()
        t = t.permute(0, 2, 3, 1)  # (m, rows, d_out, d_in)
        b.put_rows(out, h if real is None else h * real)
        b.put_rows(jac, t if real is None else t * real[..., None])

    plan.run(block, "jacobian")
    return out, jac


#: ReLU blocks keep their activations for the backward pass up to this many bytes in all
#: (else the backward pass recomputes them: measured 5-10% slower per chart-fit step).
#: 128 MiB holds a 100k-point geoprior input's charts (about 80 MB of activations); at 512
#: MiB a million-point input kept them once half its charts had stopped, 0.8 GB of its
#: 3.7 GB peak, and its fit was no faster (157 s against 152 s with 128 MiB).
KEEP_BYTES = 128 * 2 ** 20


def _recompute(x: Tensor, b: _Block, act: nn.Module, params: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """A block's gathered parameters and its layers' inputs, recomputed."""
    L = len(params) // 2
    ps = [b.take(p) for p in params]
    hs = [b.inputs(x)]
    for i in range(L - 1):
        hs.append(act(_linear(hs[-1], ps[i], ps[L + i])))
    return ps, hs


class _BlockedMLP(torch.autograd.Function):
    """The network over blocks of members (:class:`_Plan`).

    ReLU networks get explicit gradients (two batched products per layer, no autograd
    graph) from the activations each block kept in the forward pass (recomputed instead
    beyond :data:`KEEP_BYTES`); other activations differentiate each block, recomputed,
    with autograd.  Padding rows (beyond a member's length) have zero output and no
    gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, act: nn.Module, plan: _Plan, *params: Tensor) -> Tensor:
        ctx.act, ctx.plan = act, plan
        ctx.save_for_backward(x, *params)
        kept = sum(b.size * b.rows for b in plan.blocks) * sum(p.shape[-1] for p in params[:len(params) // 2 - 1])
        ctx.kept = {} if isinstance(act, nn.ReLU) and kept * x.element_size() <= KEEP_BYTES else None
        return _blocked_forward(x, act, plan, params, ctx.kept)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, *params = ctx.saved_tensors
        plan, act = ctx.plan, ctx.act
        need_x = ctx.needs_input_grad[0]
        need_p = any(ctx.needs_input_grad[3:])
        L = len(params) // 2
        alloc = torch.zeros_like if plan.partial else torch.empty_like  # members not evaluated get zero gradient
        grad_x = alloc(x) if need_x else None
        grad_p = [alloc(p) for p in params] if need_p else None
        relu = isinstance(act, nn.ReLU)
        kept = ctx.kept

        def block(b: _Block) -> None:
            real = b.real()
            g = b.inputs(grad_out)
            g = g if real is None else g * real
            if relu:
                ps, hs = kept[id(b)] if kept is not None else _recompute(x, b, act, params)
                grads: list[Tensor | None] = [None] * (2 * L)
                for i in reversed(range(L)):
                    if need_p:
                        grads[i] = _weight_grad(hs[i], g)
                        grads[L + i] = g.sum(1, keepdim=True)
                    if i > 0 or need_x:
                        g = torch.bmm(g, ps[i].transpose(1, 2))
                        if i > 0:
                            g = torch.ops.aten.threshold_backward(g, hs[i], 0)
                gx = g
            else:
                ps, h0 = [b.take(p) for p in params], b.inputs(x)
                with torch.enable_grad():
                    xb = h0.detach().requires_grad_(need_x)
                    pb = [p.detach().requires_grad_(need_p) for p in ps]
                    out = _mlp_forward(xb, act, pb)
                    wrt = ([xb] if need_x else []) + (pb if need_p else [])
                    got = list(torch.autograd.grad(out, wrt, g))
                gx = got.pop(0) if need_x else None
                grads = got
            if need_x:
                b.put_rows(grad_x, gx)
            if need_p:
                for dst, src in zip(grad_p, grads):
                    b.put(dst, src)

        plan.run(block, "backward", threads=relu)
        return (grad_x, None, None, *(grad_p if need_p else [None] * len(params)))


class FourierFeatures(nn.Module):
    """Random Fourier features ``x -> [cos(2 pi x B), sin(2 pi x B)]`` (Tancik et al. 2020).

    ``B`` is a fixed ``(d_in, n_features)`` Gaussian matrix of standard deviation
    ``scale`` (in cycles per unit of ``x``); output dimension ``2 n_features``.
    Coordinate MLPs with these features can represent sharper structure than plain ReLU
    MLPs, whose spectral bias favours low frequencies.
    """

    def __init__(self, d_in: int, n_features: int = 64, scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.register_buffer("B", torch.randn(d_in, n_features, generator=generator) * scale)
        self.out_dim = 2 * n_features

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * x @ self.B
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
