"""tlbench: benchmark pretrained backbones × transfer strategies × datasets, honestly.

The public API for plugins is exactly ``__all__``; importing it does not import torch.
"""

from tlbench.api import Backbone, Component, Dataset, FitContext, Images, Network, Score, Split, Strategy
from tlbench.caches import cache_dir, files_digest
from tlbench.errors import ConfigError
from tlbench.hookspecs import hookimpl
from tlbench.network import unreachable
from tlbench.options import NoOptions, option
from tlbench.samples import ConcatenatedSamples
from tlbench.settings import Settings
from tlbench.sink import Report, Sink

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "Component",
    "ConcatenatedSamples",
    "ConfigError",
    "Dataset",
    "FitContext",
    "Images",
    "Network",
    "NoOptions",
    "Report",
    "Score",
    "Settings",
    "Sink",
    "Split",
    "Strategy",
    "__version__",
    "cache_dir",
    "files_digest",
    "hookimpl",
    "option",
    "unreachable",
]
