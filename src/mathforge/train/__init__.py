"""Student training: supervised fine-tuning (LoRA, QLoRA, full) of a model on exported chat data."""

from mathforge.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str):
    if name == "train":  # heavy (torch, trl): imported on first use
        from mathforge.train.sft import train

        return train
    raise AttributeError(name)
