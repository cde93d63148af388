"""Which W&B mode a command runs in: offline unless the user is logged in.

Compute nodes often cannot reach wandb.ai, so ``mode: auto`` runs online only when
credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry) and otherwise offline, for
``wandb sync`` later. Training, ``vitbench analyze`` and ``vitbench report`` all decide here;
it sits outside :mod:`vitbench.training` so that the report and the analyses, which log to
W&B but train nothing, never import Lightning to ask.
"""

from __future__ import annotations

import netrc
import os
import typing

# The one list of W&B modes: the config's wandb.mode, `analyze --wandb` and `report --wandb` read it
# from here. A Literal, so that the config checks a value against it like any other of its settings.
# (This module imports nothing of vitbench: config.py imports it without a cycle.)
Mode = typing.Literal["offline", "online", "disabled", "auto"]
MODES = tuple(m for m in typing.get_args(Mode) if m != "auto")  # those W&B itself knows (WANDB_MODE's values)
CHOICES = ("auto", *MODES)  # a command line's --wandb: the default first


def logged_in() -> bool:
    """Whether W&B credentials exist for the configured host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """An explicit mode wins; ``auto`` follows ``WANDB_MODE``, else online only with credentials."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in MODES:
        return env
    if env == "dryrun":  # W&B's old name for offline
        return "offline"
    return "online" if logged_in() else "offline"
