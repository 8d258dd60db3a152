"""Shared RL training code (Router-R1, R2-Reasoner): policy loading (``policy``), settings (``config``), loss masks
(``masking``), a supervised warm start (``sft``), GRPO through TRL with multi-turn rollouts (``grpo``) and training
curves (``curves``). Modules import torch/transformers/trl only inside functions."""
