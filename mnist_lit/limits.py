"""The bounds on memory, time and work that hostile or unlucky input cannot get past, in one place.

docs/troubleshooting.md ("Limits") lists these numbers and says what each one protects. ``serve``'s are here
too, so that ``serve --help`` can show them without importing the web app (:mod:`mnist_lit.serve.app`).
"""

from __future__ import annotations

import os

#: Largest item count an IDX file may announce in its header: 1,000,000 images (784 MB uncompressed),
#: above the largest 28x28 IDX set published (EMNIST ByClass, 697,932 training images). A header over
#: it is refused before anything is inflated (:mod:`mnist_lit.data.idx`).
MAX_IDX_ITEMS = 1_000_000
#: Largest IDX file accepted on disk, compressed or not, bytes: the largest legal uncompressed images
#: file (16 + 1,000,000 x 784 bytes) plus 1 MiB for gzip's overhead on incompressible data.
MAX_IDX_FILE_BYTES = 16 + MAX_IDX_ITEMS * 28 * 28 + 2**20

#: DataLoader worker processes ``--data.num_workers`` may ask for, for each CPU this process may use
#: (:func:`max_num_workers`). Each worker is a process with memory of its own, and as many start for each loader (the
#: training and validation loaders of a fit run together): 40,000 forked until memory ran out. PyTorch's DataLoader
#: warns above one worker per CPU (``DataLoader.check_worker_number_rationality``); four leave room for workers that
#: mostly wait on disk (the picture files of ``predict``).
WORKERS_PER_CPU = 4
#: Largest ``--data.batch_size`` (images, or pictures, in one batch): 2**20 = 1,048,576, more than the 70,000 images of
#: all of MNIST (or Fashion-MNIST), train and test together, so no data set here fills a larger batch. (Past
#: ``sys.maxsize`` PyTorch's batch sampler ended in an ``itertools.islice`` traceback.)
MAX_BATCH_SIZE = 2**20

#: Seconds allowed to connect to a mirror and for each read of its answer (no progress that long:
#: that mirror fails). A mirror that fails this way is not asked again during the same prepare_data.
DOWNLOAD_TIMEOUT = 20.0
#: Seconds one prepare_data may spend downloading, all files and mirrors together; past it the
#: download stops with one error line (``--data.download_deadline``), so that with Python's start a
#: command that cannot download ends within a minute. 40 s is MNIST's 11.6 MB at 290 kB/s (Fashion-MNIST's
#: 30.9 MB at 770 kB/s); a slower network needs a larger value.
DOWNLOAD_DEADLINE = 40.0
#: Bytes read at most from a mirror for a file whose size is not known in advance (the official
#: files' sizes are known: :data:`mnist_lit.data.files.OFFICIAL_SIZES`).
MAX_DOWNLOAD_BYTES = 64 * 2**20

#: ``serve``: largest request body accepted, bytes: 5 MB, far above a drawn 280x280 PNG (~5-15 kB) or a phone
#: JPEG (``--max_request_bytes``).
MAX_REQUEST_BYTES = 5_000_000
#: ``serve``: seconds a request body may go without a byte arriving before the request is answered 408 (nginx's
#: ``client_body_timeout`` idea, shorter: a request receiving its body holds one of the gate's places).
BODY_IDLE_SECONDS = 15.0
#: ``serve``: seconds the server waits for requests in flight after SIGTERM or Ctrl+C before closing them.
GRACEFUL_SHUTDOWN_SECONDS = 5
#: ``serve``: largest picture accepted, width x height pixels (checked from the header before decoding): 25 MP,
#: which a 5 MB compressed file can claim (``--max_image_pixels``). Decoding and reading an RGBA picture
#: takes up to about 13 bytes a pixel at its peak, so ~0.33 GB at 25 MP; :data:`MAX_CONCURRENT_PREDICTIONS`
#: of them run at a time (docs/troubleshooting.md).
MAX_IMAGE_PIXELS = 25_000_000
#: ``serve``: pictures read at once (each in a worker thread; an RGBA picture takes up to about 13 bytes a
#: pixel while it is decoded, ~0.33 GB at serve's 25 MP limit); further requests wait for a turn
#: (``--max_concurrent``). The crops are then scored in shared batches, outside the turn.
MAX_CONCURRENT_PREDICTIONS = 2
#: ``serve``: requests that may wait for a turn; any more are answered 503 at once, before their
#: body is read (``--max_waiting``). With the 5 MB body limit, waiting requests hold at most 40 MB.
MAX_WAITING_PREDICTIONS = 8

#: Largest configuration file ``--config`` reads, bytes (the project's configs are under 3 kB).
MAX_CONFIG_BYTES = 1_000_000
#: Most YAML nodes a configuration may expand to, aliases counted as often as they are used: a
#: "billion laughs" file of 1.3 kB expands to ~10^9 nodes and is refused before it is expanded.
MAX_CONFIG_NODES = 100_000
#: Deepest nesting of lists and mappings in a configuration (the project's configs nest 5 deep).
MAX_CONFIG_DEPTH = 64

#: ``predict --data.predict_path``: most paths a glob may list (the same file reached through symbolic links counts
#: each time), so that a pattern over a tree whose symbolic links loop back ends with one error line instead of
#: walking for ever; a folder (no pattern) has no such limit.
MAX_LISTED_PATHS = 100_000


def usable_cpus() -> int:
    """The CPUs this process may run on: ``os.sched_getaffinity`` (a container's or ``taskset``'s share) where the
    system tells it, else ``os.cpu_count()``, as PyTorch's DataLoader counts them; at least 1."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS or Windows
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def max_num_workers() -> int:
    """The most DataLoader worker processes ``--data.num_workers`` may ask for here: :data:`WORKERS_PER_CPU` for each
    of the :func:`usable_cpus`."""
    return WORKERS_PER_CPU * usable_cpus()
