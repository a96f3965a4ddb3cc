"""One worker of ``dlcli tune --jobs N`` (see :func:`dlcli.tune.worker_main`)."""

import sys

from dlcli.tune import worker_main

sys.exit(worker_main(sys.argv[1:]))
