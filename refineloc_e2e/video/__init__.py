"""Video-stage compute on torch tensors (CPU or CUDA): ``tvl1_torch`` is TV-L1 optical flow, batched."""
