"""`bench/run.py --smoke` runs every part of the benchmark end to end and prints the table.

The figures of a smoke run mean nothing (every size is the smallest); what it shows is that no
part has rotted: each one still runs against the code as it is and gives its rows. It takes
about 3 minutes on 2 cores (the serving, memory and frontend parts still write 512x512
logdirs and start four tensorboards, on the Rust data server only, and Chromium).
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A row each part must give (the start of its "measure" cell).
PART_ROWS = {
    "codes": "v2 codes, causal head, 128 tokens (worst share",
    "encode": "v2 codes, causal head, 128 tokens (new / old encoder)",
    "size": "stored bytes/value: BERT-base layer",
    "fit": "fit: time inside the callback",
    "serving": "serve one 512x512 head, step not asked before (rust data server)",
    "long": "capture vs traced forward pass (1 layers x 12 heads, 128 tokens",
    "memory": "peak extra memory of one capture, 32 heads x 1024 tokens",
    "health": "health pass vs forward pass, 1 layers x 12 heads, 4 x 128 tokens",
    "frontend": "tab: draw 512x512 head (median)",
}


# bench/run.py --smoke with pytest made unimportable: the bench's environment has no test tools.
WITHOUT_PYTEST = """
import runpy, sys
sys.modules["pytest"] = None
sys.argv = ["bench/run.py", "--smoke"]
runpy.run_path("bench/run.py", run_name="__main__")
"""


def test_every_bench_part_runs_at_its_smallest_size():
    # Its tensorboards start without TensorFlow (tests/tensorboard_process.py): the smoke
    # run's figures mean nothing, and each start costs 1.5 s of CPU instead of 9.
    result = subprocess.run([sys.executable, "-c", WITHOUT_PYTEST], cwd=REPO,
                            capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, PYTHONPATH=REPO,
                                     TENSORBOARD_WITHOUT_TENSORFLOW="1"))
    assert result.returncode == 0, result.stderr[-4000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| measure | ours | baseline | ratio | target | met? |"
    rows = table[2:]  # after the header and its |---| line
    measures = [line.split(" | ")[0][2:] for line in rows]
    for part, measure in PART_ROWS.items():
        assert any(m.startswith(measure) for m in measures), (part, measures)
        assert "(%s: " % part in result.stdout, part  # the part's own time
    for line in rows:
        cells = line.strip("| ").split(" | ")
        assert len(cells) == 6 and cells[5] in ("yes", "NO", "-"), line
