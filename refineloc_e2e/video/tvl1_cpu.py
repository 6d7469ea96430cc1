"""The torch TV-L1's CPU kernels through plain OpenCV (no contrib): ``cv2.remap`` and ``cv2.medianBlur``,
the functions OpenCV's own TV-L1 calls for its warping and its median filter.

``video.tvl1_torch.remap_cubic`` and ``median_blur`` dispatch here for CPU tensors: at 256x602 with 1
thread they were measured 10-20x faster than the gathers / min-max network that the other devices run
(the median bitwise equal, the warping within rounding; ``tests/video/test_tvl1_torch.py``). Both loop over the
pairs (and channels) of a batch, since OpenCV works on one 2-D image at a time.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import cv2
except ImportError as e:  # the CUDA paths do not need it; a CPU kernel names the fix (cv2_module)
    cv2, _CV2_ERROR = None, e

Tensor = torch.Tensor


def cv2_module():
    """``cv2``, plain OpenCV being enough; a missing one is named with its fix."""
    if cv2 is None:
        raise ImportError(f"the torch TV-L1 backend on the CPU uses cv2.remap and cv2.medianBlur; cannot import "
                          f"cv2 ({_CV2_ERROR}): pip install opencv-python-headless (or the contrib package)")
    return cv2


def remap_cubic_cv2(img: Tensor, u1: Tensor, u2: Tensor) -> Tensor:
    """``img[n, C, H, W]`` (C <= 4, CPU) sampled at ``(x + u1, y + u2)`` with ``cv2.remap(INTER_CUBIC,
    BORDER_CONSTANT 0)`` -> ``[n, C, H, W]`` (a view whose channels are each contiguous ``[n, H, W]``)."""
    cv = cv2_module()
    n, c, h, w = img.shape
    hwc = img.permute(0, 2, 3, 1).contiguous().numpy()  # [n, H, W, C]
    gx = np.arange(w, dtype=np.float32)
    gy = np.arange(h, dtype=np.float32)[:, None]
    out = np.empty((c, n, h, w), np.float32)
    for i in range(n):
        mx = gx + u1[i].numpy()  # [H, W] source x, float32 like the gathers' arithmetic
        my = gy + u2[i].numpy()
        r = cv.remap(hwc[i], mx, my, cv.INTER_CUBIC, borderMode=cv.BORDER_CONSTANT, borderValue=0)
        out[:, i] = r.reshape(h, w, c).transpose(2, 0, 1)  # [C, H, W]
    return torch.from_numpy(out).permute(1, 0, 2, 3)  # [n, C, H, W]


def median_blur_cv2(x: Tensor, k: int) -> Tensor:
    """``cv2.medianBlur(plane, k)`` for every ``[H, W]`` plane of float ``x[n, C, H, W]`` (CPU, ``k`` 3 or 5:
    the float sizes OpenCV has), replicated border -> a new ``[n, C, H, W]`` tensor."""
    cv = cv2_module()
    planes = x.contiguous().reshape(-1, *x.shape[-2:]).numpy()  # [n * C, H, W]
    out = np.empty_like(planes)
    for i, plane in enumerate(planes):
        out[i] = cv.medianBlur(plane, k)
    return torch.from_numpy(out).reshape(x.shape)
