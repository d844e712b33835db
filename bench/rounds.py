"""How a timed round of the benchmarks starts, whichever tool it times."""

from __future__ import annotations

import random
import time

from tests.support.cluster import Cluster

# A pod's start as the API shows it moves in steps of a second: the kubelet sees a started
# container at its next relist (every 1 s) and probes it on tickers of the probes' periods
# from the pod's start. Rounds that repeat the same steps keep the same phase against those
# clocks round after round, which made one tool's pods start a second later than the
# other's in every round (bench/README.md). So each timed round, whichever tool, starts
# after a random pause within that second.
_PHASE = random.Random(13)


def fresh_start(c: Cluster) -> None:
    """Before a timed round: no pod terminating (a pod's teardown slows pods started
    meanwhile), then a random part of a second."""
    c.wait_terminations()
    time.sleep(_PHASE.random())
