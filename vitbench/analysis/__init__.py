"""Seeing inside trained models: attention maps, position embeddings, and what each backbone costs.

* :mod:`~vitbench.analysis.runs`: rebuild a finished run's model and its test images
  (a weights-only load of ``best.ckpt`` by :mod:`vitbench.rundir`, no Lightning);
* :mod:`~vitbench.analysis.attention`: attention rollout (ViT, DeiT, PiT) and Grad-CAM
  (Swin, ResNet), drawn over test images;
* :mod:`~vitbench.analysis.posembed`: the ViT paper's position-embedding similarity grid;
* :mod:`~vitbench.analysis.cost`: parameters, FLOPs, peak memory and training throughput
  per backbone and image size.

The command line is ``vitbench analyze {attention,posembed,cost}`` (:mod:`.cli`).
Heavy imports (torch, timm, matplotlib) happen inside these modules, not here.
"""

__all__ = ["attention", "cost", "posembed", "runs"]
