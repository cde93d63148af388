"""The Hugging Face Hub as a last resort: fail in seconds, not after ~25 s of retries, when it is out of reach."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class HubUnavailable(Exception):
    """Internal: the Hub could not provide the dataset; the message says why in a few words."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    # Behind a proxy a direct connection proves nothing; let `datasets` find out itself.
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_from_hub(repo_id: str):
    """``load_dataset(repo_id)`` as a DatasetDict, or :class:`HubUnavailable`.

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) it may still come from the local Hugging Face cache.
    """
    offline = hub_offline()
    if not offline and not hub_reachable():
        raise HubUnavailable("the Hugging Face Hub is unreachable (set HF_HUB_OFFLINE=1 to use its local cache)")
    from datasets import DatasetDict, load_dataset

    try:
        ds = load_dataset(repo_id)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs the gist only
        if offline:
            raise HubUnavailable("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise HubUnavailable(f"the Hub could not load it ({first[:160]})") from None
    if not isinstance(ds, DatasetDict):
        raise HubUnavailable("the Hub returned a single split, not a dataset with splits")
    return ds
