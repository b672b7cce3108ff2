"""First-party transfer strategies, one module per registered strategy.

The modules keep torch imports inside methods, so that ``tlbench ls strategies`` stays fast.
What they share (the training loop, frozen features, the probe's solver, ...) is the library
``tlbench_plugins.machinery``.
"""

import tlbench

from tlbench_plugins.strategies.bitfit import Bitfit
from tlbench_plugins.strategies.full_finetune import FullFinetune
from tlbench_plugins.strategies.knn_probe import KnnProbe
from tlbench_plugins.strategies.l2sp import L2sp
from tlbench_plugins.strategies.linear_probe import LinearProbe
from tlbench_plugins.strategies.lora import Lora
from tlbench_plugins.strategies.lp_ft import LpFt
from tlbench_plugins.strategies.partial_unfreeze import PartialUnfreeze
from tlbench_plugins.strategies.scratch import Scratch

STRATEGIES = (LinearProbe, PartialUnfreeze, FullFinetune, Scratch, LpFt, Bitfit, Lora, KnnProbe, L2sp)


@tlbench.hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
