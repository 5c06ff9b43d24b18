"""Equilibrium mode: the fixed point of SPEC §4's PC / PC-ALM inference, solved directly.

Plain PC inference is gradient descent on the energy F (SPEC §2) with step η_h. Its fixed
point is a stationary point of F; the slowest mode of RᵀR (the longest wavelength across the
depth) makes plain descent need ~L²/η_h steps (≈ 35,000 at L = 64). This module reaches the
same fixed point — same energy, same stationarity condition — with a Newton solver.

**PC** (and the primal problem of PC-ALM at fixed λ). Per sample, with ε = ρ r + λ and the
constraint Jacobian R(z) (unit block-lower-bidiagonal, −J_l = −(I + a_h W_l diag φ'(z_{l-1}))
below the diagonal) and readout Jacobian P = a_L W_L diag φ'(z_{L-1}) (SPEC §6):

    g(z) = ∂𝓛/∂z = Rᵀ ε + Pᵀ e                                   (SPEC §3, all layers)
    H(z) = ρ RᵀR + PᵀP + diag(φ''(z) ⊙ b)                         (exact Hessian)
    b_l  = −a_h W_{l+1}ᵀ ε_{l+1}  (l < L−1),   b_{L−1} = a_L W_Lᵀ e

(the last term is the only part beyond Gauss–Newton; it vanishes for identity and ReLU, and
is used only once the relative residual is below 1e-3: far from the fixed point it can make
H indefinite, and Gauss–Newton (always positive definite) is the safer direction).
Each Newton step solves H d = −g by preconditioned conjugate gradients with the
preconditioner (ρ RᵀR)⁻¹ = R⁻¹R⁻ᵀ/ρ — one forward and one backward substitution sweep
(the shapes of a forward pass and of backprop). Then the preconditioned matrix is
I + (low rank C = 10) + (small diagonal), and CG converges in about C + 1 iterations
whatever the depth. A per-sample Armijo backtracking line search on 𝓛 keeps every step a
descent step. For a linear net one Newton step is exact.

**ReLU kinks.** F is piecewise quadratic and its gradient jumps where a z_i crosses 0 (only
the i-th component jumps, by b_i). A minimiser can sit on a kink, where plain descent
chatters forever. The solver treats such coordinates as an active set: a step that would
carry z_i across 0 stops it at 0 and pins it; a pinned coordinate is released when one of
its one-sided derivatives points away from 0. The stationarity residual is the norm of the
minimum-norm (Clarke) subgradient: g_i where z_i ≠ 0, and the distance from 0 to the
interval between the two one-sided derivatives [g_i|φ'=0, g_i|φ'=1] where z_i = 0.

**Stopping.** Per sample, `relative residual` = ‖g(z)‖ / ‖g(h)‖, where h is the forward
pass (there r = 0 and g(h) is the output error's pull on the top layer). The solver stops
when the largest relative residual over the batch is ≤ `tol` (default 1e-8, float64).

**PC-ALM** (SPEC §5): the joint fixed point of the primal descent and the dual ascent is
r = 0 and primal stationarity, i.e. z = h (the forward pass) and λ = −δ (minus backprop's
adjoint). That KKT system is block-triangular: one forward substitution (z) and one back
substitution (λ) solve it exactly — the solver's one iteration. The plain iteration reaches
it only when its spectral radius is < 1; the equilibrium is the same point either way.

Everything is solved in float64 (a copy of the net) and returned in the net's dtype; the
residuals are measured in float64.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from pcalm.core import energy
from pcalm.core.model import ResidualMLP

DEFAULT_TOL = 1e-8
DEFAULT_MAX_NEWTON = 50
DEFAULT_MAX_CG = 200
_ARMIJO = 1e-4
_MAX_HALVINGS = 40
_EXACT_BELOW = 1e-3  # relative residual below which Newton uses the exact Hessian


@dataclass
class Equilibrium:
    """A solved fixed point: the state, and how well and how fast it was reached.

    z [L−1, B, N], lam (PC-ALM's λ; None for PC), eps = ρ r + λ (the weight credit), e = ŷ − y;
    residual: the largest per-sample relative stationarity residual (module doc);
    dual_residual: PC-ALM's largest per-sample ‖r‖ / ‖h‖ (0 for PC); iterations: Newton
    steps (PC) or 1 (PC-ALM's direct solve); cg_iterations: CG iterations summed over the
    Newton steps; pinned: ReLU coordinates held at a kink; converged: residual ≤ tol.
    """

    z: torch.Tensor
    lam: torch.Tensor | None
    eps: torch.Tensor
    e: torch.Tensor
    residual: float
    dual_residual: float
    iterations: int
    cg_iterations: int
    pinned: int
    converged: bool
    tol: float

    def record(self, prefix: str = "equilibrium_") -> dict:
        """The scalars a run's summary records."""
        return {f"{prefix}residual": self.residual,
                f"{prefix}dual_residual": self.dual_residual,
                f"{prefix}iterations": self.iterations,
                f"{prefix}cg_iterations": self.cg_iterations,
                f"{prefix}pinned": self.pinned,
                f"{prefix}converged": self.converged, f"{prefix}tol": self.tol}


# ------------------------------------------------------------------ per-sample algebra


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product of stacked states [L−1, B, N] → [B]."""
    return (a * b).sum(dim=(0, 2))


def _norm(a: torch.Tensor) -> torch.Tensor:
    return _dot(a, a).sqrt()


class _Linearised:
    """R, Rᵀ, R⁻¹, R⁻ᵀ, P, Pᵀ at fixed φ'-values `dphi` [L−1, B, N] (module doc)."""

    def __init__(self, net: ResidualMLP, dphi: torch.Tensor):
        self.net, self.dphi = net, dphi
        self.w = net.w_hidden.detach()
        self.w_out = net.w_out.detach()

    def j(self, k: int, u: torch.Tensor) -> torch.Tensor:
        """J u for the block from layer k to k+1: u + a_h (φ'_k ⊙ u) W_{k+1}ᵀ."""
        return u + self.net.a_hidden * ((self.dphi[k] * u) @ self.w[k].T)

    def jt(self, k: int, u: torch.Tensor) -> torch.Tensor:
        return u + self.net.a_hidden * self.dphi[k] * (u @ self.w[k])

    def r(self, v: torch.Tensor) -> torch.Tensor:
        below = v[:-1] + self.net.a_hidden * ((self.dphi[:-1] * v[:-1]) @ self.w.transpose(-1, -2))
        return torch.cat([v[:1], v[1:] - below])

    def rt(self, w: torch.Tensor) -> torch.Tensor:
        above = w[1:] + self.net.a_hidden * self.dphi[:-1] * (w[1:] @ self.w)
        return torch.cat([w[:-1] - above, w[-1:]])

    def r_inv(self, u: torch.Tensor) -> torch.Tensor:
        """Forward substitution: v_1 = u_1, v_{k+1} = u_{k+1} + J v_k."""
        out = [u[0]]
        for k in range(u.shape[0] - 1):
            out.append(u[k + 1] + self.j(k, out[-1]))
        return torch.stack(out)

    def rt_inv(self, u: torch.Tensor) -> torch.Tensor:
        """Back substitution: v_{L−1} = u_{L−1}, v_k = u_k + Jᵀ v_{k+1}."""
        out = [u[-1]]
        for k in range(u.shape[0] - 2, -1, -1):
            out.append(u[k] + self.jt(k, out[-1]))
        return torch.stack(out[::-1])

    def p(self, v: torch.Tensor) -> torch.Tensor:
        return self.net.a_out * ((self.dphi[-1] * v[-1]) @ self.w_out.T)

    def pt(self, q: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(self.dphi)
        out[-1] = self.net.a_out * self.dphi[-1] * (q @ self.w_out)
        return out


class _Problem:
    """The per-sample Lagrangian 𝓛(z) = ℓ + Σ_l [λ_l·r_l + (ρ/2)‖r_l‖²] of one batch (float64)."""

    def __init__(self, net: ResidualMLP, x, y, rho: float, lam: torch.Tensor | None):
        self.net, self.y, self.rho = net, y, rho
        self.lam = lam
        self.bottom = net.bottom_prediction(x)
        self.relu = net.act.name == "relu"

    def parts(self, z: torch.Tensor):
        """r, ε = ρ r + λ, e = ŷ − y at z (SPEC §2–3)."""
        r = energy.residuals(self.net, self.bottom, z)
        eps = self.rho * r if self.lam is None else self.rho * r + self.lam
        e = self.net.readout(z[-1]) - self.y
        return r, eps, e

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample 𝓛 [B]."""
        r, _, e = self.parts(z)
        out = 0.5 * e.pow(2).sum(-1) + 0.5 * self.rho * r.pow(2).sum(dim=(0, 2))
        if self.lam is not None:
            out = out + _dot(self.lam, r)
        return out

    def split_gradient(self, z: torch.Tensor):
        """g = g_base + φ'(z) ⊙ b (module doc): the part free of φ'(z_l), and b."""
        _, eps, e = self.parts(z)
        net = self.net
        b = torch.cat([-net.a_hidden * (eps[1:] @ net.w_hidden.detach()),
                       (net.a_out * (e @ net.w_out.detach())).unsqueeze(0)])
        base = eps - torch.cat([eps[1:], torch.zeros_like(eps[:1])])
        return base, b

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of the minimum-norm subgradient of 𝓛 at z [B] (module doc)."""
        base, b = self.split_gradient(z)
        g = base + self.net.act.deriv(z) * b
        if self.relu:
            at_kink = z == 0
            lo, hi = torch.minimum(base, base + b), torch.maximum(base, base + b)
            dist = torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo)))
            g = torch.where(at_kink, dist, g)
        return _norm(g)


def _second_derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        t = torch.tanh(z)
        return -2 * t * (1 - t * t)
    return torch.zeros_like(z)  # identity; ReLU almost everywhere


def _pcg(apply_h, apply_m, rhs, target, max_iter: int):
    """Per-sample preconditioned CG for H d = rhs; a sample stops when ‖H d − rhs‖ ≤ target
    (per sample) or on non-positive curvature. Returns d and the iterations run."""
    d = torch.zeros_like(rhs)
    res = rhs.clone()
    pre = apply_m(res)
    p = pre.clone()
    rz = _dot(res, pre)
    active = _norm(res) > target
    its = 0
    while bool(active.any()) and its < max_iter:
        its += 1
        hp = apply_h(p)
        curv = _dot(p, hp)
        active = active & (curv > 0)
        alpha = torch.where(active, rz / torch.where(active, curv, 1.0), 0.0)
        d = d + alpha.view(1, -1, 1) * p
        res = res - alpha.view(1, -1, 1) * hp
        pre = apply_m(res)
        rz_new = _dot(res, pre)
        active = active & (_norm(res) > target)
        beta = torch.where(active, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        p = pre + beta.view(1, -1, 1) * p
        rz = rz_new
    return d, its


# ------------------------------------------------------------------------- solvers


def _check_net(net: ResidualMLP, x: torch.Tensor) -> None:
    if net.num_models is not None:
        raise ValueError("the equilibrium solver takes a single net, not a model stack")
    if x.dim() != 2:
        raise ValueError(f"x must be [B, D], got shape {tuple(x.shape)}")


def _to(dtype, t: torch.Tensor) -> torch.Tensor:
    return t.to(dtype)


def _as_float64(net: ResidualMLP) -> ResidualMLP:
    return net if net.w_in.dtype == torch.float64 else copy.deepcopy(net).double()


@torch.no_grad()
def solve_pc(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor, rho: float = 1.0,
             lam: torch.Tensor | None = None, tol: float = DEFAULT_TOL,
             max_newton: int = DEFAULT_MAX_NEWTON, max_cg: int = DEFAULT_MAX_CG) -> Equilibrium:
    """PC's fixed point: the stationary point of 𝓛_ρ(·, λ) (PC: λ = None, ρ = 1) that
    z ← z − η_h ∂𝓛/∂z reaches from the forward pass, by Newton–CG (module doc)."""
    _check_net(net, x)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    dtype = net.w_in.dtype
    net = _as_float64(net)
    x, y = x.double(), y.double()
    lam = None if lam is None else lam.double()
    problem = _Problem(net, x, y, rho, lam)
    z, _ = net.forward_states(x)
    scale = problem.residual(z).clamp_min(torch.finfo(torch.float64).tiny)
    side = torch.where(z > 0, 1.0, -1.0).double()  # ReLU: which piece a coordinate is on
    free = torch.ones_like(z, dtype=torch.bool)
    newton = cg_total = 0
    worst = float((problem.residual(z) / scale).max())
    while worst > tol and newton < max_newton:
        newton += 1
        if problem.relu:
            side, free = _release(problem, z, side, free)
        exact = worst < _EXACT_BELOW
        d, its = _newton_direction(problem, z, side, free, scale * tol * 0.1, max_cg, exact)
        cg_total += its
        z, side, free = _line_search(problem, z, d, side, free)
        worst = float((problem.residual(z) / scale).max())
    r, eps, e = problem.parts(z)
    return Equilibrium(_to(dtype, z), None if lam is None else _to(dtype, lam),
                       _to(dtype, eps), _to(dtype, e),
                       residual=worst, dual_residual=0.0, iterations=newton,
                       cg_iterations=cg_total, pinned=int((~free).sum()),
                       converged=worst <= tol, tol=float(tol))


def _release(problem: _Problem, z, side, free):
    """ReLU: a pinned z_i = 0 is released to the side its one-sided derivatives point to
    (left derivative g|φ'=0 > 0: move left; right derivative g|φ'=1 < 0: move right)."""
    base, b = problem.split_gradient(z)
    left, right = base, base + b
    go_right = ~free & (right < 0) & ((left <= 0) | (-right >= left))
    go_left = ~free & (left > 0) & ~go_right
    side = torch.where(go_right, 1.0, torch.where(go_left, -1.0, side))
    return side, free | go_right | go_left


def _newton_direction(problem: _Problem, z, side, free, target, max_cg: int, exact: bool):
    """Solve H d = −g on the free coordinates (pinned ones stay: d_i = 0); Gauss–Newton H
    unless `exact` (the φ'' term can make H indefinite far from the fixed point)."""
    net = problem.net
    if problem.relu:
        dphi = torch.where(free & (side > 0), 1.0, 0.0).double()
    else:
        dphi = net.act.deriv(z)
    ops = _Linearised(net, dphi)
    base, b = problem.split_gradient(z)
    g = torch.where(free, base + dphi * b, 0.0)
    curvature = _second_derivative(net.act.name, z) * b if exact else 0.0
    mask = free.double()

    def apply_h(v):
        v = v * mask
        hv = problem.rho * ops.rt(ops.r(v)) + ops.pt(ops.p(v)) + curvature * v
        return hv * mask

    def apply_m(v):
        return ops.r_inv(ops.rt_inv(v * mask)) * mask / problem.rho

    d, its = _pcg(apply_h, apply_m, -g, target, max_cg)
    stuck = _dot(d, g) >= 0  # no descent found (non-positive curvature at once): use −g
    d = torch.where(stuck.view(1, -1, 1), -g, d)
    return d, its


def _line_search(problem: _Problem, z, d, side, free):
    """Per-sample Armijo backtracking from t = 1 on 𝓛(project(z + t d)); ReLU coordinates
    that would cross 0 stop there and are pinned (projection onto the current piece)."""
    start = problem.value(z)
    # Near the fixed point the decrease (~‖g‖²/λ) is below float64's resolution of 𝓛:
    # allow rounding-level increases, so the quadratically convergent full step is kept.
    rounding = 64 * torch.finfo(start.dtype).eps * start.abs()
    base, b = problem.split_gradient(z)
    slope = _dot(base + problem.net.act.deriv(z) * b, d)
    t = torch.ones_like(start)
    accepted = torch.zeros_like(start, dtype=torch.bool)
    new_z, new_free = z, free
    for _ in range(_MAX_HALVINGS):
        trial = z + t.view(1, -1, 1) * d
        trial_free = free
        if problem.relu:
            crossed = free & (trial * side < 0)
            trial = torch.where(crossed, 0.0, trial)
            trial_free = free & ~crossed
        bound = start + _ARMIJO * t * slope.clamp_max(0) + rounding
        ok = ~accepted & (problem.value(trial) <= bound)
        pick = ok.view(1, -1, 1)
        new_z = torch.where(pick, trial, new_z)
        new_free = torch.where(pick, trial_free, new_free)
        accepted = accepted | ok
        if bool(accepted.all()):
            break
        t = torch.where(accepted, t, t / 2)
    return new_z, side, new_free


@torch.no_grad()
def solve_pcalm(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor,
                rho: float = 1.0) -> Equilibrium:
    """PC-ALM's joint fixed point r = 0, ∂𝓛/∂z = 0: z = h, λ = −δ (SPEC §5), by one forward
    and one back substitution; its residuals measured with SPEC §3's gradient (float64)."""
    _check_net(net, x)
    dtype = net.w_in.dtype
    net = _as_float64(net)
    x, y = x.double(), y.double()
    h, delta, e = energy.backprop(net, x, y)
    lam = -delta
    problem = _Problem(net, x, y, rho, lam)
    r, eps, e = problem.parts(h)
    scale = _norm(delta).clamp_min(torch.finfo(torch.float64).tiny)
    primal = float((_norm(energy.state_grad(net, h, eps, e)) / scale).max())
    dual = float((_norm(r) / _norm(h).clamp_min(torch.finfo(torch.float64).tiny)).max())
    return Equilibrium(_to(dtype, h), _to(dtype, lam), _to(dtype, eps), _to(dtype, e),
                       residual=primal, dual_residual=dual, iterations=1, cg_iterations=0, pinned=0,
                       converged=primal <= DEFAULT_TOL and dual <= DEFAULT_TOL,
                       tol=DEFAULT_TOL)


def solve(algo: str, net: ResidualMLP, x, y, rho: float = 1.0, **options) -> Equilibrium:
    """The fixed point of `algo`'s inference (`pc` or `pcalm`; module doc)."""
    if algo == "pc":
        return solve_pc(net, x, y, rho=rho, **options)
    if algo == "pcalm":
        return solve_pcalm(net, x, y, rho=rho)
    raise ValueError(f"bad algorithm {algo!r} for an equilibrium: allowed: pc, pcalm")

