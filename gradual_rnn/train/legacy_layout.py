"""Where gradual_rnn 0.1.0 kept its checkpoints (TensorFlow-free, so commands can check a run folder
before TensorFlow loads): `checkpoints/ckpt-NNNNNN/arrays.npz` and `checkpoints/best/arrays.npz`."""
import glob
import os
from typing import List


def legacy_folders(save_path: str) -> List[str]:
    """Checkpoint folders of `save_path` in the 0.1.0 format, sorted."""
    directory = os.path.join(save_path, "checkpoints")
    return sorted(os.path.dirname(path) for path in glob.glob(os.path.join(glob.escape(directory), "*", "arrays.npz")))


def nothing_to_upgrade(save_path: str) -> str:
    """The message when `save_path` holds no 0.1.0 checkpoint."""
    return f"{save_path} holds no checkpoint in the 0.1.0 format; nothing to do."
