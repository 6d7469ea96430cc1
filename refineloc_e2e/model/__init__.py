"""The RefineLoc head (eqs. 1-3), inference, segment prediction (section 3.1) and pseudo ground truth."""
