"""The diagnostic tasks behind the theory figures 1, 3, 4, 5, 8 and 9 (SPEC §5–7).

Each task is `(cfg, dataset | None) -> (summary, arrays)` (pcalm/runs/tasks/spec.py; listed by
pcalm/runs/tasks/registry.py, the registry): the run folder
gets `summary.json` (scalars, one table row) and `arrays.npz` (the curves a figure draws).
The net is built from `model.*` with `train.seed`, on `train.device`; `algo.*` gives T, η_h,
ρ and α. Parameters live in the config's `task` section (defaults below, in `register`).

| task              | figure | what it stores                                                |
|-------------------|--------|---------------------------------------------------------------|
| scalar_dynamics   | 1      | z(t), λ(t), ε(t), weight gradients (t) of a scalar 1-1-1 net  |
| credit_traces     | 3      | ‖ε_l(t)‖/‖δ_l‖ and cos(ε_l(t), −δ_l), layer × step           |
| linear_dynamics   | 4      | eigenvalues of the iteration matrix M, primal/dual traces     |
| alignment_curve   | 5      | cos(g(t), g_BP) vs step, whole network and per layer          |
| credit_routes     | 8, 9   | hidden-credit alignment and gradient cosine vs inference FLOPs |

Inference is run once to the longest budget with an observer: the state after primal step t
of a budget-T_max run *is* the final state of a budget-t run (same steps; the credit the
observer sees, ε = ρ r + λ with the λ of that step, is the `pre_dual` weight credit), so one
run gives the whole curve over budgets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pcalm.core import diagnostics, energy, equilibrium
from pcalm.core.algorithms import InferenceState, make_algorithm
from pcalm.core.device import DTYPES, resolve_device
from pcalm.errors import ConfigError, is_finite_number
from pcalm.names import canonical_activation
from pcalm.runs import build
from pcalm.runs.tasks.spec import register

STATE_LR_RULES = ("inverse_lambda_max", "algo")


# ------------------------------------------------------------------------------ helpers


def _param(cfg: dict, key: str, kind: str, minimum: float | None = None):
    """A task parameter, checked: kind = int | number | bool | choice:<a>|<b>."""
    value = cfg["task"][key]
    where = f"task.{key}"
    if kind.startswith("choice:"):
        allowed = kind.split(":", 1)[1].split("|")
        if value not in allowed:
            raise ConfigError(f"bad value {where}={value!r}: allowed: {', '.join(allowed)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"bad value {where}={value!r}: allowed: true, false")
        return value
    is_int = is_finite_number(value) and isinstance(value, int)
    is_num = is_finite_number(value)
    if (kind == "int" and not is_int) or not is_num or (minimum is not None and value < minimum):
        what = "an integer" if kind == "int" else "a number"
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"bad value {where}={value!r}: allowed: {what}{bound}")
    return int(value) if kind == "int" else float(value)


def _device(cfg: dict) -> torch.device:
    return resolve_device(cfg["train"]["device"])


def _require_inference(cfg: dict) -> None:
    """These tasks trace PC / PC-ALM inference: BP has none."""
    if cfg["algo"]["name"] not in ("pc", "pcalm"):
        raise ConfigError(f"bad value algo.name={cfg['algo']['name']!r} for task "
                          f"{cfg['task']['name']}: allowed: pc, pcalm")


def _algorithm(cfg: dict, **changes):
    """The run's PC or PC-ALM (from `algo.*`), with `changes` applied (budget, state_lr)."""
    _require_inference(cfg)
    return build.algorithm(cfg, **changes)


def _pc_reference(cfg: dict, budget: int):
    """PC with the run's η_h and `budget` steps (the reference curve of a PC-ALM run)."""
    return make_algorithm("pc", budget=budget, state_lr=cfg["algo"]["state_lr"])


def log_steps(t_max: int, points: int, include: tuple[int, ...] = ()) -> list[int]:
    """About `points` log-spaced steps in [1, t_max] (distinct ints), plus `include`."""
    grid = np.unique(np.round(np.logspace(0, math.log10(max(t_max, 1)), points)).astype(int))
    return sorted({int(s) for s in grid} | {int(s) for s in include if 1 <= s <= t_max})


def _grad_list(g) -> list[torch.Tensor]:
    g_in, g_hidden, g_out = g
    return [g_in, *g_hidden.unbind(-3), g_out]


def flops_per_step(width: int, depth: int, batch: int, outputs: int = 10) -> int:
    """Multiply-adds × 2 of one primal step (SPEC §3), the forward pass excluded::

        4·B·N²·(L−2)   two matmuls per hidden block: a_h ε_{l+1} W_{l+1} (for ∂𝓛/∂z_l) and
                       a_h φ(z_{l-1}) W_lᵀ (the predictions f_l, hence r); 2·B·N² each
      + 4·B·N·C        the readout's two: e W_L (for ∂𝓛/∂z_{L-1}) and φ(z_{L-1}) W_Lᵀ (ŷ)

    Elementwise work (O(B·N·L)) is left out; the dual update λ += α r is elementwise too,
    so PC and PC-ALM cost the same per step.
    """
    return 4 * batch * width * (width * max(depth - 2, 0) + outputs)


def _summary_common(state_lr: float, t_max: int) -> dict:
    """η_h as used and the number of inference steps run: in every task's summary."""
    return {"state_lr": float(state_lr), "steps": int(t_max)}


# --------------------------------------------------------------------- Figure 1


def _linear_step(cfg: dict, net, rule: str):
    """ρ, α, the linear inference Hessian H, its λ_max, and η_h (1/λ_max or the config's)."""
    rho = float(cfg["algo"].get("rho", 1.0))
    alpha = float(cfg["algo"].get("alpha", 0.0)) if cfg["algo"]["name"] == "pcalm" else 0.0
    hess = diagnostics.linear_hessian(net, rho)
    lambda_max = float(torch.linalg.eigvalsh(hess)[-1])
    state_lr = 1 / lambda_max if rule == "inverse_lambda_max" else cfg["algo"]["state_lr"]
    return rho, alpha, hess, lambda_max, state_lr


@register("scalar_dynamics", needs_data=False, w1=0.8, w2=1.3, x=1.0, y=0.0,
          state_lr="inverse_lambda_max")
@torch.no_grad()
def scalar_dynamics(cfg: dict, dataset=None):
    """Figure 1: the scalar two-layer linear net ŷ = w2 · z, z ≈ w1 · x (L = 2, D = N = C = 1).

    Unit scales (`model.param=sp`: a = 1), weights set to `task.w1`, `task.w2`; one sample
    (x, y). T = `algo.budget` steps of PC or PC-ALM from the forward pass, in float64.
    Stores per step t = 0..T: z(t), λ(t) (zeros for PC), the credit ε(t) = ρ r + λ and the
    weight gradients (∂/∂w1, ∂/∂w2) at that state; and the BP references h = w1 x,
    −δ = −w2 e (λ* of SPEC §5), g_BP. `task.state_lr=inverse_lambda_max`: η_h = 1/λ_max with
    λ_max = w2² + ρ the exact Hessian of the inference energy (overrides `algo.state_lr`).
    The iteration matrix M (SPEC §6; PC: I − η_h H) and its spectral radius go in too.
    """
    _require_inference(cfg)
    m = cfg["model"]
    if (m["width"], m["depth"]) != (1, 2) or canonical_activation(m["activation"]) != "identity":
        raise ConfigError("task scalar_dynamics needs model.width=1 model.depth=2 "
                          "model.activation=identity (the scalar two-layer linear net)")
    w1, w2 = _param(cfg, "w1", "number"), _param(cfg, "w2", "number")
    x0, y0 = _param(cfg, "x", "number"), _param(cfg, "y", "number")
    rule = _param(cfg, "state_lr", "choice:" + "|".join(STATE_LR_RULES))
    dtype = torch.float64
    net = build.net(cfg, 1, 1, cfg["train"]["seed"], "cpu", dtype)
    with torch.no_grad():
        net.w_in.fill_(w1)
        net.w_out.fill_(w2)
    x = torch.tensor([[x0]], dtype=dtype)
    y = torch.tensor([[y0]], dtype=dtype)
    rho, alpha, hess, lambda_max, state_lr = _linear_step(cfg, net, rule)
    algo = _algorithm(cfg, state_lr=state_lr)

    h, delta, e_fwd = energy.backprop(net, x, y)
    g_bp = _grad_list(energy.weight_grads(net, x, h, -delta, e_fwd))
    rows = []

    def observe(step: int, s: InferenceState) -> None:
        g = _grad_list(energy.weight_grads(net, x, s.z, s.eps, s.e))
        lam = float(s.lam.reshape(-1)[0]) if s.lam is not None else 0.0
        rows.append((step, float(s.z.reshape(-1)[0]), lam, float(s.eps.reshape(-1)[0]),
                     float(g[0].reshape(-1)[0]), float(g[-1].reshape(-1)[0]),
                     float(s.e.reshape(-1)[0])))

    algo.infer(net, x, y, observer=observe)
    rec = np.array(rows, dtype=np.float64)
    if alpha > 0:
        matrix = diagnostics.iteration_matrix(net, state_lr, rho=rho, alpha=alpha)
    else:  # PC: λ never moves, the z block alone is the iteration
        matrix = torch.eye(hess.shape[0], dtype=dtype) - state_lr * hess
    eig = torch.linalg.eigvals(matrix)
    g_bp_w1, g_bp_w2 = float(g_bp[0]), float(g_bp[-1])
    err = np.abs(rec[:, 4:6] - np.array([g_bp_w1, g_bp_w2])).max(axis=1)
    arrays = {
        "step": rec[:, 0].astype(np.int64), "z": rec[:, 1], "lam": rec[:, 2], "eps": rec[:, 3],
        "grad_w1": rec[:, 4], "grad_w2": rec[:, 5], "output_error": rec[:, 6],
        "grad_error": err, "eig_real": eig.real.numpy(), "eig_imag": eig.imag.numpy(),
    }
    summary = {
        **_summary_common(state_lr, len(rec) - 1),
        "lambda_max": lambda_max,
        "forward_z": float(h.reshape(-1)[0]), "neg_delta": float(-delta.reshape(-1)[0]),
        "output_error_forward": float(e_fwd.reshape(-1)[0]),
        "grad_bp_w1": g_bp_w1, "grad_bp_w2": g_bp_w2,
        "grad_w1_final": float(rec[-1, 4]), "grad_w2_final": float(rec[-1, 5]),
        "grad_error_final": float(err[-1]),
        "z_final": float(rec[-1, 1]), "lam_final": float(rec[-1, 2]),
        "spectral_radius": float(eig.abs().max()),
    }
    return summary, arrays


# --------------------------------------------------------------------- Figure 3


@register("credit_traces", needs_data=True, steps_per_layer=4)
@torch.no_grad()
def credit_traces(cfg: dict, dataset):
    """Figure 3: the credit ε_l(t) against the BP adjoint, every layer and step, at init.

    One batch (the seed's first, `train.batch_size`), T_max = `task.steps_per_layer` · L
    steps of the run's algorithm with `algo.state_lr`. Stores `norm_ratio` and `cosine`
    [T_max + 1, L − 1] (row 0 = forward pass, zero credit) from `diagnostics.credit_traces`.
    Summary: mean over hidden layers of the cosine at t = `algo.budget` and at T_max.
    """
    _require_inference(cfg)
    spl = _param(cfg, "steps_per_layer", "int", 1)
    depth = cfg["model"]["depth"]
    t_max = spl * depth
    dtype, device = DTYPES[cfg["train"]["dtype"]], _device(cfg)
    net = build.net(cfg, dataset.input_dim, dataset.num_classes, cfg["train"]["seed"], device,
                    dtype)
    x, y = build.first_batch(cfg, dataset, dtype, device)
    algo = _algorithm(cfg, budget=t_max)
    traces = diagnostics.credit_traces(algo, net, x, y)
    norm = traces["norm_ratio"].double().cpu().numpy()
    cos = traces["cosine"].double().cpu().numpy()
    budget = min(cfg["algo"]["budget"], t_max)
    summary = {
        **_summary_common(cfg["algo"]["state_lr"], t_max),
        "credit_cosine_at_budget": float(cos[budget].mean()),
        "credit_cosine_final": float(cos[-1].mean()),
        "credit_norm_ratio_at_budget": float(norm[budget].mean()),
        "bottom_cosine_at_budget": float(cos[budget, 0]),
        **credit_front(norm),
    }
    if cfg["algo"]["name"] == "pcalm":  # SPEC §6: the wave moves √(α η_h) layers per step
        summary["front_speed_predicted"] = math.sqrt(cfg["algo"]["alpha"] * cfg["algo"][
            "state_lr"])
    return summary, {"norm_ratio": norm, "cosine": cos}


FRONT_LEVEL = 0.5  # credit has "arrived" at a layer when ‖ε_l‖/‖δ_l‖ first reaches this


def credit_front(norm: np.ndarray, level: float = FRONT_LEVEL) -> dict:
    """The measured credit front from ‖ε_l(t)‖/‖δ_l‖ [T + 1, L − 1] (layer 0 = the input side).

    Arrival t_l = the first step with ratio ≥ `level`; d_l = L − 1 − l layers below the output
    (the top hidden layer is d = 1). Over the layers reached (at least 3):
    `front_speed` = 1/slope of the least-squares line t_l = t_0 + d_l/v (layers per step),
    `front_exponent` = slope of log t_l against log d_l: 1 for a ballistic front (t ∝ d),
    2 for a diffusive one (t ∝ d², a heat equation). NaN where fewer than 3 layers arrive.
    """
    steps, layers = norm.shape
    reached = norm >= level
    d, t = [], []
    for layer in range(layers):
        hits = np.flatnonzero(reached[1:, layer])
        if hits.size:
            d.append(layers - layer)
            t.append(hits[0] + 1)
    out = {"front_layers_reached": len(d), "front_speed": math.nan, "front_exponent": math.nan}
    if len(d) >= 3 and len(set(d)) >= 2:
        d_arr, t_arr = np.asarray(d, float), np.asarray(t, float)
        slope = np.polyfit(d_arr, t_arr, 1)[0]
        out["front_speed"] = float(1 / slope) if slope > 0 else math.inf
        out["front_exponent"] = float(np.polyfit(np.log(d_arr), np.log(t_arr), 1)[0])
    return out


# --------------------------------------------------------------------- Figure 4


@register("linear_dynamics", needs_data=False, input_dim=784, trace_points=400,
          state_lr="inverse_lambda_max")
@torch.no_grad()
def linear_dynamics(cfg: dict, dataset=None):
    """Figure 4: a linear (identity) net on one random input: M's spectrum and the traces.

    Input x ~ N(0, I_D) (D = `task.input_dim`, unit-variance entries like standardised
    pixels) and a one-hot target of a random class, both from `train.seed`; float64.
    `task.state_lr=inverse_lambda_max`: η_h = 1/λ_max of H = PᵀP + ρRᵀR (exact, SPEC §6;
    overrides `algo.state_lr`). T = `algo.budget` steps. Stores the eigenvalues of M
    (PC-ALM; PC: of I − η_h H, its z block), and z(t), λ(t), ε(t) [S, L−1, N] at S ≈
    `task.trace_points` steps (all early ones, then log-spaced), with the references
    `forward_z` = h and `neg_delta` = −δ [L−1, N].
    """
    _require_inference(cfg)
    if canonical_activation(cfg["model"]["activation"]) != "identity":
        raise ConfigError("task linear_dynamics needs model.activation=identity")
    d = _param(cfg, "input_dim", "int", 1)
    points = _param(cfg, "trace_points", "int", 2)
    rule = _param(cfg, "state_lr", "choice:" + "|".join(STATE_LR_RULES))
    dtype = torch.float64
    net = build.net(cfg, d, 10, cfg["train"]["seed"], "cpu", dtype)
    gen = torch.Generator().manual_seed(cfg["train"]["seed"])
    x = torch.randn(1, d, generator=gen, dtype=dtype)
    label = int(torch.randint(0, 10, (1,), generator=gen))
    y = F.one_hot(torch.tensor([label]), 10).to(dtype)
    rho, alpha, hess, lambda_max, state_lr = _linear_step(cfg, net, rule)
    t_max = cfg["algo"]["budget"]
    algo = _algorithm(cfg, state_lr=state_lr)
    if alpha > 0:
        matrix = diagnostics.iteration_matrix(net, state_lr, rho=rho, alpha=alpha)
    else:
        matrix = torch.eye(hess.shape[0], dtype=dtype) - state_lr * hess
    eig = torch.linalg.eigvals(matrix)

    h, delta, e = energy.backprop(net, x, y)
    early = min(t_max, max(points // 4, 1))
    keep = sorted(set(range(early + 1)) | set(log_steps(t_max, points - early, (t_max,))))
    keep_set = set(keep)
    zs, lams, epss = [], [], []

    def observe(step: int, s: InferenceState) -> None:
        if step in keep_set:
            zs.append(s.z[:, 0].clone())
            lams.append(s.lam[:, 0].clone() if s.lam is not None else torch.zeros_like(s.z[:, 0]))
            epss.append(s.eps[:, 0].clone())

    final = algo.infer(net, x, y, observer=observe)
    g = _grad_list(energy.weight_grads(net, x, final.z, final.eps, final.e))
    g_bp = _grad_list(energy.weight_grads(net, x, h, -delta, e))
    align = diagnostics.grad_alignment(g, g_bp)
    h1, nd1 = h[:, 0], -delta[:, 0]
    z_err = float((final.z[:, 0] - h1).norm() / h1.norm())
    lam_final = final.lam[:, 0] if final.lam is not None else torch.zeros_like(h1)
    arrays = {
        "step": np.array(keep, dtype=np.int64),
        "z": torch.stack(zs).numpy(), "lam": torch.stack(lams).numpy(),
        "eps": torch.stack(epss).numpy(),
        "forward_z": h1.numpy(), "neg_delta": nd1.numpy(),
        "eig_real": eig.real.numpy(), "eig_imag": eig.imag.numpy(),
    }
    summary = {
        **_summary_common(state_lr, t_max),
        "lambda_max": lambda_max, "spectral_radius": float(eig.abs().max()),
        "target_class": label,
        "z_rel_error_final": z_err,
        "lam_rel_error_final": float((lam_final - nd1).norm() / nd1.norm()),
        "eps_rel_error_final": float((final.eps[:, 0] - nd1).norm() / nd1.norm()),
        "grad_cosine_final": align["cosine"], "grad_rel_error_final": align["rel_error"],
    }
    return summary, arrays


# --------------------------------------------------------------------- Figure 5


def _gradient_curve(algo, net, x, y, steps: list[int], g_bp: list[torch.Tensor],
                    neg_delta: torch.Tensor | None = None) -> dict:
    """Run `algo` to its budget; at `steps`: whole/per-layer cosine and rel. error to g_BP,
    and (with `neg_delta`) the hidden-credit cosines cos(ε_l, −δ_l)."""
    want = set(steps)
    cos, rel, per_layer, rel_layer, credit, stacked = [], [], [], [], [], []

    def observe(step: int, s: InferenceState) -> None:
        if step not in want:
            return
        a = diagnostics.grad_alignment(_grad_list(energy.weight_grads(net, x, s.z, s.eps, s.e)),
                                       g_bp)
        cos.append(a["cosine"])
        rel.append(a["rel_error"])
        per_layer.append(a["cosine_per_layer"])
        rel_layer.append(a["rel_error_per_layer"])
        if neg_delta is not None:
            credit.append(diagnostics.credit_cosine(s.eps, neg_delta).double().cpu().numpy())
            stacked.append(diagnostics.credit_cosine_whole(s.eps, neg_delta))

    algo.infer(net, x, y, observer=observe)
    out = {"cosine": np.array(cos), "rel_error": np.array(rel),
           "cosine_per_layer": np.nan_to_num(np.array(per_layer, dtype=np.float64)),
           "rel_error_per_layer": np.array(rel_layer, dtype=np.float64)}
    if neg_delta is not None:
        out["credit_cosine"] = np.array(credit)
        out["stacked_credit_cosine"] = np.array(stacked)
    return out


def _bp_reference(cfg: dict, dataset):
    """The initialised net, its first batch, and BP's adjoints δ and weight gradients there."""
    dtype, device = DTYPES[cfg["train"]["dtype"]], _device(cfg)
    net = build.net(cfg, dataset.input_dim, dataset.num_classes, cfg["train"]["seed"], device,
                    dtype)
    x, y = build.first_batch(cfg, dataset, dtype, device)
    h, delta, e = energy.backprop(net, x, y)
    return net, x, y, delta, _grad_list(energy.weight_grads(net, x, h, -delta, e))


@register("alignment_curve", needs_data=True, steps_per_layer=32, points=40,
          pc_reference=True)
@torch.no_grad()
def alignment_curve(cfg: dict, dataset):
    """Figure 5: cos(g(t), g_BP) of the weight gradients vs inference step, at init.

    One batch (the seed's first), inference to T_max = `task.steps_per_layer` · L with the
    run's algorithm and `algo.state_lr`; at ≈ `task.points` log-spaced steps (and at
    `algo.budget`): the whole-network cosine and relative error ‖g − g_BP‖/‖g_BP‖, and per
    layer [S, L] (layer 0 = W_1, the input layer) the cosine — direction only: it jumps to
    ~1 as soon as any credit reaches the layer — and the relative error, which also sees
    how much credit arrived. With `task.pc_reference` a PC-ALM run also
    stores PC's curve (same net, batch, η_h) as `pc_*`. Summary: values at `algo.budget`
    and at T_max, and the predicted arrival t = L/√(α η_h) (SPEC §6).
    """
    _require_inference(cfg)
    spl = _param(cfg, "steps_per_layer", "int", 1)
    points = _param(cfg, "points", "int", 2)
    pc_ref = _param(cfg, "pc_reference", "bool")
    depth = cfg["model"]["depth"]
    t_max = spl * depth
    budget = min(cfg["algo"]["budget"], t_max)
    net, x, y, delta, g_bp = _bp_reference(cfg, dataset)
    steps = log_steps(t_max, points, (budget,))
    curve = _gradient_curve(_algorithm(cfg, budget=t_max), net, x, y, steps, g_bp)
    arrays = {"step": np.array(steps, dtype=np.int64), **curve}
    at = steps.index(budget)
    eta = cfg["algo"]["state_lr"]
    summary = {
        **_summary_common(eta, t_max),
        "cosine_at_budget": float(curve["cosine"][at]),
        "input_cosine_at_budget": float(curve["cosine_per_layer"][at, 0]),
        "input_rel_error_at_budget": float(curve["rel_error_per_layer"][at, 0]),
        "cosine_final": float(curve["cosine"][-1]),
        "input_cosine_final": float(curve["cosine_per_layer"][-1, 0]),
        "input_rel_error_final": float(curve["rel_error_per_layer"][-1, 0]),
        "rel_error_final": float(curve["rel_error"][-1]),
    }
    if cfg["algo"]["name"] == "pcalm":
        alpha = cfg["algo"]["alpha"]
        summary["front_step"] = depth / math.sqrt(alpha * eta) if alpha > 0 else math.inf
        if pc_ref:
            pc = _gradient_curve(_pc_reference(cfg, t_max), net, x, y, steps, g_bp)
            arrays.update({f"pc_{k}": v for k, v in pc.items()})
            summary["pc_cosine_at_budget"] = float(pc["cosine"][at])
            summary["pc_cosine_final"] = float(pc["cosine"][-1])
            summary["pc_input_rel_error_at_budget"] = float(pc["rel_error_per_layer"][at, 0])
    return summary, arrays


# ------------------------------------------------------------------- Figures 8, 9


def pc_equilibrium(net, x, y, state_lr: float, tol: float, max_steps: int) -> dict:
    """PC's inference dynamics z ← z − η_h ∂F/∂z from the forward pass, run until the relative
    change of z in one step, ‖Δz‖/‖z‖ (over the batch), falls below `tol`, or `max_steps`.

    A plain loop over SPEC §3's state gradient (pcalm.core.energy), not the hot path: it runs once
    per figure cell. Returns the state there (z, credit ε = r, output error e), the steps
    taken, the last relative change and whether it fell below `tol`. (With ReLU, z can keep
    chattering at the kinks, so a stated large `max_steps` is the working definition.)
    """
    bottom = net.bottom_prediction(x)
    z, _ = net.forward_states(x)
    change = math.inf
    for step in range(1, max_steps + 1):  # noqa: B007  (the count is returned)
        eps = energy.residuals(net, bottom, z)
        e = net.readout(z[..., -1, :, :]) - y
        dz = state_lr * energy.state_grad(net, z, eps, e)
        z = z - dz
        change = float(dz.norm() / z.norm())
        if change < tol:
            break
    eps = energy.residuals(net, bottom, z)
    e = net.readout(z[..., -1, :, :]) - y
    return {"z": z, "eps": eps, "e": e, "steps": step, "change": change,
            "converged": change < tol}


@register("credit_routes", needs_data=True, steps_per_layer=16, points=32,
          equilibrium_solver="newton", equilibrium_residual_tol=1e-6,
          equilibrium_max_newton=100, equilibrium_tol=1e-7, equilibrium_diffusion_times=2.0)
@torch.no_grad()
def credit_routes(cfg: dict, dataset):
    """Figures 8/9: BP-aligned hidden credit against the FLOPs spent on inference, at init.

    One batch (the seed's first), inference to T_max = `task.steps_per_layer` · L with the
    run's algorithm and `algo.state_lr`; at ≈ `task.points` log-spaced steps t (and at
    `algo.budget` and t = L/2, L, 2L, 4L, …), the hidden-credit alignment two ways:

    - `hidden_alignment`: the mean over hidden layers l of cos(ε_l(t), −δ_l) (over batch
      and units; per layer in `credit_cosine` [S, L−1]) — direction only, blind to how
      much credit reached a layer;
    - `stacked_credit_cosine`: all hidden layers' credit stacked into one vector against
      −δ stacked — it also weighs the layers' relative magnitudes;

    and the whole-network weight-gradient cosine to BP (`cosine`).
    `flops` = t · flops_per_step(N, L, B). Route 1 of the figure reads PC at
    t = `algo.budget` across widths; route 2 reads PC-ALM's curve over t at one width.

    A PC run also solves PC's equilibrium and stores the same three alignments there
    (`*_equilibrium`): route 1 at equilibrium, not a snapshot at T = 2L. With
    `task.equilibrium_solver=newton` (default) by pcalm.core.equilibrium's Newton–CG solver, until
    the relative stationarity residual is ≤ `task.equilibrium_residual_tol` or after
    `task.equilibrium_max_newton` Newton steps (summary: `equilibrium_residual`,
    `_iterations`, `_cg_iterations`, `_pinned`, `_converged`); with `plain`, by PC's own
    dynamics (`pc_equilibrium`) until the relative change of z per step is below
    `task.equilibrium_tol` or for the budget below; with `none`, not at all (the run records
    `equilibrium_solver: none` and no `*_equilibrium` values: what a CPU leaves to a GPU at
    N ≥ 512, where one Newton solve takes hours). Either way `flops_at_equilibrium` is what
    PC's own dynamics spend to get there: `task.equilibrium_diffusion_times` diffusive
    crossing times L²/(ρ η_h) (SPEC §6) of steps — ≈ 2 × 1,100 at L = 16, 2 × 17,000 at L = 64.
    """
    _require_inference(cfg)
    spl = _param(cfg, "steps_per_layer", "int", 1)
    points = _param(cfg, "points", "int", 2)
    width, depth = cfg["model"]["width"], cfg["model"]["depth"]
    t_max = spl * depth
    budget = min(cfg["algo"]["budget"], t_max)
    net, x, y, delta, g_bp = _bp_reference(cfg, dataset)
    multiples = tuple(depth * 2**k // 2 for k in range(int(math.log2(spl)) + 2))  # L/2, L, …
    steps = log_steps(t_max, points, (budget, *multiples))
    curve = _gradient_curve(_algorithm(cfg, budget=t_max), net, x, y, steps, g_bp,
                            neg_delta=-delta)
    per_step = flops_per_step(width, depth, x.shape[0], dataset.num_classes)
    hidden = curve["credit_cosine"].mean(axis=1)
    at = steps.index(budget)
    arrays = {"step": np.array(steps, dtype=np.int64),
              "flops": np.array(steps, dtype=np.float64) * per_step,
              "hidden_alignment": hidden, "credit_cosine": curve["credit_cosine"],
              "stacked_credit_cosine": curve["stacked_credit_cosine"],
              "cosine": curve["cosine"], "cosine_per_layer": curve["cosine_per_layer"]}
    summary = {
        **_summary_common(cfg["algo"]["state_lr"], t_max),
        "flops_per_step": per_step, "flops_at_budget": per_step * budget,
        "hidden_alignment_at_budget": float(hidden[at]),
        "stacked_credit_cosine_at_budget": float(curve["stacked_credit_cosine"][at]),
        "cosine_at_budget": float(curve["cosine"][at]),
        "hidden_alignment_final": float(hidden[-1]), "cosine_final": float(curve["cosine"][-1]),
    }
    if cfg["algo"]["name"] == "pc":
        summary.update(_equilibrium_alignment(cfg, net, x, y, delta, g_bp, per_step))
    return summary, arrays


def _equilibrium_alignment(cfg, net, x, y, delta, g_bp, per_step: float) -> dict:
    solver = _param(cfg, "equilibrium_solver", "choice:newton|plain|none")
    if solver == "none":
        return {"equilibrium_solver": solver}
    times = _param(cfg, "equilibrium_diffusion_times", "number", 0.0)
    eta, depth = cfg["algo"]["state_lr"], cfg["model"]["depth"]
    plain_steps = max(1, math.ceil(times * depth**2 / eta))  # PC: ρ = 1
    if solver == "newton":
        tol = _param(cfg, "equilibrium_residual_tol", "number", 0.0)
        max_newton = _param(cfg, "equilibrium_max_newton", "int", 1)
        if tol <= 0:
            raise ConfigError(f"bad value task.equilibrium_residual_tol={tol!r}: "
                              "allowed: a number > 0")
        solved = equilibrium.solve_pc(net, x, y, tol=tol, max_newton=max_newton)
        eq = {"z": solved.z, "eps": solved.eps, "e": solved.e}
        record = {**solved.record(), "equilibrium_steps": plain_steps}
    else:
        tol = _param(cfg, "equilibrium_tol", "number", 0.0)
        eq = pc_equilibrium(net, x, y, eta, tol, plain_steps)
        record = {"equilibrium_steps": eq["steps"], "equilibrium_converged": eq["converged"],
                  "equilibrium_change": eq["change"]}
    grads = _grad_list(energy.weight_grads(net, x, eq["z"], eq["eps"], eq["e"]))
    return {
        **record, "equilibrium_solver": solver,
        "flops_at_equilibrium": per_step * record["equilibrium_steps"],
        "hidden_alignment_equilibrium": float(diagnostics.credit_cosine(eq["eps"], -delta).mean()),
        "stacked_credit_cosine_equilibrium": diagnostics.credit_cosine_whole(eq["eps"], -delta),
        "cosine_equilibrium": diagnostics.grad_alignment(grads, g_bp)["cosine"],
    }
