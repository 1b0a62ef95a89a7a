"""torch.export runner: a saved ExportedProgram (.pt2 artifact) run as a module on its device."""

from __future__ import annotations

from pathlib import Path

import torch

from metaseg_ros.inference.artifacts import ArtifactError, load_program_artifact
from metaseg_ros.inference.runner import check_device
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput, initial_memory


class ExportedProgramRunner:
    """A torch.export program (.pt2 artifact) run as a module on its device."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.device = check_device("exported", device)
        program, description = load_program_artifact(path)
        if description.settings.device != device:
            raise ArtifactError(f"{path} was exported for device "
                                f"'{description.settings.device}', not '{device}'")
        self.path = Path(path)
        self.description = description
        self.config: MetaSegConfig = description.config
        self.module = program.module()

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the program's device and dtype."""
        return initial_memory(self.config, 1, self.device, self.description.settings.dtype)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One step; outputs stay on the device."""
        outputs = self.module(images.to(self.device, torch.float32), *memory)
        return NetworkOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))
