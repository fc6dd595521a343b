"""A simulated NVIDIA NIM: the OpenAI-compatible NIM HTTP API without a GPU or a model.

The operator's tests and local lab need many NIM endpoints that load, fail and
answer on cue; this package provides them, as a library (:class:`Simulator`)
and as the ``nimsim`` command. See :mod:`nimsim.config` for settings and the
image-tag fault conventions, :mod:`nimsim.tokens` for how tokens are counted.
"""

from nimsim.app import make_app
from nimsim.config import Faults, SimConfig, fault_from_image_tag, model_from_image
from nimsim.server import Simulator

__all__ = [
    "Faults",
    "SimConfig",
    "Simulator",
    "fault_from_image_tag",
    "make_app",
    "model_from_image",
]
