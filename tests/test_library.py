"""Using healthetl as a library: importing it changes nothing about the importing process."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import subprocess_env


def test_importing_healthetl_leaves_the_process_settings_alone() -> None:
    code = (
        "import signal, pyarrow as pa\n"
        "pool, term = pa.default_memory_pool().backend_name, signal.getsignal(signal.SIGTERM)\n"
        "import healthetl.cli, healthetl.pipeline.run, healthetl.sources.readers\n"
        "print(pa.default_memory_pool().backend_name == pool, signal.getsignal(signal.SIGTERM) == term)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
