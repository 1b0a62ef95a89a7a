"""Mask2Former checkpoints by Hugging Face model id (e.g.
``facebook/mask2former-swin-tiny-coco-instance``), through huggingface_hub.

Only what the conversion reads is fetched: config.json and the safetensors weights (the
pickled pytorch_model.bin only when a repository has no safetensors; it is loaded with
torch.load(weights_only=True)). Files already in the hub cache ($HF_HUB_CACHE, default
~/.cache/huggingface/hub) are used without a download, so HF_HUB_OFFLINE=1 works with a
cache filled elsewhere. Offline without the files, the error says what to fetch and where.
"""

from __future__ import annotations

import re
from pathlib import Path

from metaseg_ros.model.convert.common import ConversionError

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
WEIGHT_PATTERNS = (["config.json", "*.safetensors", "*.safetensors.index.json"],
                   ["config.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                    "pytorch_model-*.bin"])


def looks_like_model_id(source: str) -> bool:
    """Whether `source` reads as 'owner/name' and is no local path."""
    return bool(_REPO_ID.fullmatch(source)) and not Path(source).exists()


def download_model(model_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of a hub model (downloaded when needed)."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as error:
        raise ConversionError("downloading a model by id needs huggingface_hub "
                              "(pip install huggingface_hub)") from error
    name = model_id.split("/")[-1]
    try:
        for patterns in WEIGHT_PATTERNS:
            folder = Path(snapshot_download(model_id, revision=revision,
                                            allow_patterns=patterns))
            if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
                return folder
    except LocalEntryNotFoundError as error:
        raise ConversionError(
            f"cannot download {model_id}: offline or the hub is unreachable, and it is not in "
            f"the Hugging Face cache {constants.HF_HUB_CACHE}. On a machine with internet run "
            f"`hf download {model_id} --include config.json '*.safetensors' --local-dir "
            f"{name}`, copy the folder here and run `metaseg-convert {name}/ OUTPUT` (or copy "
            f"that machine's hub cache into {constants.HF_HUB_CACHE})") from error
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ConversionError(f"{model_id}: no such public model on the Hugging Face hub (or "
                              f"it needs a login: `hf auth login`)") from error
    except RevisionNotFoundError as error:
        raise ConversionError(f"{model_id}: no revision {revision!r}") from error
    except HfHubHTTPError as error:
        raise ConversionError(f"cannot download {model_id}: {error}") from error
    raise ConversionError(f"{model_id} has no config.json with safetensors or "
                          f"pytorch_model.bin weights")
