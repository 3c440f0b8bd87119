import os
import sys

import torch

# Two-core machines: one thread per test process avoids oversubscription (it made a model 6x slower).
torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts an engine (JVM, ALFWorld), a server or a pipeline; "
                                       "`-m \"not slow\"` runs the unit tests alone")
