"""Phase 3: Mixture of Efficient Experts (MoEE) and SGT distillation.

``gate`` (Eq. 10 routing, Switch load balancing, routing report), ``moee`` (the fused model
classes, model- and layer-level routing), ``assemble`` (experts -> fused model), ``objective``
(SGT + balance + MTP loss), ``flops`` (active parameters vs FLOPs actually spent), ``run``
(``cherry-mlx fuse`` and its ablation ladder), ``distill`` (Eq. 11 and ``cherry-mlx distill``).
"""
