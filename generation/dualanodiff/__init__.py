"""DualAnoDiff (dual-interrelated diffusion, CVPR 2025) on diffusers; importing registers the generators.

Modules: ``attention`` (dual-branch processor, SAIM, BCM), ``model`` (the trainable wrapper),
``models`` (SD loading / small offline models), ``base_model`` (offline base training),
``data``, ``training`` (trainer + checkpoints), ``train`` (the ``accelerate launch`` CLI),
``pipeline`` (sampling), ``masks`` (mask extraction), ``generator`` (the registered generators).
Only ``generator`` and ``config`` are imported here; they import torch/diffusers lazily.
"""

from anobench.generation.dualanodiff import generator  # noqa: F401  (registers "dualanodiff", "dualanodiff-bcm")
