"""Measurements, on top of training and decoding: the wave quantities (W, W̃, R, ROI), gradient
coupling and the shuffled control, SSGT moment rates, MTP head accuracy, quantisation's held-out
loss and speed, the verdict rule, the post-training demo, and their tables and plots. Pipelines
that run and report them (``repro``, ``quantize``) are ``cherry_mlx.pipelines``, one layer up."""
