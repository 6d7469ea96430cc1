"""The feature cache and extraction: one video -> [T, 2048] features; batches of videos through the cache."""
