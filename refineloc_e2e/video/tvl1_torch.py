"""TV-L1 optical flow in torch, batched over frame pairs: a port of OpenCV's ``DualTVL1OpticalFlow``.

The algorithm is Zach, Pock and Bischof (2007) in the form of Sanchez Perez et al. (IPOL 2013), with the
discretisation and control flow of OpenCV contrib's ``modules/optflow/src/tvl1flow.cpp`` (CPU path), so a
``FlowConfig`` means the same thing here as in ``refineloc_e2e.video.flow.make_tvl1``:

* **Input scale.** uint8 frames are used as 0..255 floats; float frames are taken to be in [0, 1] and
  multiplied by 255 (OpenCV's ``convertTo`` rule).
* **Pyramid.** Level ``s`` is level ``s - 1`` resized by ``scale_step`` with bilinear interpolation
  (half-pixel centres, replicated border, size ``round(side * scale_step)``); building stops early at a
  level whose side would be < 16 px. The coarsest level starts from zero flow (or, with
  ``use_initial_flow``, from the initial flow resized the same way and multiplied by ``scale_step`` per
  level). Between levels the flow is resized bilinearly to the finer size and multiplied by
  ``1 / scale_step``; ``u3`` (the ``gamma`` illumination term) is resized but not multiplied.
* **Warping.** Per warp, the second frame and its centred-difference gradient (replicated border:
  one-sided halved differences at the edges) are sampled at ``x + u`` with bicubic interpolation (a =
  -0.75) at the exact float position, taps outside the image read 0 (``remap`` with ``INTER_CUBIC`` and
  a constant border of 0, as OpenCV 5 computes it; OpenCV 4 rounded positions to 1/32 px).
* **Iterations.** The dual variables are reset to 0 at each scale. Per warp: up to ``outer_iterations``
  rounds, each starting with a ``median_filtering`` x ``median_filtering`` median filter of (u1, u2)
  (replicated border, skipped when 1), then up to ``inner_iterations`` steps of thresholding (v), primal
  update ``u = v + theta * div p`` (backward differences, zero outside the top/left edge) and dual update
  with forward differences (0 at the last row/column). A warp ends as soon as one step moved the flow by a
  summed squared update ``<= epsilon**2 * H * W`` at that level.

**Batches and early exit.** Pairs in a batch are independent. With the ``epsilon`` rule (default), each
pair stops at the step where it meets the tolerance, exactly as it would alone: after every step the
pairs that converged are written back to the full batch and dropped from the working set, so later steps
run on the remaining pairs only (no compute is spent on frozen pairs); a warp ends when the working set
is empty or the iteration cap is hit. Each step then needs one device sync (a ``.any()`` on the
per-pair test). ``fixed_iterations=True`` skips the test and runs ``outer_iterations *
inner_iterations`` steps per warp for every pair: no syncs and static shapes (meant for a GPU; not yet measured there), but more
steps than the tolerance needs and a result that is no longer OpenCV's. Measured with
``benchmarks/speed/flow_backends.py --pairs 3 --fixed`` on bikes.mp4 (256x340, EPE against OpenCV over the 224
crop): epsilon mode mean 0.00 / median 0.00 px (``fast``), 0.016 / 0.005 px (``paper``); fixed mode 0.28 /
0.07 px (``fast``) and 0.45 / 0.02 px (``paper``), outside issue 9's bounds (mean <= 0.2, median <= 0.05),
and on the CPU 8-13x slower than the epsilon mode. So the epsilon mode is the default everywhere.

**Known differences from OpenCV** (rounding-level unless said; they are why the endpoint error against
OpenCV is small but not zero): sums are reduced by torch (pairwise) instead of one float accumulator, so a
step's error may differ in the last bits and, rarely, a pair stops one step earlier or later; some sums
are associated differently to save memory passes (the residual, the divergence's first column, the
primal step ``u + (coef * grad + theta * div p)``, whose bracket is also the update the epsilon test
sums); the dual step's norm is a float ``hypot`` instead of a double one; the thresholding is
written as ``clamp(-rho / |grad|^2, -l_t, l_t)``, which equals OpenCV's three cases except where
``0 < |grad|^2 <= FLT_EPSILON`` and ``|rho| <= l_t * |grad|^2`` (a change of at most ``l_t * 3.5e-4`` px
per step there); OpenCV turns a 2x linear downscale into an area average (same value up to rounding);
OpenCV's object remembers a pyramid cut short by a small frame for later calls (a bug not copied).
OpenCV accepts only 3 or 5 as a float median size; here any odd size works.

**CPU speed.** On the CPU the warping and the median filter are ``cv2.remap`` and ``cv2.medianBlur`` (plain
OpenCV, the same functions OpenCV's TV-L1 calls; the median is bitwise the network's), and each step
updates its state in place in reused buffers. On bikes.mp4 (256x602, ``fast``, 1 thread) that took a pair
from 1.16 s to 0.27 s in one run (load ~5), against OpenCV's 0.5-0.7 s per pair at 1 thread.
One process is best kept at 1 thread (``extract`` runs several processes instead): with 2 threads on a
busy 2-core machine a pair took 2-7 s.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from refineloc_e2e.errors import ConfigError
from refineloc_e2e.video.tvl1_cpu import median_blur_cv2, remap_cubic_cv2

_CUBIC_A = -0.75  # OpenCV's bicubic kernel parameter
_MIN_LEVEL_SIDE = 16  # a pyramid level with a side below this is not built
Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------
# building blocks (each checked against the matching cv2 function in tests/video/test_tvl1_torch.py)

def _linear_taps(n_in: int, n_out: int, scale: float, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and weights of a 1-D bilinear resize, half-pixel centres, replicated border."""
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)  # source coordinate, float like cv2
    i0 = np.floor(f).astype(np.int64)
    f = (f - i0).astype(np.float32)
    f[i0 < 0], i0[i0 < 0] = 0, 0
    last = i0 >= n_in - 1
    f[last], i0[last] = 0, n_in - 1
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return t(i0), t(i1), t(1 - f), t(f)


def resize_linear(x: Tensor, out_hw: tuple[int, int], scale_yx: tuple[float, float]) -> Tensor:
    """``cv2.resize(..., INTER_LINEAR)`` of float ``x[..., H, W]`` to ``out_hw``; ``scale_yx``: source px per
    output px (``1 / fx`` for a resize by a factor, ``H_in / H_out`` for a resize to a size)."""
    (h, w), (oh, ow) = x.shape[-2:], out_hw
    xi0, xi1, xw0, xw1 = _linear_taps(w, ow, scale_yx[1], x.device)
    yi0, yi1, yw0, yw1 = _linear_taps(h, oh, scale_yx[0], x.device)
    rows = x.index_select(-1, xi0) * xw0 + x.index_select(-1, xi1) * xw1  # [..., H, ow], horizontal first
    return rows.index_select(-2, yi0) * yw0[:, None] + rows.index_select(-2, yi1) * yw1[:, None]  # [..., oh, ow]


def _level_sizes(h: int, w: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Pyramid level sizes, finest first; stops at a level with a side < 16 (OpenCV's rule)."""
    sizes = [(h, w)]
    for _ in range(1, nscales):
        ph, pw = sizes[-1]
        nh, nw = round(ph * scale_step), round(pw * scale_step)  # half-to-even, like cvRound
        if nh < _MIN_LEVEL_SIDE or nw < _MIN_LEVEL_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def _cubic_weights(f: Tensor) -> list[Tensor]:
    """Bicubic (a = -0.75) weights of the taps at -1, 0, 1, 2 for fractional positions ``f`` in [0, 1)."""
    a = _CUBIC_A
    g = f + 1
    h = 1 - f
    w0 = ((a * g - 5 * a) * g + 8 * a) * g - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * h - (a + 3)) * h * h + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def remap_cubic(img: Tensor, u1: Tensor, u2: Tensor) -> Tensor:
    """``img[n, C, H, W]`` sampled at ``(x + u1, y + u2)`` like ``cv2.remap(INTER_CUBIC, BORDER_CONSTANT 0)``
    (OpenCV 5: exact float coordinates, no 1/32 px table): each of the 4x4 taps outside the image reads 0.

    On the CPU (C <= 4) this is ``cv2.remap`` itself, pair by pair (measured 10-20x faster than the gathers
    below at 256x602, 1 thread); elsewhere the 16 gathers of :func:`remap_cubic_torch`.
    """
    if img.device.type == "cpu" and img.shape[1] <= 4:
        return remap_cubic_cv2(img, u1, u2)
    return remap_cubic_torch(img, u1, u2)


def remap_cubic_torch(img: Tensor, u1: Tensor, u2: Tensor) -> Tensor:
    """:func:`remap_cubic` as 16 gathers over the zero-padded image (any device)."""
    n, c, h, w = img.shape
    pad = 4  # with the tap origin clamped to [-4, W], every tap lands in the zero-padded image
    padded = F.pad(img, (pad, pad, pad, pad)).reshape(n, c, -1)  # [n, C, (H+8)*(W+8)]
    sx = torch.arange(w, device=img.device, dtype=torch.float32) + u1  # [n, H, W] source x
    sy = torch.arange(h, device=img.device, dtype=torch.float32)[:, None] + u2
    fx, fy = sx.floor(), sy.floor()
    wx, wy = _cubic_weights(sx - fx), _cubic_weights(sy - fy)  # 4 x [n, H, W]
    big = float(max(h, w) + 2 * pad)  # keep the float -> int cast in range for wild flow
    x0 = (fx.clamp(-big, big).to(torch.int64) - 1).clamp_(-pad, w) + pad  # first tap column, padded image
    y0 = (fy.clamp(-big, big).to(torch.int64) - 1).clamp_(-pad, h) + pad
    row_len = w + 2 * pad
    out = None
    for i in range(4):
        base = (y0 + i) * row_len + x0  # [n, H, W]
        for j in range(4):
            idx = (base + j).reshape(n, 1, -1).expand(n, c, -1)  # [n, C, H*W]
            tap = padded.gather(2, idx).reshape(n, c, h, w) * (wy[i] * wx[j])[:, None]
            out = tap if out is None else out + tap
    return out  # [n, C, H, W]


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs (low index gets the min) of Batcher's odd-even merge sort for ``n = 2**k``."""
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def _median_network(m: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """A selection network for the median of ``m`` values: Batcher's sorting network padded to a power of
    two (the padding values are +inf and never move, so their comparators drop out), then pruned backwards
    to the comparators the middle output depends on; each keeps a flag per output (min, max) that is read."""
    n = 1 << (m - 1).bit_length()
    net = [(a, b) for a, b in _batcher_pairs(n) if b < m]
    need, kept = {m // 2}, []
    for a, b in reversed(net):
        if a in need or b in need:
            kept.append((a, b, a in need, b in need))
            need |= {a, b}
    return tuple(reversed(kept))


def median_blur(x: Tensor, k: int) -> Tensor:
    """``cv2.medianBlur(x, k)`` per channel of float ``x[n, C, H, W]`` (replicated border), odd ``k``.

    Exact (a median is a selection, no arithmetic), so both paths give the same bits: on the CPU with
    ``k`` 3 or 5 (the sizes OpenCV has for float) ``cv2.medianBlur`` itself (measured ~15x faster at 256x602,
    1 thread), else the min/max network of :func:`median_blur_torch`.
    """
    if x.device.type == "cpu" and k in (3, 5):
        return median_blur_cv2(x, k)
    return median_blur_torch(x, k)


def median_blur_torch(x: Tensor, k: int) -> Tensor:
    """:func:`median_blur` as a min/max selection network over the k*k shifted views (any device, any odd k)."""
    r = k // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), mode="replicate")  # [n, C, H+2r, W+2r]
    v = [padded[..., dy:dy + h, dx:dx + w].contiguous() for dy in range(k) for dx in range(k)]  # k*k x [n, C, H, W]
    spare = torch.empty_like(v[0])
    for a, b, want_min, want_max in _median_network(k * k):
        if want_min and want_max:
            torch.minimum(v[a], v[b], out=spare)
            torch.maximum(v[a], v[b], out=v[b])
            v[a], spare = spare, v[a]
        elif want_min:
            torch.minimum(v[a], v[b], out=v[a])
        else:
            torch.maximum(v[a], v[b], out=v[b])
    return v[(k * k) // 2]


def centered_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Centred differences ``0.5 * (x[+1] - x[-1])`` of ``x[n, H, W]``, replicated border -> (dx, dy)."""
    px = torch.cat([x[..., :1], x, x[..., -1:]], -1)  # [n, H, W+2]
    py = torch.cat([x[..., :1, :], x, x[..., -1:, :]], -2)  # [n, H+2, W]
    return 0.5 * (px[..., 2:] - px[..., :-2]), 0.5 * (py[..., 2:, :] - py[..., :-2, :])


def forward_gradient(u: Tensor, out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Forward differences of ``u[n, H, W]``, 0 in the last column (dx) and last row (dy); ``out``: two
    tensors of ``u``'s shape to write them into."""
    dx, dy = out if out is not None else (torch.empty_like(u), torch.empty_like(u))
    torch.sub(u[..., 1:], u[..., :-1], out=dx[..., :-1])
    dx[..., -1] = 0
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=dy[..., :-1, :])
    dy[..., -1, :] = 0
    return dx, dy


def divergence(v1: Tensor, v2: Tensor, out: Tensor | None = None) -> Tensor:
    """Backward-difference divergence of ``(v1, v2)[n, H, W]``, values outside the top/left edge = 0."""
    div = torch.add(v1, v2, out=out) if out is not None else v1 + v2
    div[..., 1:] -= v1[..., :-1]
    div[..., 1:, :] -= v2[..., :-1, :]
    return div


# ---------------------------------------------------------------------------------------------------
# the solver

def _step(state: list[Tensor], const: list[Tensor], cfg: Any, want_error: bool,
          scratch: list[Tensor]) -> tuple[list[Tensor], Tensor | None]:
    """One inner iteration (thresholding, primal, dual) on ``state = [u1, u2, p11, p12, p21, p22(, u3, p31,
    p32)]``, each ``[n, H, W]``, updated in place; returns the state and, if asked, the summed squared update
    ``[n]``. ``scratch``: 5 tensors of the state's shape, overwritten (no allocation per step: at 256x602 a
    fresh tensor per operation cost more in page faults than the arithmetic, measured)."""
    l_t = float(cfg.lambda_ * cfg.theta)
    taut = float(cfg.tau / cfg.theta)
    theta, gamma = float(cfg.theta), float(cfg.gamma)
    I1wx, I1wy, rho_c, neg_grad = const
    u = [state[0], state[1]] + ([state[6]] if gamma else [])
    p = state[2:6] + (state[7:] if gamma else [])
    coef, delta, tmp, ng, gy = scratch
    torch.addcmul(rho_c, I1wx, u[0], out=coef)
    coef.addcmul_(I1wy, u[1])  # [n, H, W]: the linearised residual at u
    if gamma:
        coef.add_(u[2], alpha=gamma)
    # thresholding: v = u + coef * grad I1w, coef = clamp(-rho / |grad I1w|^2, -l_t, l_t)
    coef.div_(neg_grad).clamp_(-l_t, l_t)  # [n, H, W]
    slopes = [I1wx, I1wy] + ([None] if gamma else [])
    err = None
    for c, (uc, slope) in enumerate(zip(u, slopes)):
        # u <- u + delta, delta = coef * slope + theta * div p (v - u, then the primal step)
        if slope is None:
            torch.mul(coef, gamma, out=delta)
        else:
            torch.mul(coef, slope, out=delta)
        delta.add_(divergence(p[2 * c], p[2 * c + 1], out=tmp), alpha=theta)
        if want_error:
            d = delta.reshape(len(delta), 1, -1)  # [n, 1, H*W]
            e = torch.bmm(d, d.transpose(1, 2)).reshape(-1)  # [n]: sum of squares
            err = e if err is None else err + e
        uc.add_(delta)
    for c, uc in enumerate(u):
        ux, uy = forward_gradient(uc, out=(tmp, gy))
        torch.hypot(ux, uy, out=ng).mul_(taut).add_(1.0)  # 1 + taut * |grad u|
        p[2 * c].add_(ux, alpha=taut).div_(ng)
        p[2 * c + 1].add_(uy, alpha=taut).div_(ng)
    return state, err


def _median_uv(state: list[Tensor], k: int) -> list[Tensor]:
    if k <= 1:
        return state
    uv = median_blur(torch.stack(state[:2], 1), k)  # [n, 2, H, W]
    return [uv[:, 0], uv[:, 1]] + state[2:]


def _iterate_warp(state: list[Tensor], const: list[Tensor], cfg: Any, thr: float, fixed: bool) -> list[Tensor]:
    """All outer/inner iterations of one warp for a batch, with per-pair early exit (see module doc)."""
    full: list[Tensor] | None = None  # the batch's state once some pairs stopped; None: none stopped
    idx: Tensor | None = None  # batch indices of the pairs still iterating
    scratch: list[Tensor] = []
    for _ in range(cfg.outer_iterations):
        state = _median_uv(state, cfg.median_filtering)
        for _ in range(cfg.inner_iterations):
            if not scratch or scratch[0].shape != state[0].shape:
                scratch = [torch.empty_like(state[0]) for _ in range(5)]
            state, err = _step(state, const, cfg, want_error=not fixed, scratch=scratch)
            if fixed:
                continue
            done = err <= thr  # [n]
            if not bool(done.any()):
                continue
            if full is None:
                full, idx = list(state), torch.arange(len(done), device=done.device)
            else:
                for f, s in zip(full, state):
                    f.index_copy_(0, idx[done], s[done])
            keep = ~done
            if not bool(keep.any()):
                return full
            idx = idx[keep]
            state = [s[keep] for s in state]
            const = [c[keep] for c in const]
    if full is None:
        return state
    for f, s in zip(full, state):
        f.index_copy_(0, idx, s)
    return full


def _solve_scale(I0: Tensor, I1: Tensor, u: list[Tensor], cfg: Any, fixed: bool) -> list[Tensor]:
    """TV-L1 at one pyramid level: ``I0, I1[n, H, W]``, flow ``u = [u1, u2(, u3)]`` -> refined ``u``."""
    h, w = I0.shape[-2:]
    thr = float(np.float32(cfg.epsilon * cfg.epsilon * h * w))  # on the summed squared update
    stacked = torch.stack([I1, *centered_gradient(I1)], 1)  # [n, 3, H, W]: I1, dI1/dx, dI1/dy
    p = [torch.zeros_like(I0) for _ in range(6 if cfg.gamma else 4)]
    for _ in range(cfg.warps):
        I1w, I1wx, I1wy = remap_cubic(stacked, u[0], u[1]).unbind(1)  # each [n, H, W]
        grad = I1wx * I1wx + I1wy * I1wy  # |grad I1(x + u0)|^2
        rho_c = I1w - I1wx * u[0] - I1wy * u[1] - I0
        const = [I1wx, I1wy, rho_c, torch.where(grad > 0, -grad, -1.0)]
        state = u[:2] + p[:4] + (u[2:] + p[4:] if cfg.gamma else [])
        state = _iterate_warp(state, const, cfg, thr, fixed)
        u = state[:2] + (state[6:7] if cfg.gamma else [])
        p = state[2:6] + (state[7:] if cfg.gamma else [])
    return u


def _as_frames(x: Any, name: str, device) -> Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 3:
        raise ValueError(f"tvl1_flow: {name} must be grayscale frames [N, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(device=device, dtype=torch.float32)
    if not t.is_floating_point():
        raise ValueError(f"tvl1_flow: {name} must be uint8 (0..255) or float (0..1), got {t.dtype}")
    return t.to(device=device, dtype=torch.float32) * 255.0  # OpenCV's rule for float frames


def _check_cfg(cfg: Any) -> None:
    if hasattr(cfg, "validate"):
        cfg.validate()
    k = cfg.median_filtering
    if k > 1 and k % 2 == 0:
        raise ConfigError(f"config key 'median_filtering': must be odd (or 1 = off), got {k!r}")


def tvl1_flow(prev: Any, next: Any, cfg: Any, *, init_flow: Any = None, fixed_iterations: bool = False,
              device: str | torch.device | None = None) -> Tensor:
    """TV-L1 flow ``prev[i] -> next[i]`` for a batch: float32 ``Tensor[N, H, W, 2]`` in raw pixels.

    ``prev``, ``next``: grayscale ``[N, H, W]``, uint8 or float in [0, 1], numpy or torch. Channel 0 = x
    (positive = right), 1 = y (positive = down), as ``flow.compute_flow``. ``cfg``: any object with
    ``FlowConfig``'s TV-L1 fields. ``init_flow`` (``[N, H, W, 2]``, pixels) is used only with
    ``cfg.use_initial_flow`` (zeros if not given). ``device``: default the input's (CPU for numpy).
    """
    _check_cfg(cfg)
    if device is None:
        device = prev.device if isinstance(prev, torch.Tensor) else "cpu"
    I0, I1 = _as_frames(prev, "prev", device), _as_frames(next, "next", device)
    if I0.shape != I1.shape:
        raise ValueError(f"tvl1_flow: prev and next differ in shape: {tuple(I0.shape)} vs {tuple(I1.shape)}")
    n, h, w = I0.shape
    if h < 3 or w < 3:
        raise ValueError(f"tvl1_flow: frames must be at least 3x3, got {h}x{w}")
    sizes = _level_sizes(h, w, cfg.nscales, cfg.scale_step)
    s = float(cfg.scale_step)
    I0s, I1s = [I0], [I1]
    for size in sizes[1:]:
        I0s.append(resize_linear(I0s[-1], size, (1 / s, 1 / s)))
        I1s.append(resize_linear(I1s[-1], size, (1 / s, 1 / s)))
    top = len(sizes) - 1
    if cfg.use_initial_flow:
        f = (torch.zeros(n, h, w, 2) if init_flow is None
             else torch.as_tensor(np.asarray(init_flow) if not isinstance(init_flow, torch.Tensor) else init_flow))
        if tuple(f.shape) != (n, h, w, 2):
            raise ValueError(f"tvl1_flow: init_flow must be [N, H, W, 2] = {(n, h, w, 2)}, got {tuple(f.shape)}")
        uv = f.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)  # [n, 2, H, W]
        for size in sizes[1:]:
            uv = resize_linear(uv, size, (1 / s, 1 / s)) * s
        u = [uv[:, 0].contiguous(), uv[:, 1].contiguous()]
    else:
        u = [torch.zeros(n, *sizes[top], device=device) for _ in range(2)]
    if cfg.gamma:
        u.append(torch.zeros(n, *sizes[top], device=device))
    for level in range(top, -1, -1):
        u = _solve_scale(I0s[level], I1s[level], u, cfg, fixed_iterations)
        if level == 0:
            break
        (ch, cw), (fh, fw) = sizes[level], sizes[level - 1]
        up = resize_linear(torch.stack(u, 1), (fh, fw), (1 / (fh / ch), 1 / (fw / cw)))  # [n, 2 or 3, fh, fw]
        u = [up[:, 0] * (1 / s), up[:, 1] * (1 / s)] + ([up[:, 2]] if cfg.gamma else [])
    return torch.stack(u[:2], -1)  # [N, H, W, 2]


def compute_flow_torch(prev_gray: np.ndarray, next_gray: np.ndarray, cfg: Any) -> np.ndarray:
    """One pair, the drop-in of ``flow.compute_flow``: uint8 ``[H, W]`` twice -> float32 ``[H, W, 2]`` (CPU)."""
    if prev_gray.ndim != 2 or prev_gray.shape != next_gray.shape:
        raise ValueError(f"compute_flow_torch expects two [H, W] grayscale frames of one size, got "
                         f"{prev_gray.shape} and {next_gray.shape}")
    return tvl1_flow(prev_gray[None], next_gray[None], cfg)[0].cpu().numpy()  # [H, W, 2]
