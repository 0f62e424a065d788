"""Old import path of :mod:`effnet.deploy.memory`, kept so code written against earlier READMEs still runs."""

import sys

from effnet.deploy import memory as _module

sys.modules[__name__] = _module
