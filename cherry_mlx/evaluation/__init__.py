"""Evaluation, on top of training and decoding: the wave measurements (W, W̃, R, ROI), gradient
coupling and the shuffled control, SSGT moment rates, MTP head accuracy, the post-training demo,
quantisation reports, and their tables and plots."""
