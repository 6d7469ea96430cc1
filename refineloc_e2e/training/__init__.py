"""Training: one model's fit (eq. 4) and the refinement iterations around it (section 3.2)."""
