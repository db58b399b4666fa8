"""The diffusion maths (docs/model.md §6–§7): the flow objective (flow.py), the time grid and guidance-interval rules
(grid.py), classifier-free guidance (guidance.py), the solvers behind one ``sample()`` (solvers.py: multistep.py,
dopri5.py), the CUDA-graph sampler, reproducible batch generation, and the diffusers pipeline."""
from .flow import flow_loss, interpolate, logit_normal_t
from .solvers import METHODS, SOLVERS, sample

__all__ = ["METHODS", "SOLVERS", "flow_loss", "interpolate", "logit_normal_t", "sample"]
