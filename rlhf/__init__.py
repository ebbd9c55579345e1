"""rlhf: the InstructGPT pipeline (SFT, reward model, PPO) and DPO, runnable on a laptop CPU."""

__version__ = "0.1.0"
