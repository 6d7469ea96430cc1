"""Video in: decoding to a fixed frame rate, snippet arithmetic, TV-L1 optical flow."""
