"""Evaluation: ActivityNet-protocol temporal-detection mAP."""
