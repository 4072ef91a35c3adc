"""Plain helpers the tests import (constants, file writers, booby traps); fixtures live in the conftest.py files.

``tests/`` is on ``sys.path`` through ``pythonpath`` in pyproject's ``[tool.pytest.ini_options]``, so any test,
in ``tests/`` or ``tests/e2e/``, imports these as ``from support.<module> import ...``.
"""
