"""First-party transfer strategies. Class modules keep torch imports inside methods, so that
`tlbench ls strategies` stays fast; the training code lives in `training.py`, `probe.py`,
`boundary.py` and `knn.py`."""

import tlbench

from tlbench_plugins.strategies.bitfit import Bitfit
from tlbench_plugins.strategies.full_finetune import FullFinetune, Scratch
from tlbench_plugins.strategies.knn_probe import KnnProbe
from tlbench_plugins.strategies.l2sp import L2sp
from tlbench_plugins.strategies.linear_probe import LinearProbe
from tlbench_plugins.strategies.lora import Lora
from tlbench_plugins.strategies.lp_ft import LpFt
from tlbench_plugins.strategies.partial_unfreeze import PartialUnfreeze


@tlbench.hookimpl
def register_strategies(register):
    for strategy in (LinearProbe, PartialUnfreeze, FullFinetune, Scratch, LpFt,
                     Bitfit, Lora, KnnProbe, L2sp):
        register(strategy)
