"""The SPEC §4 inference step on one page: buffers, forward pass, BP's adjoint, primal step,
credit step, weight gradients, for PC and PC-ALM (and BP in the same buffers).

Notation (SPEC §1–3): states z_1 … z_{L-1}, predictions f_l(z_{l-1}) = z_{l-1} + a_h φ(z_{l-1})
W_lᵀ (f_1 = a_in W_1 x), residuals r_l = z_l − f_l, multipliers λ_l, credit ε_l = ρ r_l + λ_l,
output error e = a_out φ(z_{L-1}) W_Lᵀ − y, loss ℓ = ½‖e‖² (batch mean). One PC-ALM step:

    z ← z − η_h ∂𝓛/∂z          (`Workspace.primal_step`: two batched matmuls for all layers)
    λ ← λ + α r;  ε ← ρ r + λ   (`Workspace._credit`; PC: λ ≡ 0)

and the weight gradient is SPEC §3 at the final (z, ε) (`Workspace.weight_grads`).

How it is laid out (what makes it fast, without changing the math):

- Layer-major buffers ``[L-1, M, B, N]`` (M models, 1 if the net is not stacked), so the L-2
  hidden layers of all M models form one contiguous batch of ``(L-2)·M`` matrices for
  ``torch.bmm``. The predictions live in one buffer F whose first slot is the fixed
  a_in W_1 x, so r = z − F is one ``baddbmm`` and one subtraction (computed as the forward
  pass is, so on the CPU r = 0 there bit for bit and credit that has not arrived yet is
  exactly 0, not rounding noise); the credit buffer has an extra zero slot ``E[L-1] = 0``,
  so ε_l − ε_{l+1} is one subtraction.
- The readout is folded into the same step: ∂ℓ/∂z_{L-1} fills the top slot of the matmul
  output Q (Q_l = a_h ε_{l+1} W_{l+1}, Q_{L-1} = −a_out e W_L), so z ← z + η(D ⊙ Q + ε_next − ε)
  with D = φ'(z) for every layer at once.
- φ(z) and φ'(z) are computed once per step, in place; every op writes into a buffer
  (``bmm(out=)``, ``baddbmm_``, ``addcmul_``, ``add_``): nothing is allocated per step, which
  also makes the loop capturable in a CUDA graph (`pcalm.core.graphs`).
- A stack whose models differ in η_h, ρ or α carries them as ``[1, M, 1, 1]`` tensors: the same
  loop with one more elementwise op per step.

The machinery around this loop lives elsewhere: `pcalm.core.compiled` (the same step as a pure
function for torch.compile), `pcalm.core.graphs` (CUDA-graph capture), `pcalm.core.paths`
(which of them runs a step, and what failed). `pcalm.core.naive` is the independent oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pcalm.core.model import ResidualMLP


@dataclass
class InferenceState:
    """Where inference ended: states z, multipliers λ, credit ε = ρr + λ, output error e."""

    z: torch.Tensor
    lam: torch.Tensor | None
    eps: torch.Tensor
    e: torch.Tensor
    forward_loss: torch.Tensor  # ℓ at the forward pass, per model: the training loss


# observer(step, state) sees the state after every primal step (step 0 = forward pass);
# diagnostics use it for credit traces. None on the hot path. The state is a copy.
Observer = Callable[[int, InferenceState], None]


@dataclass(frozen=True)
class Plan:
    """What one training step computes: BP, or PC / PC-ALM inference with its options."""

    kind: str  # bp | pc | pcalm
    budget: int = 0
    state_lr: float | tuple[float, ...] = 0.0  # a tuple: one value per model of a stack
    rho: float | tuple[float, ...] = 1.0
    alpha: float | tuple[float, ...] | None = None  # None: no multipliers (PC)
    inner_steps: int = 1
    post_dual: bool = False

    @property
    def has_lam(self) -> bool:
        return self.kind == "pcalm"

    @property
    def per_model(self) -> bool:
        """Options that differ between the models of a stack (`stack_algorithms`)."""
        return isinstance(self.state_lr, tuple)


@dataclass
class Output:
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    loss: torch.Tensor
    state: InferenceState | None = None
    path: str = "eager"  # eager | native | compiled | graph | compiled_graph: what ran


class Workspace:
    """Buffers and the in-place loop for one (net, batch, plan); see the module docstring.

    Layer-major buffers (M = models, 1 for a lone net; K = L-2 hidden weight layers):
        z, F [L-1, M, B, N]  states z_1 … z_{L-1}; predictions f_l(z_{l-1}), F[0] = a_in W_1 x
        E [L, M, B, N]     E[:L-1] = ε_1 … ε_{L-1} (r while a step is under way), E[L-1] = 0
        P, D, Q, lam [L-1, M, B, N]   φ(z), φ'(z), matmul output, multipliers
        e [M, B, C]        output error ŷ − y
        W, WT [K, M, N, N] a_h W_l and W_lᵀ for l = 2 … L-1; Wo_neg = −a_out W_L, WoT = W_Lᵀ
    """

    def __init__(self, net: ResidualMLP, x: torch.Tensor, y: torch.Tensor, plan: Plan):
        self.net, self.plan = net, plan
        self.stacked = net.num_models is not None
        m = net.num_models or 1
        L, N, C = net.depth, net.width, net.output_dim
        K, B, D = L - 2, x.shape[-2], net.input_dim
        self.m, self.L, self.K, self.B = m, L, K, B
        self.act = net.act.name
        self.a_in, self.a_h, self.a_out = net.a_in, net.a_hidden, net.a_out
        new = _allocator(net.w_in)
        lead = (lambda w: w) if self.stacked else (lambda w: w.unsqueeze(0))
        # x, y: [M, B, ·], or [B, ·] shared by all models
        self.x3 = x if x.dim() == 3 else x.unsqueeze(0).expand(m, B, D)
        self.y3 = y if y.dim() == 3 else y.unsqueeze(0).expand(m, B, C)
        self.w_in_t = lead(net.w_in).transpose(-1, -2)  # [M, D, N]
        self.wh = lead(net.w_hidden).transpose(0, 1)  # [K, M, N, N], a view
        self.w_out = lead(net.w_out)  # [M, C, N]
        self.W, self.WT = new(K, m, N, N), new(K, m, N, N)
        self.Wo_neg, self.WoT = new(m, C, N), new(m, N, C)
        self.z, self.F, self.E = new(L - 1, m, B, N), new(L - 1, m, B, N), new(L, m, B, N)
        self.Q = new(L - 1, m, B, N)
        self.P = self.z if self.act == "identity" else new(L - 1, m, B, N)
        self.D = None if self.act == "identity" else new(L - 1, m, B, N)
        self.lam = new(L - 1, m, B, N) if plan.has_lam else None
        self.e = new(m, B, C)
        self.loss = None
        self.one = torch.ones((), dtype=net.w_in.dtype, device=net.w_in.device)
        # Per-model η_h, ρ, α of a mixed stack as [1, M, 1, 1] tensors (None: scalars); and
        # the compiled step's coefficients (η_h, ρ, α (0: no dual update), a_h, a_out). Made
        # here so that nothing is copied to the device while a CUDA graph is captured.
        self.eta_m = self.rho_m = self.alpha_m = None
        if plan.per_model:
            self.eta_m, self.rho_m, self.alpha_m = (
                self._per_model(v) for v in (plan.state_lr, plan.rho, plan.alpha))
        self.coef = {dual: self._compiled_coefficients(dual) for dual in (False, True)}
        # Views used every step, made once (flattened (layer, model) batches for bmm).
        def flat(t):  # [K, M, ...] → [K·M, ...], a view (every buffer is contiguous)
            return t.view(K * m, *t.shape[2:])

        self.z_below, self.F_above = flat(self.z[:K]), flat(self.F[1:])
        self.R = self.E[: L - 1]  # r, then ε = ρ r + λ in place
        self.E_above = flat(self.E[1 : K + 1])  # ε_2 … ε_{L-1}, and r_2 … r_{L-1}
        self.P_below = flat(self.P[:K])  # φ(z_1) … φ(z_{L-2})
        self.Q_hidden, self.Q_top = flat(self.Q[:K]), self.Q[L - 2]
        self.P_top = self.P[L - 2]
        self.W3, self.WT3 = flat(self.W), flat(self.WT)

    def _compiled_coefficients(self, dual: bool) -> tuple[torch.Tensor, ...]:
        """(η_h, ρ, α or 0, a_h, a_out) for the compiled step: 0-d tensors, or [M, 1, 1] for
        a mixed stack's per-model options (they broadcast against [·, M, B, N] and [M, B, N])."""
        def scalar(v):
            return torch.tensor(float(v), dtype=self.z.dtype, device=self.z.device)

        if self.eta_m is None:
            p = self.plan
            eta, rho, alpha = (scalar(v) for v in (p.state_lr, p.rho, p.alpha or 0.0))
        else:
            eta, rho, alpha = (t.view(self.m, 1, 1) for t in (self.eta_m, self.rho_m,
                                                                self.alpha_m))
        return (eta, rho, alpha if dual else torch.zeros_like(alpha), scalar(self.a_h),
                scalar(self.a_out))

    def _per_model(self, values: tuple[float, ...]) -> torch.Tensor:
        if len(values) != self.m:
            raise ValueError(f"per-model options for {len(values)} models, but the net is a "
                             f"stack of {self.m}")
        return torch.tensor(values, dtype=self.z.dtype, device=self.z.device).view(1, -1, 1, 1)

    # -- pieces -------------------------------------------------------------------------
    def prepare_weights(self) -> None:
        """Scaled / transposed copies of the weights, in the loop's layout (cheap: once a call)."""
        torch.mul(self.wh, self.a_h, out=self.W)
        self.WT.copy_(self.wh.transpose(-1, -2))
        torch.mul(self.w_out, -self.a_out, out=self.Wo_neg)
        self.WoT.copy_(self.w_out.transpose(-1, -2))

    def _phi(self, z: torch.Tensor, out: torch.Tensor) -> None:
        if self.act == "relu":
            torch.clamp_min(z, 0, out=out)
        elif self.act == "tanh":
            torch.tanh(z, out=out)
        # identity: P aliases z

    def _phi_all(self) -> None:
        """P = φ(z), D = φ'(z) for every layer; φ'(0) = 0 for ReLU as autograd's."""
        self._phi(self.z, self.P)
        if self.act == "relu":
            torch.sign(self.P, out=self.D)
        elif self.act == "tanh":
            torch.addcmul(self.one, self.P, self.P, value=-1, out=self.D)

    def _readout(self) -> None:
        """e = a_out φ(z_{L-1}) W_Lᵀ − y."""
        torch.baddbmm(self.y3, self.P_top, self.WoT, beta=-1, alpha=self.a_out, out=self.e)

    def _residuals(self) -> None:
        """r = z − f(z_below) for all layers, into R (= E[:L-1])."""
        if self.K:  # f_l = z_{l-1} + a_h φ(z_{l-1}) W_lᵀ, exactly as in `forward`
            torch.baddbmm(self.z_below, self.P_below, self.WT3, alpha=self.a_h, out=self.F_above)
        torch.sub(self.z, self.F, out=self.R)

    def _credit(self, dual: bool) -> None:
        """The credit step (SPEC §3, §4), in place on R, which holds r on entry::

            λ ← λ + α r        (dual ascent; only if `dual`)
            ε ← ρ r + λ        (PC: λ ≡ 0, so ε = ρ r)

        Arguments: `dual`, whether this step ends with a dual update (the last inner step of
        every outer step except the last, unless ``post_dual``). ρ, α are floats, or per model
        ``[1, M, 1, 1]`` for a mixed stack (a PC member there has α = 0, ρ = 1).
        """
        p = self.plan
        if self.rho_m is not None:  # a mixed stack (always with λ; a PC member has α = 0)
            if dual:
                self.lam.addcmul_(self.R, self.alpha_m)
            torch.addcmul(self.lam, self.R, self.rho_m, out=self.R)
        elif self.lam is not None:
            if dual:
                self.lam.add_(self.R, alpha=p.alpha)
            torch.add(self.lam, self.R, alpha=p.rho, out=self.R)
        elif p.rho != 1:
            self.R.mul_(p.rho)

    def _observed_credit(self) -> torch.Tensor:
        if self.rho_m is not None:
            return torch.addcmul(self.lam, self.R, self.rho_m)
        if self.lam is not None:
            return torch.add(self.lam, self.R, alpha=self.plan.rho)
        return self.R * self.plan.rho

    def _public(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """[L-1, M, ...] → [M, L-1, ...] (or [L-1, ...] for a lone net), as a fresh tensor."""
        if t is None:
            return None
        t = t.transpose(0, 1) if self.stacked else t[:, 0]
        return t.clone(memory_format=torch.contiguous_format)

    def _state(self, eps: torch.Tensor) -> InferenceState:
        e = self.e.clone() if self.stacked else self.e[0].clone()
        return InferenceState(self._public(self.z), self._public(self.lam), self._public(eps),
                              e, self.loss.clone())

    # -- the computation ----------------------------------------------------------------
    def forward(self, observer: Observer | None) -> None:
        """z ← forward pass (and φ, φ', e, ℓ); ε ← ρ r (λ = 0); BP: ε ← −δ (the adjoint)."""
        z, P, F = self.z, self.P, self.F
        self.forward_input()
        z[0].copy_(F[0])
        for l in range(self.K):  # sequential by nature
            self._phi(z[l], P[l])
            torch.baddbmm(z[l], P[l], self.WT[l], alpha=self.a_h, out=z[l + 1])
        self._phi_all()
        self._readout()
        self.set_loss()
        self.E[self.L - 1].zero_()
        if self.plan.kind == "bp":
            self._backprop()
            return
        self._residuals()
        if self.lam is not None:
            self.lam.zero_()
        self._credit(False)
        if observer is not None:
            observer(0, self._state(self.R))

    def set_loss(self) -> None:
        """ℓ = ½ ‖e‖² per sample, batch mean, per model (a lone net: a scalar)."""
        self.loss = 0.5 * self.e.pow(2).sum(-1).mean(-1)
        if not self.stacked:
            self.loss = self.loss[0]

    def forward_input(self) -> None:
        """F[0] = a_in x W_1ᵀ: the input layer's prediction (a wide matmul: MKL's)."""
        torch.baddbmm(self.F[0], self.x3, self.w_in_t, beta=0, alpha=self.a_in, out=self.F[0])

    def _backprop(self) -> None:
        """E[l] = −δ_l (BP's adjoint, SPEC §5)::

            −δ_{L-1} = −a_out φ'(h_{L-1}) ⊙ W_Lᵀ e
            −δ_l     = −δ_{l+1} + a_h φ'(h_l) ⊙ W_{l+1}ᵀ (−δ_{l+1})
        """
        E, D, Q = self.E, self.D, self.Q
        top = self.L - 2
        torch.bmm(self.e, self.Wo_neg, out=Q[top])
        if D is None:
            E[top].copy_(Q[top])
        else:
            torch.mul(D[top], Q[top], out=E[top])
        for l in range(self.K - 1, -1, -1):
            torch.bmm(E[l + 1], self.W[l], out=Q[l])
            if D is None:
                torch.add(E[l + 1], Q[l], out=E[l])
            else:
                torch.addcmul(E[l + 1], D[l], Q[l], out=E[l])

    def primal_step(self) -> None:
        """One primal step on every layer at once (SPEC §3, §4), then φ, φ', r, e at the new z::

            z_l ← z_l − η_h ∂𝓛/∂z_l,   ∂𝓛/∂z_l = ε_l − ε_{l+1} − a_h φ'(z_l) ⊙ (ε_{l+1} W_{l+1})
            z_{L-1} ← z_{L-1} − η_h (ε_{L-1} + a_out φ'(z_{L-1}) ⊙ (e W_L))

        written as z ← z + η_h (D ⊙ Q + ε_next − ε) with Q_l = a_h ε_{l+1} W_{l+1} (two batched
        matmuls: the hidden layers and the readout) and ε_L = 0 (the zero slot E[L-1]). η_h is
        a float, or per model ``[1, M, 1, 1]`` for a mixed stack. Reads E (= ε) and e; writes
        z, P, D, R (= r at the new z) and e.
        """
        eta = self.plan.state_lr
        if self.K:
            torch.bmm(self.E_above, self.W3, out=self.Q_hidden)  # a_h ε_{l+1} W_{l+1}
        torch.bmm(self.e, self.Wo_neg, out=self.Q_top)  # −a_out e W_L
        z = self.z
        if self.eta_m is not None:  # a mixed stack: Q ← D ⊙ Q + ε_next − ε, z ← z + η_m Q
            if self.D is not None:
                self.Q.mul_(self.D)
            self.Q.add_(self.E[1:]).sub_(self.E[:-1])
            z.addcmul_(self.Q, self.eta_m)
        else:
            if self.D is None:
                z.add_(self.Q, alpha=eta)
            else:
                z.addcmul_(self.D, self.Q, value=eta)
            z.add_(self.E[1:], alpha=eta)
            z.sub_(self.E[:-1], alpha=eta)
        self._phi_all()
        self._residuals()
        self._readout()

    def loop_eager(self, observer: Observer | None) -> None:
        """SPEC §4's inference from the forward pass (which set λ = 0, ε = ρ r)::

            for t = 1..T:  for i = 1..k:  primal step;  credit (dual update after the k-th
                           inner step, except at t = T unless post_dual)

        T = ``budget``, k = ``inner_steps``. `observer(step, state)` sees a copy of the state
        after every primal step (the credit ε of the λ that step used)."""
        p = self.plan
        step = 0
        for t in range(p.budget):
            for i in range(p.inner_steps):
                self.primal_step()
                dual = (self.lam is not None and i == p.inner_steps - 1
                        and (t < p.budget - 1 or p.post_dual))
                if observer is not None:
                    step += 1
                    observer(step, self._state(self._observed_credit()))
                self._credit(dual)

    def weight_grads(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SPEC §3's weight gradients at the final (z, ε, e), batch means::

            ∂𝓛/∂W_1 = −a_in ε_1 xᵀ,   ∂𝓛/∂W_l = −a_h ε_l φ(z_{l-1})ᵀ (2 ≤ l ≤ L-1),
            ∂𝓛/∂W_L = a_out e φ(z_{L-1})ᵀ

        For BP, E holds −δ (`_backprop`), which gives BP's gradients by the same formulas.
        Returns (g_in, g_hidden, g_out) shaped like (w_in, w_hidden, w_out)."""
        b, m, K = self.B, self.m, self.K
        eps1 = self.E[0]
        g_in = torch.matmul(eps1.transpose(-1, -2), self.x3).mul_(-self.a_in / b)
        g_hidden = torch.bmm(self.E_above.transpose(-1, -2), self.P_below)
        g_hidden = g_hidden.mul_(-self.a_h / b).reshape(K, m, *g_hidden.shape[1:])
        g_out = torch.bmm(self.e.transpose(-1, -2), self.P_top).mul_(self.a_out / b)
        if self.stacked:
            return g_in, g_hidden.transpose(0, 1).contiguous(), g_out
        return g_in[0], g_hidden[:, 0].contiguous(), g_out[0]

    def output(self, want_state: bool) -> Output:
        state = self._state(self.R) if want_state and self.plan.kind != "bp" else None
        return Output(self.weight_grads(), self.loss, state)


def _allocator(like: torch.Tensor):
    def new(*shape):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return new
