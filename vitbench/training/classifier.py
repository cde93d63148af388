"""``ClassifierModule``: how every backbone is trained, whatever its architecture.

The module knows only the backbone contract (images -> logits), so it never
branches on the family. Distillation changes the loss, not the loop: see
:class:`~vitbench.training.distillation.DistillationModule`.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vitbench import rundir
from vitbench.backbones import create_backbone, load_plugins
from vitbench.config import BudgetConfig, OptimConfig, TrainerConfig
from vitbench.errors import VitbenchError

MIN_LR_RATIO = 0.01
# Reading the loss on the host waits for the GPU, so a non-finite loss is recorded on the device
# each step and looked at only this often (and before each validation and at each epoch's end).
FINITE_CHECK_EVERY = 50
# The EMA's decay warms up as 1 - (1 + step) ** -EMA_WARMUP_POWER, capped at optim.ema_decay: the
# averaging horizon grows with the run (~30 steps at step 100, ~180 at step 1,000, ~1,000 at 10,000).
# Our runs are short (a few hundred to a few tens of thousands of steps): without the warm-up a decay
# of 0.9998 would still average mostly the random initial weights at the end of a 1,000-step run
# (0.9998 ** 1000 = 0.82). 3/4 is the power timm's docstring advises for runs under ~1M steps.
EMA_WARMUP_POWER = 3 / 4


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``MIN_LR_RATIO``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of one registered backbone.

    Label smoothing (or timm's mixup/cutmix with soft targets), AdamW without
    weight decay on norms, biases and tokens (timm's optimizer factory), linear
    warm-up then cosine, torchmetrics top-1/top-5 accuracy for val and test.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        in_chans: int,
        preset: str = "micro",
        backbone_overrides: dict | None = None,
        plugins: list[str] | None = None,
        lr: float = OptimConfig.lr,
        weight_decay: float = OptimConfig.weight_decay,
        warmup_fraction: float = OptimConfig.warmup_fraction,
        label_smoothing: float = OptimConfig.label_smoothing,
        mixup_alpha: float = OptimConfig.mixup_alpha,
        cutmix_alpha: float = OptimConfig.cutmix_alpha,
        ema_decay: float | None = OptimConfig.ema_decay,
        compile_model: bool = TrainerConfig.compile,
        lr_cycles: int = BudgetConfig.cycles,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the resolved run config goes to W&B instead
        load_plugins(plugins or [])
        self.backbone = create_backbone(backbone, preset, **(backbone_overrides or {}))
        self.model = self.backbone.create(num_classes=num_classes, image_size=image_size, in_chans=in_chans)
        # The EMA copies the plain model here, before configure_model compiles it: never a compiled wrapper.
        # A submodule, so its weights ("ema.module.*") are in every checkpoint, restored on resume and
        # loaded with best.ckpt for the test; frozen, so neither the optimizer nor DDP's reducer sees it.
        self.ema: ModelEmaV3 | None = None
        if ema_decay is not None:
            self.ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
            self.ema.requires_grad_(False)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                               label_smoothing=label_smoothing, num_classes=num_classes)
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top5 = min(5, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self._loss_finite: torch.Tensor | None = None  # on the device: every loss since the last check was finite

    def configure_model(self) -> None:
        # cuDNN's convolutions are fastest in NHWC; the weights' layout is enough to select it.
        if self.backbone.channels_last and self.trainer.strategy.root_device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
            if self.ema is not None:
                self.ema.module.to(memory_format=torch.channels_last)
        if self.hparams.compile_model:
            self.model.compile()  # in place (state_dict keys, so checkpoints, unchanged); lazy: compiles on first call
            if self.ema is not None:
                # Evaluation then runs the EMA, not the model: compiling it replaces the model's eval graph.
                self.ema.module.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation and test measure: the EMA's when optim.ema_decay is set."""
        return self.ema.module if self.ema is not None else self.model

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            # Here, not in on_train_batch_end: callbacks' on_train_batch_end (the stop-on-signal
            # checkpoint) run before the module's, and a checkpoint must hold this step's EMA.
            # Lightning counts the step once this hook returns: this is step global_step + 1.
            step = self.global_step + 1
            self._seed_ema_rounding(step)
            self.ema.update(self.model, step=step)

    def _seed_ema_rounding(self, step: int) -> None:
        """Stochastic rounding of a bfloat16 EMA (precision bf16-true) draws from timm's private generator:
        reseeded by step on the EMA's device, so a resumed run rounds as an uninterrupted one, and every
        DDP rank alike, with no generator state to checkpoint."""
        generator = getattr(self.ema, "_sr_generator", None)
        if generator is None:
            return
        device = next(self.ema.module.parameters()).device
        if generator.device != device:  # created with the model, on the CPU, before Lightning moved it
            generator = self.ema._sr_generator = torch.Generator(device=device)
        generator.manual_seed(step)

    def compute_loss(self, images: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        """The training loss; subclasses wrap it (distillation), the loop stays."""
        return self.criterion(outputs, targets)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        targets = labels
        if self.mixup is not None:
            if len(images) % 2:  # timm's Mixup pairs samples: drop one from an odd tail batch
                images, labels = images[:-1], labels[:-1]
            images, targets = self.mixup(images, labels)
        loss = self.compute_loss(images, self.model(images), targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        finite = torch.isfinite(loss.detach())
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        if batch_idx % FINITE_CHECK_EVERY == FINITE_CHECK_EVERY - 1:
            self._check_loss_finite()
        return loss

    def _check_loss_finite(self) -> None:
        """Stop a diverged run: a NaN or infinite loss never becomes a results.json."""
        if self._loss_finite is None:
            return
        ok = bool(self._loss_finite)
        self._loss_finite = None
        # Every rank decides together (each checks at the same step), so none waits on a stopped one.
        if not self.trainer.strategy.reduce_boolean_decision(ok, all=True):
            raise VitbenchError(
                f"the training loss became NaN or infinite by step {self.global_step} (epoch {self.current_epoch}): "
                f"the run diverged; lower optim.lr (now {self.hparams.lr:g}) or raise optim.warmup_fraction, "
                f"and train into another --out (this run dir is left unfinished, without {rundir.RESULTS})"
            )

    def on_train_epoch_end(self) -> None:
        self._check_loss_finite()

    def on_validation_epoch_start(self) -> None:
        self._check_loss_finite()  # so no checkpoint is chosen as best from diverged weights

    def _evaluate(self, batch, acc: MulticlassAccuracy, acc5: MulticlassAccuracy, prefix: str):
        images, labels = batch
        logits = self.eval_model(images)
        acc.update(logits, labels)
        acc5.update(logits, labels)
        self.log(f"{prefix}_acc", acc, on_epoch=True, prog_bar=True)
        self.log(f"{prefix}_acc5", acc5, on_epoch=True)
        self.log(f"{prefix}_loss", nn.functional.cross_entropy(logits, labels), on_epoch=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_acc, self.val_acc5, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_acc, self.test_acc5, "test")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = create_optimizer_v2(self.model, opt="adamw", lr=hp.lr, weight_decay=hp.weight_decay)
        # budget.cycles: the Trainer's steps hold every cycle a run may take; each one warms up and decays again.
        cycle = max(1, int(self.trainer.estimated_stepping_batches) // hp.lr_cycles)
        warmup = max(1, int(hp.warmup_fraction * cycle))

        def factor(step: int) -> float:
            # Past the end of the last cycle (the rate Lightning logs after the final step) the cosine stays at
            # its floor: only a cycle that another may follow warms up again.
            return warmup_cosine(step - cycle * min(step // cycle, hp.lr_cycles - 1), cycle, warmup)

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}
