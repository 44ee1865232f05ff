"""What the commands print: their own lines, not TensorFlow's start-up chatter.

`python -m alexnet_tf.<command>` calls `quiet()` before TensorFlow loads (`cli.program`
in each command's `__main__` block; a command module imports TensorFlow only inside
its `main`); importing the library starts nothing. TensorFlow and the libraries under
it write to the process's standard error from C++: the CPU-feature and CUDA lines at
import, and libjpeg's own messages ("Premature end of JPEG file", "Improper call to
JPEG library in state 201") for each broken image, which the commands already report in
one summary line. `quiet`
passes native standard error through a small filter process that drops those lines and
forwards every other one; Python's own `sys.stderr` bypasses it. The filter is a
separate process so that a line written just before a crash still reaches the terminal.

`ALEXNET_TF_VERBOSE=1` leaves everything as TensorFlow prints it.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

VERBOSE_ENV = "ALEXNET_TF_VERBOSE"

# Lines dropped from native standard error: TensorFlow's own log lines below ERROR
# (glog format "I0101 12:00:00.000000  1234 file.cc:12] ..."), the errors of its
# start-up on a machine without a GPU and of its image decoders (reported by the
# commands themselves), absl's preamble, and libjpeg's messages.
NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    r"|^E\d{4} [\d:.]+ +\d+ (cuda_\w+|cuda_diagnostics|jpeg_mem|jpeg_handle|png_io|gif_io|decode_image_op)\.cc:\d+\]"
    r"|^To enable the following instructions: "
    r"|^(Corrupt JPEG data|Premature end of JPEG|Improper call to JPEG library|Input file read error"
    r"|Not a JPEG file|Invalid JPEG file structure|Unsupported JPEG process|Bogus |Huffman table"
    r"|Quantization table|Unsupported marker|Warning: unknown JFIF|Warning: thumbnail image|JPEG datastream"
    r"|Empty JPEG image|Wrong JPEG library version|Invalid component ID|Invalid crop request|Sampling factors"
    r"|Backing store not supported|Application transferred too|libpng (warning|error))"
)

_FILTER = f"""
import re, sys
noise = re.compile({NOISE!r}.encode())
out = sys.stdout.buffer
for line in iter(sys.stdin.buffer.readline, b""):
    if not noise.match(line):
        out.write(line)
        out.flush()
"""

_installed = False


def quiet() -> None:
    """Filters native standard error as the module docstring says (once per process;
    nothing with ALEXNET_TF_VERBOSE set, or where standard error cannot be replaced)."""
    global _installed
    if _installed or os.environ.get(VERBOSE_ENV):
        return
    _installed = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines are never ours
    for name in ("tensorflow", "absl"):  # their Python warnings (deprecations, AutoGraph)
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read, write = os.pipe()
        # Its own session: Ctrl-C and SIGTERM reach the command, not the filter, which
        # ends when the last writer (this process and its children) is gone.
        subprocess.Popen(
            [sys.executable, "-c", _FILTER], stdin=read, stdout=original, stderr=original, start_new_session=True
        )
    except (OSError, ValueError):
        return
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    # Python's own messages (errors, tracebacks, warnings) go straight to the terminal.
    sys.stderr = io.TextIOWrapper(
        io.FileIO(original, "w", closefd=True),
        encoding=sys.stderr.encoding,
        errors="backslashreplace",
        line_buffering=True,
    )
