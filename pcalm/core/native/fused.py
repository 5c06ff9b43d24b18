"""The fused CPU inference loop (`loop.c`): built once per machine with the C compiler, called
through ctypes on a Workspace's own buffers.

Why: on a CPU, a narrow net's inference step is a dozen small tensor operations, each paying
a few µs of dispatch on a few thousand numbers (N = 8, L = 32: ~0.5 MFLOP per step). `loop.c`
runs the forward pass's layer chain and all T·k steps of one call in C, three passes over the
state per step, its matmuls on the vector unit. It computes `Workspace.forward` and
`Workspace.loop_eager`'s formulas in the same layer order, to float rounding (the sums of the
small matmuls run in index order, where MKL blocks them: ~1e-7 relative in float32). Linear
and ReLU nets only (`ACT_CODES`; loop.c says why not tanh).

The library is compiled on first use (`cc -O3 -march=native -ffp-contract=off`, about a
second) into ~/.cache/pcalm (PCALM_CACHE), named by the hash of the source, the flags, the
compiler and the CPU (model and instruction sets), so that an edit, another compiler or another
kind of node builds its own. No compiler, or a failed build: `library()` is None, `failure()`
says why, and the eager loop runs (pcalm.core.paths).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("loop.c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC")
ACT_CODES = {"identity": 0, "relu": 1}  # tanh runs eagerly (loop.c says why)
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("PCALM_CACHE", Path.home() / ".cache" / "pcalm"))


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_signature() -> bytes:
    """What -march=native compiled for: the CPU's model and instruction-set flags. A library
    built on one node of a cluster must not be loaded on another that lacks its instructions
    (SIGILL), even when both share the home folder."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        info = []
    keep = [line for line in info if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep)).encode() + platform.machine().encode()


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError as err:
        raise RuntimeError(f"cannot run the C compiler {cc}: {err}") from None
    tag = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + version.encode()
                         + _cpu_signature())
    target = cache_dir() / f"pcalm-loop-{tag.hexdigest()[:16]}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # built beside its final name, then renamed: a concurrent job never loads half a file
        fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, "-o", partial, str(SOURCE)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed: {' '.join(done.stderr.split())[:300]}")
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    library = ctypes.CDLL(str(target))
    for name in ("pcalm_loop_f32", "pcalm_loop_f64", "pcalm_forward_f32", "pcalm_forward_f64"):
        getattr(library, name).restype = None
    return library


def library() -> ctypes.CDLL | None:
    """The built library, or None (why: `failure()`); built at the first call."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _build()
            except Exception as err:  # no compiler, a failed build, an unloadable file
                _failure = f"{type(err).__name__}: {err}"
        return _library


def failure() -> str | None:
    return _failure


def takes(ws) -> bool:
    """Whether the fused loop runs this Workspace: a CPU, float32/64, PC or PC-ALM, a linear
    or ReLU net."""
    return (ws.z.device.type == "cpu" and ws.z.dtype in (torch.float32, torch.float64)
            and ws.plan.kind in ("pc", "pcalm") and ws.act in ACT_CODES)


def _per_model(ws, value, fallback: float) -> torch.Tensor:
    values = value if isinstance(value, tuple) else (fallback if value is None else value,) * ws.m
    return torch.tensor([float(v) for v in values], dtype=ws.z.dtype)


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    assert t.is_contiguous(), "the fused loop needs contiguous buffers"
    return ctypes.c_void_p(t.data_ptr())


def _loaded() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(f"the fused loop is not available: {_failure}")
    return lib


def forward_native(ws) -> None:
    """`ws.forward(None)` for PC and PC-ALM, its layer chain in C: z, P, D, e, ℓ, and
    ε = λ = 0 (the residuals of a forward pass are exactly zero)."""
    lib, f64 = _loaded(), ws.z.dtype == torch.float64
    scalar = ctypes.c_double if f64 else ctypes.c_float
    ws.forward_input()
    # A shared batch is an expanded view (stride 0 over the models): copied once here, and
    # the loop and the eager readout read the copy.
    ws.y3 = ws.y3.contiguous()
    dummy = ws.z  # P, D of the identity, λ of PC: unused
    tensors = (ws.z, ws.P if ws.D is not None else dummy, ws.D if ws.D is not None else dummy,
               ws.E, ws.lam if ws.lam is not None else dummy, ws.F[0], ws.WT, ws.WoT, ws.e,
               ws.y3, ws.Q)
    S, (M, B, N), C = ws.L - 1, ws.z.shape[1:], ws.e.shape[-1]
    fn = lib.pcalm_forward_f64 if f64 else lib.pcalm_forward_f32
    fn(*(ctypes.c_int(v) for v in (S, M, B, N, C, ACT_CODES[ws.act], ws.lam is not None)),
       *(_ptr(t) for t in tensors), scalar(ws.a_h), scalar(ws.a_out))
    ws.set_loss()


def loop_native(ws) -> None:
    """`ws.loop_eager(None)`, in C, after `forward_native` (z, P, D, ε, e, a contiguous y)."""
    lib = _loaded()
    p, f64 = ws.plan, ws.z.dtype == torch.float64
    scalar = ctypes.c_double if f64 else ctypes.c_float
    eta = _per_model(ws, p.state_lr, 0.0)
    rho = _per_model(ws, p.rho, 1.0)
    alpha = _per_model(ws, p.alpha if ws.lam is not None else None, 0.0)  # PC: unused
    dummy = ws.z  # P, D of the identity (unused), λ of PC (unused)
    tensors = (ws.z, ws.P if ws.D is not None else dummy, ws.D if ws.D is not None else dummy,
               ws.E, ws.lam if ws.lam is not None else dummy, ws.F[0], ws.W, ws.WT,
               ws.Wo_neg, ws.WoT, ws.e, ws.y3, ws.Q, eta, rho, alpha)
    S, (M, B, N), C = ws.L - 1, ws.z.shape[1:], ws.e.shape[-1]
    fn = lib.pcalm_loop_f64 if f64 else lib.pcalm_loop_f32
    fn(*(ctypes.c_int(v) for v in (S, M, B, N, C, ACT_CODES[ws.act], ws.lam is not None)),
       *(_ptr(t) for t in tensors),
       scalar(ws.a_h), scalar(ws.a_out),
       ctypes.c_int(p.budget), ctypes.c_int(p.inner_steps), ctypes.c_int(bool(p.post_dual)))
