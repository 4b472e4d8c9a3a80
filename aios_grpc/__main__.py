"""``python -m aios_grpc``: the same as the ``aios-grpc`` command."""

import sys

from aios_grpc.cli import main

sys.exit(main())
