"""DeiT distillation: a loss wrapper around the classifier's criterion.

Follows DeiT's ``losses.py`` (Touvron et al., 2021): the student's class head
learns the labels, its distillation head learns the teacher; the teacher is
frozen, in eval mode, and sees the same augmented batch as the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.config import DistillConfig, check_distillation_head, check_value
from vitbench.training.classifier import ClassifierModule


class DistillationLoss(nn.Module):
    """``(1 - alpha) * base(class_head) + alpha * distill(dist_head, teacher)``.

    ``hard``: cross-entropy against the teacher's argmax. ``soft``: KL divergence
    between temperature-``tau`` softened distributions, scaled by ``tau**2``.
    """

    def __init__(self, base_criterion: nn.Module, teacher: nn.Module, kind: str = DistillConfig.kind,
                 alpha: float = DistillConfig.alpha, tau: float = DistillConfig.tau):
        super().__init__()
        self.base_criterion = base_criterion
        self.teacher = teacher.eval().requires_grad_(False)
        # A public API too: checked by the config's own checks, so bounds and messages are the config's.
        self.kind = check_value(DistillConfig, "kind", kind)
        self.alpha = check_value(DistillConfig, "alpha", alpha)
        self.tau = check_value(DistillConfig, "tau", tau)

    def forward(self, inputs: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, tuple):
            raise RuntimeError("the student returned one head in training: call set_distilled_training(True) first")
        class_logits, dist_logits = outputs
        base = self.base_criterion(class_logits, targets)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.kind == "soft":
            t = self.tau
            distill = F.kl_div(
                F.log_softmax(dist_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                reduction="sum", log_target=True,
            ) * (t * t) / dist_logits.numel()
        else:
            distill = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
        return (1 - self.alpha) * base + self.alpha * distill

    def train(self, mode: bool = True):
        # Lightning puts the whole LightningModule in train mode every epoch; the teacher stays frozen.
        super().train(mode)
        self.teacher.eval()
        return self


class DistillationModule(ClassifierModule):
    """A ClassifierModule whose loss is a :class:`DistillationLoss` (DeiT).

    The student backbone must declare a distillation head. The teacher is a
    registered backbone restored from a checkpoint (a finished run's best); it is
    left out of this module's checkpoints. With ``ema_decay`` the EMA is the student's
    (the parent copies ``self.model`` before the teacher exists); it is used in eval
    mode only, where the student averages its two heads whatever ``set_distilled_training``.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        in_chans: int,
        teacher_backbone: str,
        teacher_checkpoint: str,
        teacher_preset: str = "micro",
        teacher_overrides: dict | None = None,
        distillation: str = DistillConfig.kind,
        alpha: float = DistillConfig.alpha,
        tau: float = DistillConfig.tau,
        **classifier_kwargs,
    ):
        super().__init__(backbone, num_classes, image_size, in_chans, **classifier_kwargs)
        self.save_hyperparameters(logger=False)  # the resolved run config goes to W&B instead
        check_distillation_head(backbone)
        self.model.set_distilled_training(True)
        from vitbench.training.teacher import load_teacher

        teacher = load_teacher(teacher_backbone, teacher_preset, teacher_overrides or {}, teacher_checkpoint,
                               num_classes=num_classes, image_size=image_size, in_chans=in_chans)
        self.distill_loss = DistillationLoss(self.criterion, teacher, distillation, alpha, tau)

    def compute_loss(self, images, outputs, targets):
        return self.distill_loss(images, outputs, targets)

    # The frozen teacher is reloaded from its own run (``teacher_checkpoint``): a student's
    # checkpoints hold only the student, not a copy of another run's weights.
    TEACHER_KEYS = "distill_loss.teacher."

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(self.TEACHER_KEYS)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming and testing load strictly: the teacher's entries are the teacher as loaded now.
        state = checkpoint["state_dict"]
        for key, value in self.distill_loss.teacher.state_dict(prefix=self.TEACHER_KEYS).items():
            state.setdefault(key, value)
