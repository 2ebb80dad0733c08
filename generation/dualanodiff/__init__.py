"""DualAnoDiff (dual-interrelated diffusion, CVPR 2025) on diffusers; importing registers the generators.

Modules: ``attention`` (the dual-branch attention processor: per-branch LoRA, SAIM, BCM),
``dual_unet`` (the dual-branch UNet and LoRA text encoder classes, the noise prediction, the
trainable wrapper), ``components`` (the frozen base: loading SD, building the small offline models,
sampling schedulers), ``offline_base`` (training and caching the offline base), ``data`` (few-shot
pairs), ``trainer`` (the dual fine-tune loop and its checkpoints), ``train`` (the ``accelerate launch``
entry point), ``pipeline`` (the diffusers sampling pipeline), ``masks`` and ``u2net`` (mask
extraction), ``config``, ``generator`` (the registered generators), ``convert`` (the released
checkpoints).
Only ``generator`` and ``config`` are imported here; they import torch/diffusers lazily.
"""

from anobench.generation.dualanodiff import generator  # noqa: F401  (registers "dualanodiff", "dualanodiff-bcm")
