"""Run `sft` and SIGKILL the process while it saves the checkpoint of step STEP, before its completeness marker
(callbacks given to sft.train run before ours). Used by test_runs.py: `python tests/kill_during_save.py CONFIG STEP`."""

import os
import signal
import sys

from transformers import TrainerCallback

from instructify import config
from instructify.training import sft


class KillWhileSaving(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    cfg = config.load(sys.argv[1])
    sft.train(cfg, sft.setup(cfg), callbacks=[KillWhileSaving(int(sys.argv[2]))])
