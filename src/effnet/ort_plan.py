"""Old import path of :mod:`effnet.deploy.ort_plan`, kept so code written against earlier READMEs still runs."""

import sys

from effnet.deploy import ort_plan as _module

sys.modules[__name__] = _module
