"""The device check: the GPU machine run (``gpu_check.sh`` installs the checkout and runs ``gpu_check.py``)."""
