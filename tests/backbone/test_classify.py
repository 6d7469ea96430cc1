"""classify: frame chunking, argument checks, and (marked real) the DeepMind CricketShot sample."""

import av
import numpy as np
import pytest
import torch

from refineloc_e2e.backbone.weights import build_i3d
from refineloc_e2e.backbone.classify import classify, clip_logits, kinetics400_labels
from refineloc_e2e.errors import ConfigError
from support import DATA, SAMPLES

GIF = SAMPLES / "v_CricketShot_g04_c01_rgb.gif"


class _MeanModel(torch.nn.Module):
    """Stand-in for I3D: logits[k] = mean of the input over everything, times (k + 1)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.arange(1.0, 4.0))

    def forward(self, x):  # [B, 3, T, H, W]
        assert x.shape[1] == 3 and x.shape[3:] == (4, 4)
        return None, x.mean(dim=(1, 2, 3, 4))[:, None] * self.scale  # [B, 3]


def test_kinetics_labels():
    labels = kinetics400_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and "playing cricket" in labels


def test_clip_logits_crops_scales_and_weights_passes_by_frames():
    # 5 frames of 6x8, value 255 (-> +1) for the first 2 frames, 0 (-> -1) for the last 3;
    # a 1-pixel border of other values is cropped away by the centre 4x4 crop
    frames = [np.full((6, 8, 3), 255 if i < 2 else 0, np.uint8) for i in range(5)]
    for f in frames:
        f[0, :] = 77
        f[:, 0] = 77
    model = _MeanModel()
    one_pass = clip_logits(model, iter(frames), crop_size=4, max_frames=128)
    torch.testing.assert_close(one_pass, torch.tensor([-0.2, -0.4, -0.6]))  # mean of (+1, +1, -1, -1, -1)
    # passes of 2, 2, 1 frames: (+1)*2, (-1)*2, (-1)*1 weighted by frames -> the same mean
    torch.testing.assert_close(clip_logits(model, iter(frames), crop_size=4, max_frames=2), one_pass)
    with pytest.raises(ConfigError, match="max_frames must be >= 1, got 0"):
        clip_logits(model, iter(frames), crop_size=4, max_frames=0)


def test_classify_rejects_bad_k():
    with pytest.raises(ConfigError, match="top-k must be between 1 and 400, got 0"):
        classify(GIF, k=0)


# ----------------------------------------------------------------------------- real weights

def _deepmind_top(path=DATA / "out_no_imagenet_rgb.txt") -> list[tuple[str, float]]:
    """(label, logit) of DeepMind's printed top classes for their float cricket sample (rgb_scratch), best first."""
    top = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3:
            try:
                top.append((parts[2], float(parts[1])))
            except ValueError:
                continue
    assert len(top) == 20, f"{path}: expected DeepMind's 20 top classes, read {len(top)}"
    return top


@pytest.mark.real
@pytest.mark.slow
def test_cricket_native_size_all_frames(real_weights):
    """All 79 GIF frames at their native 224x224 in one pass, as in DeepMind's sample (no resize)."""
    reference = _deepmind_top()
    model, prov = build_i3d("rgb", None, "cpu")
    assert prov["weights_id"] == "i3d-kinetics400-rgb"
    with av.open(str(GIF)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 79 and frames[0].shape == (224, 224, 3)
    logits = clip_logits(model, frames, crop_size=224)
    labels = kinetics400_labels()
    probs = logits.softmax(0)
    top1 = int(logits.argmax())
    assert labels[top1] == reference[0][0] == "playing cricket" and probs[top1] > 0.95
    # DeepMind's top 20 on their float clip vs ours on the palette GIF: measured 9 shared classes (cricket, the
    # ball sports, skateboarding, breakdancing, ...); the palette moves the rest (robot dancing, pumping fist)
    ours = {labels[i] for i in logits.argsort(descending=True)[:20].tolist()}
    assert len(ours & {label for label, _ in reference}) >= 8
    # The GIF is a 256-colour palette version of DeepMind's float clip; measured here: 17.64 (vs 25.86).
    # Pinned so that a numerics change shows; widen only with a reason.
    assert float(logits[top1]) == pytest.approx(17.64, abs=0.1)


@pytest.mark.real
@pytest.mark.slow
def test_classify_cricket_through_the_extractor_preprocessing(real_weights):
    """decode (25 fps, shorter side 224 -> 256) -> centre crop 224 -> [-1, 1]: a rescaled view."""
    top = classify(GIF, k=5)
    label, logit, prob = top[0]
    assert label == "playing cricket" and prob > 0.95
    assert [t[1] for t in top] == sorted((t[1] for t in top), reverse=True)
    assert 15.0 < logit < _deepmind_top()[0][1] + 1.0  # measured 19.08 with the project's decode
